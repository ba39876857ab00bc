"""Tests for resnet_repro.data (small, stream, decode, digits): in-memory small-image data sets (digits, a fake CIFAR-10 in the real
on-disk format, image folders), the batch augmentations, and the streamed ImageNet-style path."""

import hashlib
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_repro.data import decode, stream
from resnet_repro.data import digits as data_digits
from resnet_repro.data import small as data_small
from resnet_repro.errors import ReproError

DIGIT_CLASSES = [str(c) for c in range(10)]


# ---------------------------------------------------------------- shared fixtures


@pytest.fixture(scope="module")
def digits():
    return data_small.load_small("digits")


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory):
    """The digits data set written as train/ and val/ class folders of 16x16 PNGs."""
    return data_digits.make_digits_imagefolder(tmp_path_factory.mktemp("digits_if"), size=16)


def _write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _rand_image(rng, h, w):
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _multiset(x, y):
    """Sorted list of (label, image bytes): equal for two (x, y) sets iff they hold the same pairs."""
    return sorted((int(l), bytes(img.numpy().tobytes())) for img, l in zip(x, y))


# ---------------------------------------------------------------- digits


def test_digits_shapes_labels_and_values(digits):
    assert digits.train_x.shape == (1347, 3, 8, 8)
    assert digits.test_x.shape == (450, 3, 8, 8)
    assert digits.train_x.dtype == torch.uint8 and digits.test_x.dtype == torch.uint8
    assert digits.train_y.dtype == torch.int64 and digits.test_y.dtype == torch.int64
    assert digits.train_y.shape == (1347,) and digits.test_y.shape == (450,)
    for y in (digits.train_y, digits.test_y):
        assert y.min() == 0 and y.max() == 9
        assert set(y.tolist()) == set(range(10))
    assert digits.classes == DIGIT_CLASSES
    assert digits.test_split == "test"
    # grey images repeated over 3 channels, scaled from 0..16 to the full 0..255 range
    assert torch.equal(digits.train_x[:, 0], digits.train_x[:, 1])
    assert torch.equal(digits.train_x[:, 0], digits.train_x[:, 2])
    assert digits.train_x.min() == 0 and digits.train_x.max() == 255
    # stratified split: class proportions agree between train and test
    ptr = torch.bincount(digits.train_y, minlength=10).double() / len(digits.train_y)
    pte = torch.bincount(digits.test_y, minlength=10).double() / len(digits.test_y)
    assert (ptr - pte).abs().max() < 0.01


def test_digits_split_is_deterministic_and_disjoint_from_sklearn(digits):
    again = data_small.load_small("digits")
    for a, b in (
        (digits.train_x, again.train_x),
        (digits.train_y, again.train_y),
        (digits.test_x, again.test_x),
        (digits.test_y, again.test_y),
    ):
        assert torch.equal(a, b)
    # together the two splits are exactly the 1797 sklearn digits
    from sklearn.datasets import load_digits

    d = load_digits()
    full = torch.from_numpy(np.round(d.images * (255.0 / 16.0)).astype(np.uint8))[:, None].expand(-1, 3, -1, -1)
    both_x = torch.cat([digits.train_x, digits.test_x])
    both_y = torch.cat([digits.train_y, digits.test_y])
    assert _multiset(both_x, both_y) == _multiset(full, torch.from_numpy(d.target))


