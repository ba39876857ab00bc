"""Data sets and the paper's preprocessing.

Two paths, as in the paper's two families of experiments:
- small images (cifar10, digits, or an imagefolder of small images) are held in memory as uint8
  tensors on the training device and augmented a whole batch at a time (pad 4, random crop, flip);
- ImageNet-style data (imagenet, imagefolder) is read by DataLoader workers and decoded, scaled and
  cropped either by them (PIL) or, for JPEGs on CUDA, on the GPU (TorchCodec's nvJPEG; `data.decode`); then
  flipped, lit (AlexNet PCA) and mean-subtracted on the device, a batch at a time.
"""

import copy
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_repro.errors import ReproError
from resnet_repro.files import write_with

SMALL_KINDS = ("cifar10", "digits", "imagefolder")
STREAM_KINDS = ("imagenet", "imagefolder")
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


# ---------------------------------------------------------------- small images, in memory


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


def hold_out_samples(dataset, n, seed):
    """(rest, held): copies of an ImageFolder-like data set with a seeded choice of n samples moved
    out of the training set into a held-out one."""
    kept, held = held_out_indices(len(dataset.samples), n, seed)
    parts = []
    for idx in (kept, held):
        part = copy.copy(dataset)
        part.samples = [dataset.samples[i] for i in idx.tolist()]
        part.imgs, part.targets = part.samples, [label for _, label in part.samples]
        parts.append(part)
    return tuple(parts)


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


# AlexNet's PCA lighting noise, with the eigen-decomposition of ImageNet RGB covariance
# in [0, 1] units (as used by fb.resnet.torch, the authors' reference Torch code).
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


def flip_and_lighting(x, generator, flip=True, lighting_std=0.1):
    """The on-device part of the ImageNet augmentation, for a normalised batch."""
    n, dev = x.shape[0], x.device
    if flip:
        mask = torch.rand(n, device=dev, generator=generator) < 0.5
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if lighting_std:
        alpha = torch.randn(n, 3, device=dev, generator=generator) * lighting_std
        rgb = (alpha * PCA_EIGVAL.to(dev)) @ PCA_EIGVEC.to(dev).T  # n, 3
        x = x + rgb[:, :, None, None]
    return x


# ---------------------------------------------------------------- ImageNet-style, streamed


def _is_imagenet_archive_layout(root):
    root = Path(root)
    return (root / "meta.bin").exists() or (root / "ILSVRC2012_devkit_t12.tar.gz").exists()


def stream_datasets(kind, root):
    """(train, val) torchvision datasets returning PIL images, for `imagenet` (torchvision's ImageNet
    archive layout, or plain train/ and val/ class folders) and `imagefolder`."""
    from torchvision.datasets import ImageFolder, ImageNet

    if kind not in STREAM_KINDS:
        raise ReproError(f"dataset kind {kind!r} cannot be streamed: choose one of {', '.join(STREAM_KINDS)}")
    if not root or not Path(root).is_dir():
        raise ReproError(
            f"{kind} root {root!r} is not a directory: for ImageNet put ILSVRC2012_img_train.tar, "
            f"ILSVRC2012_img_val.tar and ILSVRC2012_devkit_t12.tar.gz there, or train/ and val/ class folders"
        )
    if kind == "imagenet" and _is_imagenet_archive_layout(root):
        try:
            return ImageNet(root, split="train"), ImageNet(root, split="val")
        except RuntimeError as e:
            raise ReproError(f"ImageNet under {root}: {e}") from None
    for split in ("train", "val"):
        if not (Path(root) / split).is_dir():
            raise ReproError(f"{kind} root {root} has no {split}/ directory: expected {root}/{split}/<class>/<images>")
    try:
        train = ImageFolder(str(Path(root) / "train"))
        val = ImageFolder(str(Path(root) / "val"))
    except FileNotFoundError as e:  # a class folder without images
        raise ReproError(f"{kind} root {root}: {e}") from None
    if val.classes != train.classes:
        raise ReproError(f"{root}: train/ and val/ have different class folders")
    return train, val


