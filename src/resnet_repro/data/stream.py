"""ImageNet-style data read by DataLoader workers (imagenet, imagefolder): the data sets, the paper's scale
augmentation and test views as transforms, flips and PCA lighting on the device, the mean image, the
epoch sampler; and the summary `check-data` prints of a spec's data set."""

import copy
import os
from pathlib import Path

import numpy as np
import torch

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


def to_device(t, device):
    """A small host tensor on `device` without blocking the host: on CUDA copied from pinned memory."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def flip_and_lighting(x, u, flip=True, lighting_std=0.1):
    """The on-device part of the ImageNet augmentation, for a normalised batch, from its images' keyed
    draws `u` (keyed_uniforms: column 3 the mirror, columns 4-9 the three normals of AlexNet's PCA
    lighting). The lighting's RGB offsets are computed on the host and cross to the device once."""
    u = torch.as_tensor(u, dtype=torch.float64)
    if flip:
        mask = to_device(u[:, 3] < 0.5, x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if lighting_std:
        normals = torch.sqrt(-2 * torch.log1p(-u[:, 4:7])) * torch.cos(2 * torch.pi * u[:, 7:10])  # Box-Muller
        # eigvec @ (alpha * eigval) per image, element-wise: a row's offset does not depend on the batch it
        # is in (a matmul's kernel may change with the number of rows), so DDP halves match one process
        rgb = (((normals * lighting_std).float() * PCA_EIGVAL)[:, None, :] * PCA_EIGVEC).sum(-1)  # n, 3
        x = x + to_device(rgb, x.device)[:, :, None, None]
    return x


# ---------------------------------------------------------------- keyed draws and the batched crop

DRAWS = 10  # uniforms per sample: shorter side, crop top, crop left, mirror, six for three normals


def keyed_uniforms(seed, epoch, indices):
    """(len(indices), DRAWS) uniforms in [0, 1), a function of (seed, epoch, sample index) alone: a sample
    gets the same augmentation whichever process, worker or batch draws it, so a resumed run draws as an
    uninterrupted one and DDP as one process (a counter-based generator: SplitMix64, its counter the
    draw's number, stepped by the golden gamma, from a key of the seed and epoch)."""
    idx = np.asarray(indices, dtype=np.uint64).reshape(-1, 1)
    gamma = np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        key = np.uint64(seed % 2**64) * np.uint64(0xD1B54A32D192ED03) + np.uint64(epoch % 2**64) * np.uint64(
            0xAEF17502108EF2D9
        )
        z = key + (idx * np.uint64(DRAWS) + np.arange(1, DRAWS + 1, dtype=np.uint64)) * gamma
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def crop_windows(u, sizes, scale, crop):
    """Per image of size (h, w) and its draws: (new h, new w, top, left) of the paper's scale augmentation,
    the shorter side S uniform in [scale] (the longer sized as torchvision's Resize(S) sizes it) and a
    crop x crop window uniform inside the resized image."""
    out = []
    for (h, w), (us, uy, ux) in zip(sizes, np.asarray(u)[:, :3].tolist()):
        side = scale[0] + int(us * (scale[1] - scale[0] + 1))
        short, long = (w, h) if w <= h else (h, w)
        nw, nh = (side, int(side * long / short)) if w <= h else (int(side * long / short), side)
        out.append((nh, nw, int(uy * (max(nh, crop) - crop + 1)), int(ux * (max(nw, crop) - crop + 1))))
    return out


def scale_crop(images, windows, crop):
    """uint8 (3, h, w) images (one device) -> uint8 (n, 3, crop, crop): each resized to (new h, new w) and
    cropped at (top, left) of `windows` (crop_windows), in one torchvision.ops.roi_align per distinct
    image shape: the window, mapped back onto the original image, averaged over an adaptive grid of
    bilinear samples (aligned pixel centres), which antialiases a downscale as a resize does."""
    from torchvision.ops import roi_align

    dev = images[0].device
    shapes = {}
    for i, img in enumerate(images):
        shapes.setdefault(tuple(img.shape[-2:]), []).append(i)
    # every box, and the order that puts the groups' crops back in batch order, cross to the device in
    # one copy each from pinned memory: no host synchronisation per shape
    boxes, order = [], []
    for (h, w), idx in shapes.items():
        for k, i in enumerate(idx):
            nh, nw, top, left = windows[i]
            sy, sx = nh / h, nw / w
            boxes.append([k, left / sx, top / sy, (left + crop) / sx, (top + crop) / sy])
        order += idx
    boxes = to_device(torch.tensor(boxes, dtype=torch.float32), dev)
    where = to_device(torch.tensor(np.argsort(order)), dev)
    crops, start = [], 0
    for idx in shapes.values():
        x = torch.stack([images[i] for i in idx]).float().contiguous()  # decoders give HWC views
        crops.append(roi_align(x, boxes[start : start + len(idx)], (crop, crop), 1.0, -1, aligned=True))
        start += len(idx)
    return torch.cat(crops)[where].round_().clamp_(0, 255).to(torch.uint8)


def resize_crop(img, window, crop):
    """One uint8 (3, h, w) image resized to (new h, new w) and cropped at (top, left) of `window`
    (crop_windows): what scale_crop's roi_align stands for, image by image. The spec keeps every crop
    inside the resized image (data.scale's shortest side is at least data.crop)."""
    from torchvision.transforms.v2 import functional as TF

    nh, nw, top, left = window
    return TF.resize(img, [nh, nw], antialias=True)[:, top : top + crop, left : left + crop]


def sample_key(key):
    """(epoch, index) of a data set key: a PassSampler's pair, or a plain index (epoch 0)."""
    return key if isinstance(key, tuple) else (0, key)


class KeyedCrops(torch.utils.data.Dataset):
    """(the scale-augmented crop as uint8, label, index) of a PIL data set, made in the worker from the
    sample's keyed draws of this epoch: resized then cropped, one image at a time (the CPU's resize is
    quicker there than a roi_align per image; scale_crop, for batches on the device, matches it within
    a few grey levels)."""

    def __init__(self, base, seed, scale, crop):
        self.base, self.seed, self.scale, self.crop = base, seed, scale, crop

    def __len__(self):
        return len(self.base)

    def __getitem__(self, key):
        from torchvision.transforms.v2 import functional as TF

        epoch, i = sample_key(key)
        img, label = self.base[i]
        img = TF.pil_to_tensor(img.convert("RGB"))
        [window] = crop_windows(keyed_uniforms(self.seed, epoch, [i]), [img.shape[-2:]], self.scale, self.crop)
        return resize_crop(img, window, self.crop), label, i


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


class PassSampler(torch.utils.data.Sampler):
    """The EpochSampler of the pass a run is in, for one DataLoader kept for the whole run (its workers
    persist): set `epoch` and `start` before each pass. Yields (epoch, index), so that a worker's
    KeyedCrops draws for the right epoch."""

    def __init__(self, n, seed, rank=0, world=1):
        self.n, self.seed, self.rank, self.world, self.epoch, self.start = n, seed, rank, world, 0, 0

    def _pass(self):
        return EpochSampler(self.n, self.seed, self.epoch, self.start, self.rank, self.world)

    def __iter__(self):
        epoch = self.epoch  # this pass's, whenever the generator is consumed
        return ((epoch, i) for i in self._pass())

    def __len__(self):
        return len(self._pass())


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
