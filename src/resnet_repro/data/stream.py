"""ImageNet-style data read by DataLoader workers (imagenet, imagefolder): the data sets, the paper's scale
augmentation and test views as transforms, flips and PCA lighting on the device, the mean image, the
epoch sampler; and the summary `check-data` prints of a spec's data set."""

import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from resnet_repro.data.small import held_out_indices, small_data
from resnet_repro.errors import ReproError

STREAM_KINDS = ("imagenet", "imagefolder")
# AlexNet's PCA lighting noise, with the eigen-decomposition of ImageNet RGB covariance
# in [0, 1] units (as used by fb.resnet.torch, the authors' reference Torch code).
PCA_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
PCA_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])


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