def test_digits_cache_gives_sklearns_split_and_is_remade_when_damaged(tmp_path, monkeypatch):
    """The split kept in the cache is the one scikit-learn makes; a damaged cache file is made anew;
    once it exists, reading the digits imports no scikit-learn."""
    import subprocess
    import sys

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cache = data_digits.digits_cache(0.25, 0)
    assert cache.parent == tmp_path / "resnet-repro"
    fresh = data_digits.load_digits_arrays()  # no cache yet: scikit-learn's split, then kept
    assert cache.is_file()
    for a, b in zip(fresh[:4], data_digits.load_digits_arrays()[:4]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    cache.write_bytes(cache.read_bytes()[:100])  # cut short
    for a, b in zip(fresh[:4], data_digits.load_digits_arrays()[:4]):
        assert np.array_equal(a, b)
    code = (
        "import sys; from resnet_repro.data import digits; digits.load_digits_arrays(); print('sklearn' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr[-2000:]
    assert data_digits.digits_cache(0.2, 0) != cache  # another split, another file


def test_tensordata_to_keeps_everything(digits):
    moved = digits.to("cpu")
    assert torch.equal(moved.train_x, digits.train_x) and torch.equal(moved.test_y, digits.test_y)
    assert moved.classes == digits.classes and moved.test_split == digits.test_split


def test_digits_image_size_resizes(digits):
    big = data_small.load_small("digits", image_size=32)
    assert big.train_x.shape == (1347, 3, 32, 32) and big.test_x.shape == (450, 3, 32, 32)
    assert big.train_x.dtype == torch.uint8
    assert torch.equal(big.train_y, digits.train_y) and torch.equal(big.test_y, digits.test_y)
    # a smooth upsampling of the same images: the mean intensity of every image is preserved
    for small_x, big_x in ((digits.train_x, big.train_x), (digits.test_x, big.test_x)):
        diff = (big_x.float().mean((1, 2, 3)) - small_x.float().mean((1, 2, 3))).abs()
        assert diff.max() < 0.5
    # and it is the bilinear resize, rounded
    ref = (
        F.interpolate(digits.test_x.float(), size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
    )
    assert torch.equal(big.test_x, ref)
    # image_size equal to the native size changes nothing
    same = data_small.load_small("digits", image_size=8)
    assert torch.equal(same.train_x, digits.train_x)


def test_digits_val_split_carves_validation_out_of_train(digits):
    held = data_small.load_small("digits", val_split=300, split_seed=3)
    assert held.test_split == "val"
    assert held.test_x.shape == (300, 3, 8, 8) and held.test_y.shape == (300,)
    assert held.train_x.shape == (1347 - 300, 3, 8, 8) and held.train_y.shape == (1047,)
    assert held.train_x.is_contiguous() and held.test_x.is_contiguous()
    # train + val is exactly the original training split (a partition), and the test split is unused
    assert _multiset(torch.cat([held.train_x, held.test_x]), torch.cat([held.train_y, held.test_y])) == _multiset(
        digits.train_x, digits.train_y
    )
    assert not torch.equal(held.test_x, digits.test_x[:300])
    # labels stay attached to their images
    lookup = {}
    for img, l in zip(digits.train_x, digits.train_y):
        lookup.setdefault(img.numpy().tobytes(), set()).add(int(l))
    assert all(int(l) in lookup[img.numpy().tobytes()] for img, l in zip(held.test_x, held.test_y))
    # same seed -> same split; another seed -> another split
    again = data_small.load_small("digits", val_split=300, split_seed=3)
    assert torch.equal(again.test_x, held.test_x) and torch.equal(again.train_y, held.train_y)
    other = data_small.load_small("digits", val_split=300, split_seed=4)
    assert not torch.equal(other.test_x, held.test_x)
    # works together with resizing
    both = data_small.load_small("digits", val_split=300, split_seed=3, image_size=16)
    assert both.test_x.shape == (300, 3, 16, 16) and torch.equal(both.test_y, held.test_y)


@pytest.mark.parametrize("bad", [-1, 1347, 5000])
def test_digits_bad_val_split_raises(bad):
    with pytest.raises(ReproError, match="val_split"):
        data_small.load_small("digits", val_split=bad)


def test_unknown_small_kind_and_imagefolder_without_root():
    with pytest.raises(ReproError, match="unknown small-image dataset kind"):
        data_small.load_small("mnist")
    with pytest.raises(ReproError, match="needs a root"):
        data_small.load_small("imagefolder")


# ---------------------------------------------------------------- pad_crop_flip


def _all_augmentations(x, pad):
    """Every (dy, dx, flipped) crop of the zero-padded image x (C, H, W)."""
    c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            out[(dy - pad, dx - pad, False)] = crop
            out[(dy - pad, dx - pad, True)] = crop.flip(2)
    return out


def test_pad_crop_flip_shape_and_identity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(7, 3, 12, 10, generator=g)
    out = data_small.pad_crop_flip(x, 4, torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(data_small.pad_crop_flip(x, 0, torch.Generator().manual_seed(1), flip=False), x)


def test_pad_crop_flip_outputs_are_padded_crops_brute_force():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 3, 16, 16, generator=g) + 0.5  # no zeros inside the images
    out = data_small.pad_crop_flip(x, 4, torch.Generator().manual_seed(5))
    found = []
    for i in range(len(x)):
        matches = [k for k, v in _all_augmentations(x[i], 4).items() if torch.equal(v, out[i])]
        assert len(matches) == 1, f"image {i}: output is not a crop of the zero-padded input"
        found.append(matches[0])
    assert len(set(found)) > 3  # the shifts really are random
    # without flips, no output is a (non-trivial) flip
    out = data_small.pad_crop_flip(x, 4, torch.Generator().manual_seed(6), flip=False)
    for i in range(len(x)):
        matches = [k for k, v in _all_augmentations(x[i], 4).items() if torch.equal(v, out[i])]
        assert len(matches) == 1 and matches[0][2] is False


def _marker_batch(n, h, w):
    """Images whose channel 0 holds row+1, channel 1 col+1 and channel 2 ones, so the shift and flip
    of any crop can be read off its centre pixels."""
    rows = torch.arange(1, h + 1, dtype=torch.float32)[:, None].expand(h, w)
    cols = torch.arange(1, w + 1, dtype=torch.float32)[None, :].expand(h, w)
    img = torch.stack([rows, cols, torch.ones(h, w)])
    return img[None].repeat(n, 1, 1, 1)


def _read_shift_flip(out):
    n, _, h, w = out.shape
    i, j = h // 2, w // 2
    flipped = out[:, 1, i, j + 1] < out[:, 1, i, j]
    sy = out[:, 0, i, j] - 1 - i
    col = torch.where(flipped, torch.tensor(float(w - 1 - j)), torch.tensor(float(j)))
    sx = out[:, 1, i, j] - 1 - col
    return sy.long(), sx.long(), flipped


def test_pad_crop_flip_shift_and_flip_distribution():
    n, pad = 4000, 4
    x = _marker_batch(n, 32, 32)
    out = data_small.pad_crop_flip(x, pad, torch.Generator().manual_seed(0))
    sy, sx, flipped = _read_shift_flip(out)
    # the readout is consistent: recomputing each crop from its read-off parameters reproduces it
    padded = F.pad(x[:50], (pad,) * 4)
    for k in range(50):
        crop = padded[k, :, pad + sy[k] : pad + sy[k] + 32, pad + sx[k] : pad + sx[k] + 32]
        assert torch.equal(crop.flip(2) if flipped[k] else crop, out[k])
    expected = n / 9  # 444.4, binomial sd ~ 20
    for s in (sy, sx):
        assert s.min() == -pad and s.max() == pad
        counts = torch.bincount(s + pad, minlength=9)
        assert len(counts) == 9
        assert ((counts - expected).abs() < 100).all(), counts
    # every one of the 81 joint shifts occurs (vertical and horizontal are drawn independently)
    assert len(set(zip(sy.tolist(), sx.tolist()))) == 81
    assert abs(flipped.float().mean().item() - 0.5) < 0.04
    # the flip is independent of the shift
    assert abs(flipped[sx > 0].float().mean().item() - flipped[sx < 0].float().mean().item()) < 0.08
    # flip=False never flips, but still shifts
    sy2, sx2, flipped2 = _read_shift_flip(
        data_small.pad_crop_flip(x[:500], pad, torch.Generator().manual_seed(1), flip=False)
    )
    assert not flipped2.any() and len(set(sx2.tolist())) == 9
    # pad=0 with flips only flips
    sy3, sx3, flipped3 = _read_shift_flip(data_small.pad_crop_flip(x[:500], 0, torch.Generator().manual_seed(2)))
    assert (sy3 == 0).all() and (sx3 == 0).all() and 0.4 < flipped3.float().mean() < 0.6


def test_pad_crop_flip_seeded():
    x = torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = data_small.pad_crop_flip(x, 4, torch.Generator().manual_seed(7))
    b = data_small.pad_crop_flip(x, 4, torch.Generator().manual_seed(7))
    c = data_small.pad_crop_flip(x, 4, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # the generator advances: two calls on one generator differ
    g = torch.Generator().manual_seed(7)
    assert not torch.equal(data_small.pad_crop_flip(x, 4, g), data_small.pad_crop_flip(x, 4, g))
    # the input is not modified
    assert torch.equal(x, torch.randn(64, 3, 8, 8, generator=torch.Generator().manual_seed(0)))


# ---------------------------------------------------------------- normalize / pixel_mean


def test_pixel_mean_and_normalize(digits):
    x = digits.train_x
    mean = data_small.pixel_mean(x, batch=100)  # 1347 is not a multiple of the batch
    assert mean.shape == (3, 8, 8) and mean.dtype == torch.float32
    assert torch.allclose(mean, x.double().mean(0).float() / 255, atol=1e-6)
    assert torch.allclose(mean, data_small.pixel_mean(x), atol=1e-7)
    assert 0 <= mean.min() and mean.max() <= 1
    z = data_small.normalize(x, mean)
    assert z.dtype == torch.float32 and z.shape == x.shape
    assert z.mean(0).abs().max() < 1e-5  # ~0 at every pixel
    assert torch.allclose(z, x.float() / 255 - mean, atol=1e-6)
    assert x.dtype == torch.uint8  # input untouched
    # the test set is normalised with the training mean, so its mean is not exactly zero
    assert data_small.normalize(digits.test_x, mean).mean(0).abs().max() > 1e-4


def test_normalize_resizes_mean_for_other_input_sizes():
    x = torch.randint(0, 256, (4, 3, 16, 12), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    const = torch.tensor([0.2, 0.5, 0.7])[:, None, None].expand(3, 8, 8).contiguous()
    z = data_small.normalize(x, const)
    assert z.shape == (4, 3, 16, 12)
    assert torch.allclose(z, x.float() / 255 - torch.tensor([0.2, 0.5, 0.7])[:, None, None], atol=1e-6)
    # a non-constant mean is bilinearly resized to the input's size
    mean = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    ref = F.interpolate(mean[None], size=(16, 12), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(data_small.normalize(x, mean), x.float() / 255 - ref, atol=1e-6)


# ---------------------------------------------------------------- flip_and_lighting


def test_flip_and_lighting_identity():
    x = torch.randn(5, 3, 6, 7)
    assert torch.equal(
        stream.flip_and_lighting(x, stream.keyed_uniforms(0, 0, range(5)), flip=False, lighting_std=0), x
    )


def test_lighting_is_a_per_image_constant_rgb_offset():
    n = 3000
    x = torch.randn(n, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    out = stream.flip_and_lighting(x, stream.keyed_uniforms(1, 0, range(n)), flip=False, lighting_std=0.1)
    diff = out - x
    offset = diff[:, :, :1, :1]
    assert torch.allclose(diff, offset.expand_as(diff), atol=1e-6)  # same RGB offset at every pixel
    offset = offset[:, :, 0, 0]  # n, 3
    assert (offset.abs().sum(1) > 0).all()
    assert len(set(offset[:, 0].tolist())) > n // 2  # differs between images
    # the offset is AlexNet's PCA noise: eigvec @ (alpha * eigval) with alpha ~ N(0, 0.1)
    alpha = torch.linalg.solve(stream.PCA_EIGVEC, offset.T).T / stream.PCA_EIGVAL
    assert torch.allclose(alpha.std(0), torch.full((3,), 0.1), rtol=0.08)
    assert alpha.mean(0).abs().max() < 0.01
    # per-channel spread: std_i = 0.1 * sqrt(sum_j (eigvec_ij * eigval_j)^2), ~0.0126 in [0, 1] units
    expected = 0.1 * (stream.PCA_EIGVEC * stream.PCA_EIGVAL).pow(2).sum(1).sqrt()
    assert torch.allclose(offset.std(0), expected, rtol=0.08)
    assert ((expected > 0.012) & (expected < 0.013)).all()
    # keyed: the same draws give the same offsets, another epoch others
    again = stream.flip_and_lighting(x, stream.keyed_uniforms(1, 0, range(n)), flip=False, lighting_std=0.1)
    assert torch.equal(again, out)
    assert not torch.equal(stream.flip_and_lighting(x, stream.keyed_uniforms(1, 1, range(n)), False, 0.1), out)


def test_flip_and_lighting_flips_half():
    x = torch.randn(2000, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    out = stream.flip_and_lighting(x, stream.keyed_uniforms(2, 0, range(2000)), flip=True, lighting_std=0)
    same = (out == x).flatten(1).all(1)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert (same ^ flipped).all()  # each image is either untouched or mirrored
    assert abs(flipped.float().mean().item() - 0.5) < 0.05


# ---------------------------------------------------------------- CIFAR-10 (fake, real on-disk format)

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def _write_fake_cifar(parent, per_batch=20, seed=0):
    """parent/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: pickled dicts of uint8
    (N, 3072) rows (1024 R, 1024 G, 1024 B values, row-major) and int labels, as in the real archive
    (whose Python 2 pickles load, with encoding="latin1", as dicts with these str keys)."""
    rng = np.random.default_rng(seed)
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for name in CIFAR_FILES:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    "batch_label": name,
                    "labels": labels,
                    "data": data,
                    "filenames": [f"{name}_{i}.png" for i in range(per_batch)],
                },
                f,
                protocol=2,
            )
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"num_cases_per_batch": per_batch, "label_names": LABEL_NAMES, "num_vis": 3072}, f, protocol=2)
    return folder, batches


def _patch_cifar_md5(monkeypatch, folder, archive=None):
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[n, _md5(folder / n)] for n in CIFAR_FILES[:5]])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", _md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": _md5(folder / "batches.meta")})
    if archive is not None:
        monkeypatch.setattr(CIFAR10, "tgz_md5", _md5(archive))


