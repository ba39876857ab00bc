"""Small images held in memory as uint8 tensors on the training device (cifar10, digits, a folder of small
images), their held-out split, mean and the paper's batched augmentation (pad 4, random crop, flip)."""

import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_repro.data.digits import load_digits_arrays
from resnet_repro.errors import ReproError

SMALL_KINDS = ("cifar10", "digits", "imagefolder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class TensorData:
    """A small-image data set in memory: uint8 images (N, 3, H, W) and int64 labels."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list
    test_split: str  # "test", or "val" when a validation split was carved out of the training set

    def to(self, device):
        return TensorData(
            *(t.to(device) for t in (self.train_x, self.train_y, self.test_x, self.test_y)),
            self.classes,
            self.test_split,
        )


def _cifar10_arrays(root, download):
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    root = Path(root)
    archive = root / CIFAR10.filename
    probe = CIFAR10.__new__(CIFAR10)
    probe.root = str(root)
    if not probe._check_integrity() and archive.exists() and not download:
        if not check_integrity(str(archive), CIFAR10.tgz_md5):
            raise ReproError(f"{archive} is corrupt (MD5 mismatch): download cifar-10-python.tar.gz again")
        with tarfile.open(archive) as tar:  # the user put the archive there: unpack it once
            tar.extractall(root, filter="data")
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as e:
        raise ReproError(
            f"CIFAR-10 not found or corrupt under {root}: put cifar-10-python.tar.gz "
            f"in {root}/ (or set download: true where the network allows) [{e}]"
        ) from None
    except OSError as e:  # download attempted but no network
        raise ReproError(
            f"CIFAR-10 could not be downloaded to {root} ({e.__class__.__name__}: {e}); "
            f"put cifar-10-python.tar.gz in {root}/"
        ) from None
    to_nchw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))
    return (
        to_nchw(train.data),
        np.array(train.targets),
        to_nchw(test.data),
        np.array(test.targets),
        list(train.classes),
    )


def _find_classes(split_dir):
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not classes:
        raise ReproError(f"no class folders in {split_dir}: expected {split_dir}/<class>/<image files>")
    return classes


def _imagefolder_arrays(root, image_size):
    from PIL import Image

    root = Path(root)
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise ReproError(
                f"image folder {root} has no {split}/ directory: expected {root}/train/<class>/... and {root}/val/<class>/..."
            )
    classes = _find_classes(root / "train")
    out = []
    for split in ("train", "val"):
        xs, ys = [], []
        for label, c in enumerate(classes):
            folder = root / split / c
            for f in sorted(folder.iterdir()) if folder.is_dir() else []:
                if f.suffix.lower() not in IMAGE_EXTENSIONS:
                    continue
                img = Image.open(f).convert("RGB")
                if image_size:
                    img = img.resize((image_size, image_size), Image.BILINEAR)
                xs.append(np.asarray(img).transpose(2, 0, 1))
                ys.append(label)
        if not xs:
            raise ReproError(f"no images under {root / split}")
        if len({x.shape for x in xs}) > 1:
            raise ReproError(f"images under {root / split} differ in size: set image_size to resize them")
        out += [np.stack(xs), np.array(ys)]
    return (*out, classes)


def load_small(kind, root=None, download=False, image_size=None, val_split=0, split_seed=0):
    """Load a small-image data set into memory. val_split > 0 holds out that many training images
    (a fixed, seeded choice) as the evaluation split, as the paper's 45k/5k split does."""
    if kind == "digits":
        xtr, ytr, xte, yte, classes = load_digits_arrays()
    elif kind == "cifar10":
        xtr, ytr, xte, yte, classes = _cifar10_arrays(root or "data/cifar10", download)
    elif kind == "imagefolder":
        if not root:
            raise ReproError("dataset kind imagefolder needs a root")
        xtr, ytr, xte, yte, classes = _imagefolder_arrays(root, image_size)
    else:
        raise ReproError(f"unknown small-image dataset kind {kind!r}: choose one of {', '.join(SMALL_KINDS)}")
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (xtr, ytr, xte, yte)]
    xtr, ytr, xte, yte = tensors[0], tensors[1].long(), tensors[2], tensors[3].long()
    if image_size and xtr.shape[-1] != image_size:
        resize = lambda x: (
            F.interpolate(
                x.float(), size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
            )
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
        xtr, xte = resize(xtr), resize(xte)
    split = "test"
    if val_split:
        if not 0 < val_split < len(xtr):
            raise ReproError(f"val_split={val_split} must be between 1 and the training set size {len(xtr)} - 1")
        perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(split_seed))
        val, train = perm[:val_split], perm[val_split:]
        xte, yte, xtr, ytr = xtr[val], ytr[val], xtr[train], ytr[train]
        split = "val"
    return TensorData(xtr.contiguous(), ytr, xte.contiguous(), yte, classes, split)


