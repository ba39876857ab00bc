"""Where the trainer's batches come from, and what it evaluates on: the two data paths of the paper's
two families of experiments, with one interface.

- InMemoryData (CIFAR-family nets): a small-image data set as uint8 tensors on the device,
  batched by SmallBatches;
- StreamData (ImageNet-family nets): image files read and decoded by DataLoader workers,
  batched by StreamBatches.

Both have: `batches` (next(), epoch, state_dict(), load_state_dict(), aug_gen), `mean`, `classes`,
`test_split`, `holdout` (the training images the plateau rule decides on, or None), `evaluate()`
(test loss, test error, held-out error) and `sizes()` (the image counts metrics.json records)."""

import contextlib
import math

import torch
import torch.nn.functional as F

from resnet_repro.data import decode as data_decode
from resnet_repro.data import small, stream
from resnet_repro.data.views import error_rates, predict_tensor, predict_view
from resnet_repro.errors import ReproError
from resnet_repro.models import parse_model_name
from resnet_repro.training import parallel


def aug_seed(seed, rank):
    return seed + 1 + 7919 * rank  # rank 0: what a single process uses


class SmallBatches:
    """Batches from an in-memory uint8 data set on the device: a seeded permutation per epoch,
    normalised and pad-crop-flipped a whole batch at a time. With several processes (DDP) every
    process draws the same permutation and takes its own slice of each batch of `batch_size`."""

    def __init__(self, data, batch_size, mean, augment, device, seed, rank=0, world=1):
        self.x, self.y, self.mean, self.device = data.train_x, data.train_y, mean, device
        self.batch_size = min(batch_size, len(self.x) // world * world)
        self.rank, self.world = rank, world
        self.pad, self.flip = augment.get("pad", 4), augment.get("flip", True)
        self.perm_gen = torch.Generator().manual_seed(seed)
        self.aug_gen = torch.Generator(device=device).manual_seed(aug_seed(seed, rank))
        self.epoch, self.pos, self.perm = 0, 0, None

    def next(self):
        if self.perm is None or self.pos + self.batch_size > len(self.perm):
            if self.perm is not None:
                self.epoch += 1
            self.perm = torch.randperm(len(self.x), generator=self.perm_gen).to(self.device)
            self.pos = 0
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        local = len(idx) // self.world
        idx = idx[self.rank * local : (self.rank + 1) * local]
        x = small.normalize(self.x[idx], self.mean)
        return small.pad_crop_flip(x, self.pad, self.aug_gen, self.flip), self.y[idx]

    def state_dict(self):
        return {
            "epoch": self.epoch,
            "pos": self.pos,
            "perm": None if self.perm is None else self.perm.cpu(),
            "perm_gen": self.perm_gen.get_state(),
            "aug_gen": self.aug_gen.get_state(),
        }

    def load_state_dict(self, s):
        self.epoch, self.pos = s["epoch"], s["pos"]
        self.perm = None if s["perm"] is None else s["perm"].to(self.device)
        self.perm_gen.set_state(s["perm_gen"])
        self.aug_gen.set_state(s["aug_gen"])


class StreamBatches:
    """Batches read by DataLoader workers and decoded either there or on the device (`data.decode`),
    scaled (random shorter side) and cropped (stream.scale_crop), then flipped, PCA-lit and
    mean-subtracted on the device. Every random choice of a sample is drawn from (seed, epoch, its
    index) (stream.keyed_uniforms), so a resumed run, which restarts the epoch's permutation where it
    stopped, draws exactly as an uninterrupted one, and DDP processes as one process would.

    One DataLoader serves the whole run (its workers persist from epoch to epoch). On CUDA a batch is
    decoded and prepared on a side stream: the decoder's synchronisation then waits for that stream
    only, not for the training step still running on the current one, and the step takes the batch
    after `wait_stream`, with no host synchronisation."""

    aug_gen = None  # no generator state to checkpoint: the draws are keyed

    def __init__(self, dataset, d, batch_size, mean, augment, device, seed, rank=0, world=1):
        self.dataset, self.d, self.batch_size, self.mean, self.device = dataset, d, batch_size, mean, device
        self.seed, self.world = seed, world
        self.flip = augment.get("flip", True)
        self.decode = data_decode.decode_where(d.get("decode", "auto"), dataset, device)
        self.sampler = stream.PassSampler(len(dataset), seed, rank, world)
        self.side = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.ordered = False  # the side stream has waited once for the current one
        self.epoch, self.consumed, self.loader, self.it = 0, 0, None, None  # consumed: this epoch's, all processes

    def _start_pass(self):
        if self.loader is None:
            if self.decode == "device":
                images, collate = data_decode.EncodedImages(self.dataset), data_decode.collate_encoded
            else:
                images, collate = stream.KeyedCrops(self.dataset, self.seed, self.d["scale"], self.d["crop"]), None
            workers = self.d.get("workers", 4)
            self.loader = torch.utils.data.DataLoader(
                images,
                batch_size=self.batch_size // self.world,
                sampler=self.sampler,
                num_workers=workers,
                collate_fn=collate,
                pin_memory=self.device.type == "cuda",
                drop_last=True,
                persistent_workers=workers > 0,
            )
        self.sampler.epoch, self.sampler.start = self.epoch, self.consumed
        self.it = iter(self.loader)

    def next(self):
        if self.it is None:
            self._start_pass()
        try:
            *x, y, index = next(self.it)
        except StopIteration:
            self.epoch, self.consumed = self.epoch + 1, 0
            self._start_pass()
            *x, y, index = next(self.it)
        self.consumed += len(y) * self.world
        u = stream.keyed_uniforms(self.seed, self.epoch, index.numpy())
        if self.side is not None and not self.ordered:  # what the current stream made (the mean) first
            self.side.wait_stream(torch.cuda.current_stream(self.device))
            self.ordered = True
        with torch.cuda.stream(self.side) if self.side is not None else contextlib.nullcontext():
            if self.decode == "device":
                images = data_decode.decode_on_device(data_decode.split_encoded(*x), self.device)
                windows = stream.crop_windows(u, [img.shape[-2:] for img in images], self.d["scale"], self.d["crop"])
                x = stream.scale_crop(images, windows, self.d["crop"])
            else:
                (x,) = x
            x = small.normalize(x.to(self.device, non_blocking=True), self.mean)
            x = stream.flip_and_lighting(x, u, self.flip, self.d.get("lighting", 0.1))
            y = y.to(self.device, non_blocking=True)
        if self.side is not None:  # hand-off: the step's stream waits for the side stream, the host does not
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.side)
            x.record_stream(current)
            y.record_stream(current)
        return x, y

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.consumed}

    def load_state_dict(self, s):
        self.epoch, self.consumed, self.it = s["epoch"], s["pos"], None