def _check_fake_cifar(d, batches, per_batch=20):
    train_rows = np.concatenate([batches[n][0] for n in CIFAR_FILES[:5]])
    train_labels = sum((batches[n][1] for n in CIFAR_FILES[:5]), [])
    test_rows, test_labels = batches["test_batch"]
    assert d.train_x.shape == (5 * per_batch, 3, 32, 32) and d.test_x.shape == (per_batch, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64
    assert d.train_y.tolist() == train_labels and d.test_y.tolist() == test_labels
    assert d.classes == LABEL_NAMES and d.test_split == "test"
    # pixel (c, y, x) of image i is byte 1024 c + 32 y + x of its row: NCHW, exactly
    assert torch.equal(d.train_x, torch.from_numpy(train_rows.reshape(-1, 3, 32, 32)))
    assert torch.equal(d.test_x, torch.from_numpy(test_rows.reshape(-1, 3, 32, 32)))
    for i, c, y, x in ((0, 0, 0, 0), (3, 1, 5, 7), (per_batch + 2, 2, 31, 30), (5 * per_batch - 1, 1, 17, 0)):
        assert d.train_x[i, c, y, x] == train_rows[i, 1024 * c + 32 * y + x]
    assert d.test_x[4, 2, 9, 21] == test_rows[4, 1024 * 2 + 32 * 9 + 21]


@pytest.mark.parametrize("exists", [False, True])
def test_cifar10_missing_raises_one_line_error(tmp_path, exists):
    root = tmp_path / "cifar"
    if exists:
        root.mkdir()
    with pytest.raises(ReproError) as e:
        data_small.load_small("cifar10", root=root)
    msg = str(e.value)
    assert "\n" not in msg
    assert "cifar-10-python.tar.gz" in msg and str(root) in msg
    assert not (root / "cifar-10-batches-py").exists()


def test_cifar10_fake_batches_load(tmp_path, monkeypatch):
    folder, batches = _write_fake_cifar(tmp_path)
    # the real MD5s do not match the fake files: reported as not found/corrupt
    with pytest.raises(ReproError, match="cifar-10-python.tar.gz"):
        data_small.load_small("cifar10", root=tmp_path)
    _patch_cifar_md5(monkeypatch, folder)
    d = data_small.load_small("cifar10", root=tmp_path)
    _check_fake_cifar(d, batches)
    d2 = data_small.load_small("cifar10", root=str(tmp_path))
    assert torch.equal(d2.train_x, d.train_x)


def test_cifar10_fake_val_split(tmp_path, monkeypatch):
    folder, batches = _write_fake_cifar(tmp_path)
    _patch_cifar_md5(monkeypatch, folder)
    full = data_small.load_small("cifar10", root=tmp_path)
    held = data_small.load_small("cifar10", root=tmp_path, val_split=10, split_seed=0)  # 90/10, as 45k/5k
    assert held.test_split == "val"
    assert held.train_x.shape == (90, 3, 32, 32) and held.test_x.shape == (10, 3, 32, 32)
    # random images are all distinct: val and train are disjoint and together the training set
    key = lambda img: img.numpy().tobytes()
    tr, va = {key(i) for i in held.train_x}, {key(i) for i in held.test_x}
    assert len(tr) == 90 and len(va) == 10 and not tr & va
    assert tr | va == {key(i) for i in full.train_x}
    assert not va & {key(i) for i in full.test_x}
    label_of = {key(i): int(l) for i, l in zip(full.train_x, full.train_y)}
    assert all(label_of[key(i)] == int(l) for i, l in zip(held.test_x, held.test_y))
    assert all(label_of[key(i)] == int(l) for i, l in zip(held.train_x, held.train_y))
    again = data_small.load_small("cifar10", root=tmp_path, val_split=10, split_seed=0)
    assert torch.equal(again.test_x, held.test_x)
    assert not torch.equal(
        data_small.load_small("cifar10", root=tmp_path, val_split=10, split_seed=1).test_x, held.test_x
    )


def _make_archive(tmp_path):
    staging = tmp_path / "staging"
    folder, batches = _write_fake_cifar(staging)
    root = tmp_path / "root"
    root.mkdir()
    archive = root / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    return root, archive, folder, batches


def test_cifar10_archive_is_extracted_and_loaded(tmp_path, monkeypatch):
    root, archive, folder, batches = _make_archive(tmp_path)
    _patch_cifar_md5(monkeypatch, folder, archive)
    assert not (root / "cifar-10-batches-py").exists()
    d = data_small.load_small("cifar10", root=root)
    _check_fake_cifar(d, batches)
    for name in CIFAR_FILES + ["batches.meta"]:
        assert (root / "cifar-10-batches-py" / name).read_bytes() == (folder / name).read_bytes()
    # once extracted, the archive is no longer needed
    archive.unlink()
    _check_fake_cifar(data_small.load_small("cifar10", root=root), batches)


def test_cifar10_archive_md5_mismatch_is_corrupt(tmp_path, monkeypatch):
    root, archive, folder, _ = _make_archive(tmp_path)
    _patch_cifar_md5(monkeypatch, folder)  # tgz_md5 stays the real one: the fake archive does not match
    with pytest.raises(ReproError, match="corrupt") as e:
        data_small.load_small("cifar10", root=root)
    assert str(archive) in str(e.value) and "\n" not in str(e.value)
    assert not (root / "cifar-10-batches-py").exists()


def test_cifar10_garbage_archive_is_corrupt(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-python.tar.gz").write_bytes(b"this is not a gzip file" * 100)
    with pytest.raises(ReproError, match="corrupt") as e:
        data_small.load_small("cifar10", root=root)
    assert "cifar-10-python.tar.gz" in str(e.value) and "\n" not in str(e.value)


def test_cifar10_archive_with_wrong_content_is_reported(tmp_path, monkeypatch):
    """An archive whose MD5 matches but whose batches do not: a ReproError, not a traceback."""
    root, archive, folder, _ = _make_archive(tmp_path)
    _patch_cifar_md5(monkeypatch, folder, archive)
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", "0" * 32]])
    with pytest.raises(ReproError, match="cifar-10-python.tar.gz"):
        data_small.load_small("cifar10", root=root)


# ---------------------------------------------------------------- image folders, in memory


def test_imagefolder_in_memory(digits, digits_folder):
    d = data_small.load_small("imagefolder", digits_folder)
    assert d.classes == DIGIT_CLASSES and d.test_split == "test"
    assert d.train_x.shape == (len(digits.train_x), 3, 16, 16) and d.train_x.dtype == torch.uint8
    assert d.test_x.shape == (len(digits.test_x), 3, 16, 16)
    assert torch.equal(torch.bincount(d.train_y, minlength=10), torch.bincount(digits.train_y, minlength=10))
    assert torch.equal(torch.bincount(d.test_y, minlength=10), torch.bincount(digits.test_y, minlength=10))
    # images are in class order, files sorted: the k-th "3" is the k-th 3 of the digits split,
    # resized by PIL and transposed to CHW
    for c in (0, 3, 9):
        k = 5
        src = digits.test_x[digits.test_y == c][k].numpy().transpose(1, 2, 0)
        ref = np.asarray(Image.fromarray(src).resize((16, 16), Image.BILINEAR)).transpose(2, 0, 1)
        assert torch.equal(d.test_x[d.test_y == c][k], torch.from_numpy(ref.copy()))


def test_imagefolder_image_size(digits, digits_folder):
    d = data_small.load_small("imagefolder", digits_folder, image_size=8, val_split=100)
    assert d.train_x.shape == (len(digits.train_x) - 100, 3, 8, 8) and d.test_x.shape == (100, 3, 8, 8)
    assert d.test_split == "val"


def test_imagefolder_missing_val_and_other_errors(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "if"
    for i in range(2):
        _write_png(root / "train" / "a" / f"{i}.png", _rand_image(rng, 6, 6))
        _write_png(root / "train" / "b" / f"{i}.png", _rand_image(rng, 6, 6))
    with pytest.raises(ReproError, match="val/"):
        data_small.load_small("imagefolder", root)
    # val/ without images
    (root / "val" / "a").mkdir(parents=True)
    with pytest.raises(ReproError, match="no images"):
        data_small.load_small("imagefolder", root)
    # non-image files are ignored; a class missing from val/ is fine
    _write_png(root / "val" / "a" / "0.png", _rand_image(rng, 6, 6))
    (root / "val" / "a" / "notes.txt").write_text("not an image")
    d = data_small.load_small("imagefolder", root)
    assert d.classes == ["a", "b"] and d.train_y.tolist() == [0, 0, 1, 1] and d.test_y.tolist() == [0]
    # images of different sizes need image_size
    _write_png(root / "train" / "b" / "big.png", _rand_image(rng, 9, 7))
    with pytest.raises(ReproError, match="differ in size"):
        data_small.load_small("imagefolder", root)
    assert data_small.load_small("imagefolder", root, image_size=5).train_x.shape == (5, 3, 5, 5)
    # train/ with no class folders
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    with pytest.raises(ReproError, match="no class folders"):
        data_small.load_small("imagefolder", empty)


# ---------------------------------------------------------------- streaming


def test_stream_imagefolder_and_plain_imagenet(digits, digits_folder):
    from torchvision.datasets import ImageFolder, ImageNet

    for kind in ("imagefolder", "imagenet"):
        train, val = stream.stream_datasets(kind, digits_folder)
        assert isinstance(train, ImageFolder) and not isinstance(train, ImageNet)
        assert train.classes == val.classes == DIGIT_CLASSES
        assert len(train) == len(digits.train_x) and len(val) == len(digits.test_x)
        img, label = val[0]
        assert isinstance(img, Image.Image) and img.size == (16, 16) and label == 0
    train, _ = stream.stream_datasets("imagefolder", str(digits_folder))
    assert len(train) == len(digits.train_x)


def test_stream_imagenet_parsed_archive_layout(tmp_path):
    from torchvision.datasets import ImageNet

    rng = np.random.default_rng(0)
    wnid_to_classes = {
        "n01440764": ("tench", "Tinca tinca"),
        "n01443537": ("goldfish", "Carassius auratus"),
        "n01484850": ("great white shark",),
    }
    wnids = sorted(wnid_to_classes)
    val_wnids = []
    for w in wnids:
        for i in range(3):
            _write_png(tmp_path / "train" / w / f"{w}_{i}.png", _rand_image(rng, 10, 12))
        for i in range(2):
            _write_png(tmp_path / "val" / w / f"ILSVRC2012_val_{len(val_wnids):08d}.png", _rand_image(rng, 10, 12))
            val_wnids.append(w)
    torch.save((wnid_to_classes, val_wnids), tmp_path / "meta.bin")
    train, val = stream.stream_datasets("imagenet", tmp_path)
    assert isinstance(train, ImageNet) and isinstance(val, ImageNet)
    assert train.wnids == val.wnids == wnids
    assert train.classes == val.classes == [wnid_to_classes[w] for w in wnids]
    assert train.class_to_idx["goldfish"] == 1 and train.class_to_idx["Carassius auratus"] == 1
    assert len(train) == 9 and len(val) == 6
    assert [l for _, l in train.samples] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    img, label = val[5]
    assert isinstance(img, Image.Image) and img.size == (12, 10) and label == 2
    # the same folders without meta.bin are a plain image folder, classes are the wnids
    (tmp_path / "meta.bin").unlink()
    train, _ = stream.stream_datasets("imagenet", tmp_path)
    assert not isinstance(train, ImageNet) and train.classes == wnids


def test_stream_imagenet_bad_devkit_is_reported(tmp_path):
    (tmp_path / "ILSVRC2012_devkit_t12.tar.gz").write_bytes(b"garbage")
    with pytest.raises(ReproError, match="ImageNet under"):
        stream.stream_datasets("imagenet", tmp_path)


def test_stream_errors(tmp_path):
    with pytest.raises(ReproError, match="not a directory"):
        stream.stream_datasets("imagenet", tmp_path / "missing")
    with pytest.raises(ReproError, match="not a directory"):
        stream.stream_datasets("imagefolder", None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ReproError, match="not a directory"):
        stream.stream_datasets("imagefolder", tmp_path / "file")
    with pytest.raises(ReproError, match="cannot be streamed"):
        stream.stream_datasets("cifar10", tmp_path)
    rng = np.random.default_rng(0)
    _write_png(tmp_path / "r" / "train" / "a" / "0.png", _rand_image(rng, 4, 4))
    with pytest.raises(ReproError, match="val/"):
        stream.stream_datasets("imagefolder", tmp_path / "r")
    _write_png(tmp_path / "r" / "val" / "b" / "0.png", _rand_image(rng, 4, 4))
    with pytest.raises(ReproError, match="different class folders"):
        stream.stream_datasets("imagefolder", tmp_path / "r")


# ---------------------------------------------------------------- transforms and sampler


def _pil(rng, h, w):
    return Image.fromarray(_rand_image(rng, h, w))


def test_keyed_draws_depend_on_seed_epoch_and_index_alone():
    u = stream.keyed_uniforms(7, 3, [5, 900, 12])
    assert u.shape == (3, stream.DRAWS) and ((u >= 0) & (u < 1)).all()
    # the same sample in another batch, order or process: the same draws
    assert np.array_equal(stream.keyed_uniforms(7, 3, [12, 5])[1], u[0])
    assert not np.array_equal(stream.keyed_uniforms(7, 4, [5])[0], u[0])  # another epoch
    assert not np.array_equal(stream.keyed_uniforms(8, 3, [5])[0], u[0])  # another seed
    many = stream.keyed_uniforms(0, 0, range(20000))
    assert abs(many.mean() - 0.5) < 0.005 and abs(np.corrcoef(many[:, 0], many[:, 1])[0, 1]) < 0.03


def _smooth(g, h, w):
    base = torch.rand(3, max(2, h // 16), max(2, w // 16), generator=g) * 255
    img = F.interpolate(base[None], size=(h, w), mode="bicubic", align_corners=False)[0]
    return (img + torch.randn(3, h, w, generator=g) * 8).clamp(0, 255).round().to(torch.uint8)


@pytest.mark.parametrize(
    "h, w, scale, crop",
    [
        (375, 500, (256, 480), 224),
        (500, 333, (256, 480), 224),
        (37, 53, (256, 480), 224),
        (1600, 1200, (256, 480), 224),
        (31, 29, (24, 28), 20),
        (300, 300, (256, 256), 224),
    ],
)
def test_batched_crop_matches_resize_then_crop(h, w, scale, crop):
    """stream.scale_crop (one roi_align per shape) against torchvision's antialiased "resize to S, then
    crop" for the same draws, over ImageNet's common shapes, a tiny image, a huge one and odd sizes:
    within 1.5 grey levels on average, 5 at the 99th percentile and 12 at most (measured: 0.2-1.2,
    1-4 and 1-10; the most where a large downscale meets two antialiasing filters)."""
    import torchvision.transforms.v2.functional as TF

    g = torch.Generator().manual_seed(h * w)
    images = [_smooth(g, h, w) for _ in range(6)]
    windows = stream.crop_windows(stream.keyed_uniforms(3, 1, range(6)), [(h, w)] * 6, scale, crop)
    ours = stream.scale_crop(images, windows, crop)
    ref = torch.stack(
        [
            TF.resize(img, [nh, nw], antialias=True)[:, t : t + crop, l : l + crop]
            for img, (nh, nw, t, l) in zip(images, windows)
        ]
    )
    assert ours.shape == (6, 3, crop, crop) and ours.dtype == torch.uint8
    d = (ours.int() - ref.int()).abs().float()
    assert d.mean() <= 1.5 and d.flatten().quantile(0.99) <= 5 and d.max() <= 12, (d.mean(), d.max())
    sides = {min(nh, nw) for nh, nw, _, _ in windows}
    assert sides <= set(range(scale[0], scale[1] + 1))


def test_batched_crop_groups_mixed_shapes_and_keeps_each_images_place():
    shapes = [(40, 30), (30, 40), (40, 30), (25, 25), (30, 40)]
    images = [torch.full((3, h, w), 10 * k, dtype=torch.uint8) for k, (h, w) in enumerate(shapes)]
    windows = stream.crop_windows(stream.keyed_uniforms(0, 0, range(5)), shapes, (24, 30), 20)
    out = stream.scale_crop(images, windows, 20)
    assert [int(o.float().mean()) for o in out] == [0, 10, 20, 30, 40]  # flat images stay flat, in order


def test_eval_transform_center_and_tencrop():
    import torchvision.transforms.v2.functional as TF

    rng = np.random.default_rng(1)
    img = _pil(rng, 30, 25)
    resized = TF.resize(TF.pil_to_tensor(img), 20, antialias=True)
    assert min(resized.shape[1:]) == 20
    h, w = resized.shape[1:]
    center = stream.eval_transform("center", test_size=20, crop=16)(img)
    assert center.shape == (3, 16, 16) and center.dtype == torch.uint8
    top, left = int(round((h - 16) / 2)), int(round((w - 16) / 2))
    assert torch.equal(center, resized[:, top : top + 16, left : left + 16])
    ten = stream.eval_transform("tencrop", test_size=20, crop=16)(img)
    assert isinstance(ten, torch.Tensor) and ten.shape == (10, 3, 16, 16) and ten.dtype == torch.uint8
    assert torch.equal(ten[0], resized[:, :16, :16])
    assert torch.equal(ten[1], resized[:, :16, -16:])
    assert torch.equal(ten[2], resized[:, -16:, :16])
    assert torch.equal(ten[3], resized[:, -16:, -16:])
    assert torch.equal(ten[4], center)
    # crops 5..9 are the five crops of the mirrored image (tl, tr, bl, br, centre), i.e. the flips of
    # crops 1, 0, 3, 2, 4 (mirroring swaps left and right)
    for k, j in enumerate((1, 0, 3, 2, 4)):
        assert torch.equal(ten[5 + k], ten[j].flip(2))
    assert len({ten[k].numpy().tobytes() for k in range(10)}) == 10
    # batched by a DataLoader as evaluate.py does: (B, 10, 3, crop, crop)
    ds = stream.Transformed([(img, 1), (_pil(rng, 22, 40), 2)], stream.eval_transform("tencrop", test_size=20, crop=16))
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=2)))
    assert x.shape == (2, 10, 3, 16, 16) and y.tolist() == [1, 2]


def test_eval_transform_full_and_unknown_view():
    rng = np.random.default_rng(2)
    for h, w in ((30, 25), (20, 50), (24, 24)):
        out = stream.eval_transform("full", scale=24)(_pil(rng, h, w))
        assert out.dtype == torch.uint8 and out.shape[0] == 3
        assert min(out.shape[1:]) == 24
        assert abs(out.shape[1] / out.shape[2] - h / w) < 0.05  # aspect ratio kept, no crop
    with pytest.raises(ReproError, match="unknown view"):
        stream.eval_transform("fivecrop")


def test_transformed_converts_to_rgb():
    grey = Image.fromarray(np.full((8, 8), 77, dtype=np.uint8))  # mode "L"
    ds = stream.Transformed([(grey, 4)], stream.eval_transform("center", test_size=8, crop=8))
    x, y = ds[0]
    assert len(ds) == 1 and y == 4 and x.shape == (3, 8, 8) and (x == 77).all()


def test_stream_pixel_mean(digits_folder):
    train, _ = stream.stream_datasets("imagefolder", digits_folder)
    mean = stream.stream_pixel_mean(train, test_size=16, crop=12)
    assert mean.shape == (3, 12, 12) and mean.dtype == torch.float32
    assert 0 <= mean.min() and mean.max() <= 1
    # all 1347 images (< max_images): the centre 12x12 of the in-memory per-pixel mean
    mem = data_small.load_small("imagefolder", digits_folder)
    assert torch.allclose(mean, data_small.pixel_mean(mem.train_x)[:, 2:14, 2:14], atol=1e-5)
    # a seeded sample
    small = stream.stream_pixel_mean(train, test_size=16, crop=12, max_images=50, seed=3)
    assert small.shape == (3, 12, 12) and not torch.allclose(small, mean, atol=1e-3)
    assert torch.equal(small, stream.stream_pixel_mean(train, test_size=16, crop=12, max_images=50, seed=3))


def test_epoch_sampler():
    n = 100
    s = stream.EpochSampler(n, seed=3, epoch=0)
    a = list(s)
    assert len(s) == n and sorted(a) == list(range(n)) and a != list(range(n))
    assert list(stream.EpochSampler(n, seed=3, epoch=0)) == a  # reproducible
    b = list(stream.EpochSampler(n, seed=3, epoch=1))
    assert sorted(b) == list(range(n)) and b != a
    assert list(stream.EpochSampler(n, seed=4, epoch=0)) != a
    for k in (0, 1, 37, 99, 100):
        r = stream.EpochSampler(n, seed=3, epoch=1, start=k)
        assert list(r) == b[k:] and len(r) == n - k
    # usable as a DataLoader sampler: a resumed epoch sees the rest of the same order
    loader = torch.utils.data.DataLoader(list(range(n)), batch_size=10, sampler=stream.EpochSampler(n, 3, 1, start=40))
    assert torch.cat(list(loader)).tolist() == b[40:]


# ---------------------------------------------------------------- decoding on the device (nvJPEG's CPU twin)


@pytest.fixture(scope="module")
def jpeg_folder(tmp_path_factory):
    return data_digits.make_digits_imagefolder(tmp_path_factory.mktemp("digits_jpg"), size=40, fmt="jpg")


def test_decode_where(jpeg_folder, digits_folder):
    jpegs, _ = stream.stream_datasets("imagefolder", jpeg_folder)
    pngs, _ = stream.stream_datasets("imagefolder", digits_folder)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")  # a device object needs no GPU
    assert decode.decode_where("auto", jpegs, cuda) == "device"
    assert decode.decode_where("auto", jpegs, cpu) == "workers"
    assert decode.decode_where("auto", pngs, cuda) == "workers"  # nvJPEG decodes JPEG only
    assert decode.decode_where("device", jpegs, cpu) == "device"
    assert decode.decode_where("workers", jpegs, cuda) == "workers"
    with pytest.raises(ReproError, match="needs JPEG files"):
        decode.decode_where("device", pngs, cpu)


def test_decode_on_device_matches_pil(jpeg_folder):
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.v2 import functional as TF

    ds = ImageFolder(str(jpeg_folder / "train"))
    enc = decode.EncodedImages(ds)
    batch = [enc[i] for i in range(0, 400, 50)]
    flat, lengths, labels, index = decode.collate_encoded(batch)
    assert labels.tolist() == [ds.samples[i][1] for i in range(0, 400, 50)] and index.tolist() == list(
        range(0, 400, 50)
    )
    encoded = decode.split_encoded(flat, lengths)
    assert all(torch.equal(e, b[0]) for e, b in zip(encoded, batch))
    images = decode.decode_on_device(encoded, torch.device("cpu"))
    for i, img in zip(range(0, 400, 50), images):
        ref = TF.pil_to_tensor(Image.open(ds.samples[i][0]).convert("RGB"))
        assert img.dtype == torch.uint8 and img.shape == ref.shape == (3, 40, 40)
        assert (img.int() - ref.int()).abs().max() <= 1  # the same libjpeg, up to IDCT rounding


def test_decode_on_device_falls_back_for_what_the_batch_decoder_refuses(tmp_path):
    """ImageNet's train set has a PNG named .JPEG: decoded on the CPU instead, the batch goes on."""
    rng = np.random.default_rng(0)
    _write_png(tmp_path / "fake.JPEG", _rand_image(rng, 12, 10))
    Image.fromarray(_rand_image(rng, 9, 11)).save(tmp_path / "real.jpg")
    Image.fromarray(_rand_image(rng, 7, 5)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    files = [decode.read_bytes(tmp_path / f) for f in ("real.jpg", "fake.JPEG", "cmyk.jpg")]
    images = decode.decode_on_device(files, torch.device("cpu"))
    assert [tuple(i.shape) for i in images] == [(3, 9, 11), (3, 12, 10), (3, 7, 5)]
    assert all(i.dtype == torch.uint8 for i in images)
    assert torch.equal(images[1], torch.from_numpy(np.array(Image.open(tmp_path / "fake.JPEG"))).permute(2, 0, 1))


def test_decoding_uses_torchcodec_not_torchvision_io(jpeg_folder, monkeypatch):
    """TorchCodec (a dependency) decodes; torchvision.io's deprecated readers and decoders are never
    called. Without TorchCodec, PIL decodes the same images."""
    import torchvision.io

    def deprecated(*args, **kwargs):
        raise AssertionError("a deprecated torchvision.io function was called")

    for name in ("read_file", "decode_jpeg", "decode_image", "decode_png", "read_image"):
        monkeypatch.setattr(torchvision.io, name, deprecated)
    assert decode.jpeg_decoder() == "torchcodec"
    files = sorted((jpeg_folder / "train").rglob("*.jpg"))[:5]
    ds = decode.EncodedImages(type("Folder", (), {"samples": [(str(f), 0) for f in files]})())
    encoded = [ds[i][0] for i in range(len(ds))]
    images = decode.decode_on_device(encoded, torch.device("cpu"))
    monkeypatch.setattr(decode, "jpeg_decoder", lambda: "pil")
    via_pil = decode.decode_on_device(encoded, torch.device("cpu"))
    for a, b in zip(images, via_pil):
        assert a.shape == b.shape and (a.int() - b.int()).abs().max() <= 1


def test_training_decodes_jpegs_on_the_device(jpeg_folder, tmp_path):
    from resnet_repro.spec.build import build_spec
    from resnet_repro.training.loop import train

    spec = build_spec(
        None,
        [
            {
                "model": "resnet18",
                "data": {
                    "kind": "imagefolder",
                    "root": str(jpeg_folder),
                    "scale": [32, 48],
                    "crop": 28,
                    "test_size": 32,
                    "workers": 1,
                    "mean_images": 100,
                    "decode": "device",
                },
                "batch_size": 16,
                "max_iters": 4,
                "log_every": 2,
                "checkpoint_every": 4,
                "eval_batch_size": 128,
            }
        ],
    )
    metrics = train(spec, tmp_path, log=lambda msg: None)
    assert metrics["iterations"] == 4 and metrics["train_loss"] > 0


def _stream_spec(root, decode_where, **changes):
    from resnet_repro.spec.build import build_spec

    d = {"kind": "imagefolder", "root": str(root), "scale": [32, 48], "crop": 28, "test_size": 32}
    d |= {"workers": 1, "mean_images": 100, "decode": decode_where}
    run = {"model": "resnet18", "data": d, "batch_size": 8, "max_iters": 8, "log_every": 2, "checkpoint_every": 4}
    return build_spec(None, [run | changes])


@pytest.mark.parametrize("decode_where", ["workers", "device"])
def test_streamed_training_stopped_and_resumed_equals_uninterrupted(jpeg_folder, tmp_path, decode_where):
    """The streamed path resumes bitwise-exactly (its draws keyed by seed, epoch and sample index), as
    the in-memory one does: weights and history as an uninterrupted run's."""
    from resnet_repro.training.loop import Interrupted, train

    spec = _stream_spec(jpeg_folder, decode_where, max_iters=60, log_every=10, checkpoint_every=20)
    full = train(spec, tmp_path / "full", log=lambda m: None)
    with pytest.raises(Interrupted):
        train(spec, tmp_path / "split", stop_at=30, log=lambda m: None)
    resumed = train(spec, tmp_path / "split", resume=True, log=lambda m: None)
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=False)["model"] for r in ("full", "split"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [(tmp_path / r / "history.csv").read_text().splitlines() for r in ("full", "split")]
    cut = lambda rows: [",".join(r.split(",")[:7]) for r in rows]  # iteration ... test error, not the clock
    assert cut(history[0]) == cut(history[1]) and resumed["test_error"] == full["test_error"]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_sample_is_drawn_alike_whatever_the_processes_epochs_and_resumes(jpeg_folder, workers):
    """DDP: two processes' halves of a batch are the images one process makes of the whole batch, epoch
    after epoch of one persistent DataLoader; and batches made after a resume from a state taken
    mid-epoch are those an uninterrupted run makes."""
    from resnet_repro.training.batches import StreamBatches

    train_ds, _ = stream.stream_datasets("imagefolder", jpeg_folder)
    small_ds = stream.hold_out_samples(train_ds, 20, 0)[1]  # 20 images: two batches of 8 an epoch
    d = {"scale": [32, 48], "crop": 28, "workers": workers, "decode": "workers"}
    mean = torch.zeros(3, 1, 1)
    make = lambda rank, world: StreamBatches(small_ds, d, 8, mean, {}, torch.device("cpu"), 5, rank, world)
    one, halves = make(0, 1), [make(0, 2), make(1, 2)]
    made = []
    for _ in range(5):
        whole = one.next()[0]
        parts = torch.cat([h.next()[0] for h in halves])
        # EpochSampler gives process r every 2nd index from r: the whole batch, interleaved
        assert torch.equal(parts, whole[[0, 2, 4, 6, 1, 3, 5, 7]])
        made.append(whole)
    assert one.epoch == 2 and not torch.equal(made[0], made[2])  # each epoch draws anew
    again = make(0, 1)
    again.next()  # one batch, then its state (mid-epoch 0), as a checkpoint keeps it
    resumed = make(0, 1)
    resumed.load_state_dict(again.state_dict())
    assert all(torch.equal(resumed.next()[0], m) for m in made[1:])


def test_keyed_draws_differ_for_every_epoch_and_index_and_take_any_seed():
    rows = np.concatenate([stream.keyed_uniforms(3, e, range(1000)) for e in range(10)])
    assert len({r.tobytes() for r in rows}) == len(rows)  # no two (epoch, index) draw alike
    assert stream.keyed_uniforms(-1, 0, [0]).shape == (1, stream.DRAWS)  # the schema allows any integer seed


def test_a_sample_is_cropped_anew_each_epoch_in_the_workers(jpeg_folder):
    train_ds, _ = stream.stream_datasets("imagefolder", jpeg_folder)
    crops = stream.KeyedCrops(train_ds, 5, (32, 48), 28)
    assert torch.equal(crops[(0, 7)][0], crops[7][0])  # a plain index is epoch 0
    assert not torch.equal(crops[(0, 7)][0], crops[(1, 7)][0])
    assert crops[(1, 7)][1:] == (train_ds.targets[7], 7)


def test_a_crop_larger_than_the_shortest_side_is_refused():
    from resnet_repro.spec.build import build_spec

    with pytest.raises(ReproError, match="data.scale's shortest side 20 is below data.crop 28"):
        build_spec(
            None, [{"model": "resnet18", "data": {"kind": "imagefolder", "root": "x", "scale": [20, 40], "crop": 28}}]
        )