def small_data(d):
    """load_small for a training spec's `data` section."""
    return load_small(
        d["kind"],
        d.get("root"),
        d.get("download", False),
        d.get("image_size"),
        d.get("val_split", 0),
        d.get("split_seed", 0),
    )


def held_out_indices(n_total, n, seed, what="schedule.holdout"):
    """(kept, held): a seeded choice of n of n_total training images, and the rest, both sorted."""
    if not 0 < n < n_total:
        raise ReproError(f"{what}={n} must be between 1 and the training set size {n_total} - 1")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return perm[n:].sort().values, perm[:n].sort().values


def hold_out_small(td, n, seed):
    """(td without the held-out images, (held x, held y)): the slice the plateau rule decides on."""
    kept, held = held_out_indices(len(td.train_x), n, seed)
    rest = TensorData(td.train_x[kept], td.train_y[kept], td.test_x, td.test_y, td.classes, td.test_split)
    return rest, (td.train_x[held], td.train_y[held])


def pixel_mean(images_uint8, batch=4096):
    """Per-pixel mean (3, H, W) in [0, 1] units over a uint8 image tensor."""
    total = torch.zeros(images_uint8.shape[1:], dtype=torch.float64)
    for i in range(0, len(images_uint8), batch):
        total += images_uint8[i : i + batch].to("cpu", torch.float64).sum(0)
    return (total / len(images_uint8) / 255.0).float()


def normalize(x_uint8, mean):
    """uint8 (N, 3, H, W) -> float, [0, 1] scale, minus the mean: a per-pixel mean (3, H, W) (resized
    if the input size differs), or a per-channel one (3, 1, 1), subtracted at every position (what
    fully-convolutional testing of whole images uses: see channel_mean)."""
    x = x_uint8.float().div_(255.0)
    if mean.shape[-2:] != (1, 1) and mean.shape[-2:] != x.shape[-2:]:
        mean = F.interpolate(mean[None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0]
    return x.sub_(mean.to(x.device))


def channel_mean(mean):
    """The per-channel mean (3, 1, 1) of a per-pixel mean image (3, H, W): for whole images of any
    size, where the crop-sized mean image has no pixel-to-pixel meaning (stretching it would subtract
    a spatial pattern the network never saw in training)."""
    return mean.mean((-2, -1), keepdim=True)


def pad_crop_flip(x, pad, generator, flip=True):
    """The CIFAR augmentation on a whole batch: zero-pad by `pad`, take a random crop of the
    original size, and flip half of the images horizontally. x is (N, C, H, W), already normalised,
    so the zero padding is the mean colour (as in the usual Torch/Caffe pipelines)."""
    n, c, h, w = x.shape
    dev = x.device
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), device=dev, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # n,1,h,1
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # n,1,1,w
        idx = torch.arange(n, device=dev)[:, None, None, None]
        chan = torch.arange(c, device=dev)[None, :, None, None]
        x = padded[idx, chan, rows, cols]
    if flip:
        mask = torch.rand(n, device=dev, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x