class TrainingData:
    """What the two data paths share: evaluation on every process (process 0 computes, the others
    wait for its numbers)."""

    def evaluate(self, model, bf16, channels_last):
        """(test loss, test error, held-out error or nan) on every process."""
        if not parallel.WORLD.main:
            return parallel.from_main([0.0, 0.0, 0.0], self.device)
        logits, labels = self.predict(model, "test", bf16, channels_last)
        held_error = math.nan
        if self.holdout is not None:
            held_error = error_rates(*self.predict(model, "holdout", bf16, channels_last))["top1_error"]
        model.train()
        loss, error = F.cross_entropy(logits, labels).item(), error_rates(logits, labels)["top1_error"]
        return parallel.from_main([loss, error, held_error], self.device)


def holdout_size(spec):
    """Training images held out for the plateau rule (none for a multi-step schedule)."""
    sched = spec["schedule"]
    return sched["holdout"] if sched["kind"] == "plateau" else 0


class InMemoryData(TrainingData):
    """CIFAR-family nets: the small-image set in memory on the device, the held-out slice too."""

    def __init__(self, spec, device, world):
        d, n_held = spec["data"], holdout_size(spec)
        if d["kind"] not in small.SMALL_KINDS:
            raise ReproError(
                f"CIFAR-family model {spec['model']} needs a small-image data set "
                f"({', '.join(small.SMALL_KINDS)}), not {d['kind']}"
            )
        td, holdout = small.small_data(d), None
        if n_held:
            td, holdout = small.hold_out_small(td, n_held, d.get("split_seed", 0))
        self.spec, self.device = spec, device
        self.mean, self.classes, self.test_split = (
            small.pixel_mean(td.train_x).to(device),
            list(td.classes),
            td.test_split,
        )
        self.data = td.to(device)
        self.holdout = None if holdout is None else tuple(t.to(device) for t in holdout)
        self.batches = SmallBatches(
            self.data,
            spec["batch_size"],
            self.mean,
            spec.get("augment", {}),
            device,
            spec["seed"],
            world.rank,
            world.size,
        )

    def predict(self, model, split, bf16, channels_last):
        """(logits, labels) on the test split (what the tables report) or the held-out slice."""
        x, y = (self.data.test_x, self.data.test_y) if split == "test" else self.holdout
        logits = predict_tensor(model, x, self.mean, self.device, bf16, channels_last, self.spec["eval_batch_size"])
        return logits, y.cpu()

    def sizes(self):
        """The images trained on, tested on (the test curve's split) and held out for the plateau rule."""
        return {
            "train_images": len(self.data.train_x),
            "test_images": len(self.data.test_x),
            "holdout_images": 0 if self.holdout is None else len(self.holdout[1]),
        }


class StreamData(TrainingData):
    """ImageNet-family nets: image files streamed by DataLoader workers; tested on the val split."""

    test_split = "val"

    def __init__(self, spec, device, world):
        d, n_held = spec["data"], holdout_size(spec)
        train_ds, self.val = stream.stream_datasets(d["kind"], d.get("root"))
        data_decode.decode_where(
            d.get("decode", "auto"), train_ds, device
        )  # a wrong setting fails before the mean is computed
        self.holdout = None
        if n_held:
            train_ds, self.holdout = stream.hold_out_samples(train_ds, n_held, d.get("split_seed", 0))
        mean = stream.stream_pixel_mean(train_ds, d["test_size"], d["crop"], d.get("mean_images", 10000), spec["seed"])
        self.spec, self.device, self.train = spec, device, train_ds
        self.mean, self.classes = mean.to(device), list(train_ds.classes)
        self.batches = StreamBatches(
            train_ds,
            d,
            spec["batch_size"],
            self.mean,
            spec.get("augment", {}),
            device,
            spec["seed"],
            world.rank,
            world.size,
        )

    def predict(self, model, split, bf16, channels_last):
        d, ds = self.spec["data"], self.val if split == "test" else self.holdout
        logits = predict_view(
            model,
            ds,
            "center",
            self.mean,
            self.device,
            bf16,
            channels_last,
            self.spec["eval_batch_size"],
            d.get("workers", 4),
            d["test_size"],
            d["crop"],
        )
        return logits, torch.tensor(ds.targets)

    def sizes(self):
        return {
            "train_images": len(self.train),
            "test_images": len(self.val),
            "holdout_images": 0 if self.holdout is None else len(self.holdout),
        }


def open_data(spec, device, world):
    """The data path for the model's family: in memory for CIFAR nets, streamed for ImageNet nets."""
    if parse_model_name(spec["model"]).family == "cifar":
        return InMemoryData(spec, device, world)
    return StreamData(spec, device, world)