class Transformed(torch.utils.data.Dataset):
    def __init__(self, base, transform):
        self.base, self.transform = base, transform

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label = self.base[i]
        return self.transform(img.convert("RGB")), label


JPEG_EXTENSIONS = (".jpg", ".jpeg")


class EncodedImages(torch.utils.data.Dataset):
    """(the file's bytes as a uint8 tensor, label): workers only read, the device decodes."""

    def __init__(self, base):
        self.samples = base.samples

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        return read_bytes(path), label


def read_bytes(path):
    """A file's bytes as a 1-D uint8 tensor."""
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)


def collate_encoded(batch):
    """One flat byte tensor and the files' lengths: one shared-memory block per batch between the
    worker and the trainer (a tensor per file would cost a file descriptor each)."""
    return (
        torch.cat([b[0] for b in batch]),
        torch.tensor([len(b[0]) for b in batch]),
        torch.tensor([b[1] for b in batch]),
    )


def split_encoded(flat, lengths):
    return list(torch.split(flat, lengths.tolist()))


def decode_where(setting, dataset, device):
    """Where training images are decoded: 'workers' (PIL, in DataLoader processes) or 'device'
    (TorchCodec's decode_jpeg: nvJPEG on CUDA, a batch at a time, which frees the CPU cores that
    otherwise limit ImageNet throughput; its libjpeg-turbo on a CPU). auto: the device on CUDA when
    every file is a JPEG."""
    all_jpeg = all(str(path).lower().endswith(JPEG_EXTENSIONS) for path, _ in dataset.samples)
    if setting == "device" and not all_jpeg:
        raise ReproError("data.decode: device needs JPEG files (.jpg/.jpeg) only; use workers (or auto) for others")
    if setting == "auto":
        return "device" if device.type == "cuda" and all_jpeg else "workers"
    return setting


def jpeg_decoder():
    """Which library decodes on the device: 'torchcodec' (nvJPEG on CUDA, libjpeg-turbo on a CPU),
    or 'pil' (on the CPU, then copied to the device) where TorchCodec is not installed.
    torchvision.io's decoders are deprecated (and to be removed) in favour of TorchCodec."""
    try:
        import torchcodec.decoders  # noqa: F401

        return "torchcodec"
    except (ImportError, OSError, RuntimeError):  # not installed, or its libraries do not load here
        return "pil"


def _decode_pil(data):
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(data.numpy().tobytes())).convert("RGB")
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


def decode_on_device(encoded, device):
    """JPEG bytes (a list of 1-D uint8 CPU tensors) -> a list of uint8 (3, H, W) RGB images on
    `device`, with TorchCodec (all of a batch in one nvJPEG call on CUDA). A file the batched
    decoder refuses (ImageNet has a few CMYK JPEGs and one PNG named .JPEG) is decoded one by one,
    by any format's decoder on the CPU if need be."""
    if jpeg_decoder() == "pil":
        return [_decode_pil(data).to(device) for data in encoded]
    from torchcodec.decoders import decode_image, decode_jpeg

    try:
        return decode_jpeg(list(encoded), mode="RGB", device=device)
    except RuntimeError:
        out = []
        for data in encoded:
            try:
                out.append(decode_jpeg(data, mode="RGB", device=device))
            except RuntimeError:
                try:
                    out.append(decode_image(data, mode="RGB").to(device))
                except RuntimeError:
                    out.append(_decode_pil(data).to(device))
        return out


def scale_crop(images, scale, crop, generator):
    """The paper's scale augmentation on the device, image by image (their sizes differ): shorter
    side random in [scale], then a random crop x crop window (zero-padded if the image is smaller).
    `generator` is a CPU generator (drawing the sizes on the host costs no device synchronisation)."""
    from torchvision.transforms.v2 import functional as TF

    out = []
    for img in images:
        side = int(torch.randint(scale[0], scale[1] + 1, (1,), generator=generator))
        img = TF.resize(img, side, antialias=True)
        h, w = img.shape[-2:]
        if h < crop or w < crop:
            img = F.pad(img, (0, max(0, crop - w), 0, max(0, crop - h)))
            h, w = img.shape[-2:]
        y = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
        x = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
        out.append(img[:, y : y + crop, x : x + crop])
    return torch.stack(out)


