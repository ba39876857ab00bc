"""scikit-learn's bundled digits: the offline stand-in for CIFAR-10 (cached split) and, written as an
ImageFolder tree, for ImageNet-style data."""

import os
import zipfile
from pathlib import Path

import numpy as np

from resnet_repro.files import write_with


def digits_cache(test_fraction, seed):
    """Where the digits split is kept: the user's cache directory ($XDG_CACHE_HOME, else ~/.cache), one
    file per scikit-learn version and split."""
    from importlib.metadata import version

    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "resnet-repro"
    return root / f"digits-sklearn{version('scikit-learn')}-test{test_fraction}-seed{seed}.npz"


def load_digits_arrays(test_fraction=0.25, seed=0):
    """scikit-learn's bundled 8x8 digits (offline) as uint8 3-channel images, stratified split. The split
    is kept in a cache file (digits_cache): importing scikit-learn took about a second of every demo job
    that reads the digits, a training, an evaluation or a layer-response job."""
    classes = [str(c) for c in range(10)]
    cache = digits_cache(test_fraction, seed)
    try:
        with np.load(cache) as z:
            return z["xtr"], z["ytr"], z["xte"], z["yte"], classes
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # none yet, or damaged: made anew
        pass
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # values are 0..16
    images = np.repeat(images[:, None], 3, axis=1)
    xtr, xte, ytr, yte = train_test_split(
        images, d.target, test_size=test_fraction, random_state=seed, stratify=d.target
    )
    try:  # atomic: jobs that start together each write a whole file, the last one stays
        write_with(cache, lambda f: np.savez(f, xtr=xtr, ytr=ytr, xte=xte, yte=yte))
    except OSError:  # no writable cache directory: made anew each time
        pass
    return xtr, ytr, xte, yte, classes


def make_digits_imagefolder(out, size=32, fmt="png"):
    """Write the digits data set as an ImageFolder tree (train/ and val/ class folders), so the
    real ImageFolder, 10-crop and multi-scale code can run offline."""
    from PIL import Image

    out = Path(out)
    xtr, ytr, xte, yte, classes = load_digits_arrays()
    for split, xs, ys in (("train", xtr, ytr), ("val", xte, yte)):
        for c in classes:
            (out / split / c).mkdir(parents=True, exist_ok=True)
        for i, (x, y) in enumerate(zip(xs, ys)):
            img = Image.fromarray(x.transpose(1, 2, 0)).resize((size, size), Image.BILINEAR)
            img.save(out / split / classes[y] / f"{i:05d}.{fmt}")
    return out