def train_transform(scale=(256, 480), crop=224):
    """Worker side of the paper's ImageNet augmentation: shorter side random in [scale], random crop.
    Returns uint8 tensors; flip, lighting and mean subtraction happen on the device."""
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.RandomShortestSize(list(range(scale[0], scale[1] + 1))),
            v2.RandomCrop(crop, pad_if_needed=True),
        ]
    )


def eval_transform(view, test_size=256, crop=224, scale=None, flips=True):
    """center: shorter side test_size, centre crop. tencrop: 4 corners + centre and their flips
    (10, 3, crop, crop); without flips only the 5 (5, 3, crop, crop). full: shorter side `scale`, the
    whole image (fully-convolutional testing)."""
    from torchvision.transforms import v2

    if view == "center":
        return v2.Compose([v2.PILToTensor(), v2.Resize(test_size), v2.CenterCrop(crop)])
    if view == "tencrop":
        # a plain callable, not v2.Lambda: v2 transforms apply to each leaf of the crop tuple
        crops = v2.TenCrop(crop) if flips else v2.FiveCrop(crop)
        return v2.Compose([v2.PILToTensor(), v2.Resize(test_size), crops, torch.stack])
    if view == "full":
        return v2.Compose([v2.PILToTensor(), v2.Resize(scale)])
    raise ReproError(f"unknown view {view!r}")


def stream_pixel_mean(train_ds, test_size, crop, max_images=10000, seed=0):
    """Per-pixel mean of (a seeded sample of) the training set at the crop size."""
    n = min(len(train_ds), max_images)
    idx = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(seed))[:n]
    loader = torch.utils.data.DataLoader(
        Transformed(torch.utils.data.Subset(train_ds, idx.tolist()), eval_transform("center", test_size, crop)),
        batch_size=256,
        num_workers=min(4, os.cpu_count() or 1),
    )
    total = torch.zeros(3, crop, crop, dtype=torch.float64)
    for x, _ in loader:
        total += x.double().sum(0)
    return (total / n / 255.0).float()


class EpochSampler(torch.utils.data.Sampler):
    """A seeded permutation per epoch that can start part-way through, so a resumed run sees the
    same image order as an uninterrupted one. With `world` processes (DDP) process `rank` takes
    every world-th index, so each run of world x b indices is one batch split over the processes;
    the rest of the epoch is cut to a multiple of `world` so every process makes as many batches."""

    def __init__(self, n, seed, epoch=0, start=0, rank=0, world=1):
        self.n, self.seed, self.epoch, self.start, self.rank, self.world = n, seed, epoch, start, rank, world

    def __iter__(self):
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + self.epoch))
        rest = perm[self.start :]
        return iter(rest[: len(rest) // self.world * self.world][self.rank :: self.world].tolist())

    def __len__(self):
        return (self.n - self.start) // self.world


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


def describe_data(spec):
    """Open the spec's data set the way training will, and summarise it (sizes, classes)."""
    from resnet_repro.models import parse_model_name

    d = spec["data"]
    if parse_model_name(spec["model"]).family == "cifar":
        td = small_data(d)
        return {
            "kind": d["kind"],
            "root": d.get("root"),
            "path": "in-memory",
            "train": len(td.train_x),
            td.test_split: len(td.test_x),
            "image_size": list(td.train_x.shape[-2:]),
            "classes": td.classes,
        }
    train, val = stream_datasets(d["kind"], d.get("root"))
    return {
        "kind": d["kind"],
        "root": d.get("root"),
        "path": "streamed",
        "train": len(train),
        "val": len(val),
        "classes": list(train.classes),
    }
