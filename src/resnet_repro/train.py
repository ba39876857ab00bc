"""Iteration-based SGD training with the paper's schedules, a history every K iterations,
atomic checkpoints and exact resume."""

import csv
import io
import math
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from . import data as D
from . import parallel, runlock
from .device import (
    autocast,
    configure,
    make_sgd,
    memory_format,
    peak_memory_mb,
    precision_name,
    reset_peak_memory,
    resolve_device,
    use_bf16,
    use_channels_last,
    use_compile,
    use_cuda_graph,
)
from .errors import ReproError
from .evaluate import error_rates, predict_tensor, predict_view
from .files import load_torch, save_torch, write_json, write_text
from .live import LiveRun
from .models import ResNet, count_params, parse_model_name

HISTORY_COLUMNS = [
    "iteration",
    "epoch",
    "lr",
    "train_loss",
    "train_error",
    "test_loss",
    "test_error",
    "holdout_error",
    "images_per_s",
    "elapsed_s",
]
LIVE_METRICS = ("train_error", "test_error", "train_loss", "test_loss", "lr", "holdout_error", "images_per_s")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # Slurm's pre-emption and time-limit warnings
STOP_CHECK_EVERY = 10  # with DDP, iterations between the processes' checks for a stop signal
GRAPH_WARMUP = 3  # eager steps before a CUDA graph is recorded


class Diverged(ReproError):
    pass


class Interrupted(ReproError):
    pass


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
        x = D.normalize(self.x[idx], self.mean)
        return D.pad_crop_flip(x, self.pad, self.aug_gen, self.flip), self.y[idx]

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
    """Batches read by DataLoader workers and decoded, scaled (random shorter side) and cropped
    either there or on the device (`data.decode`), then flipped, PCA-lit and mean-subtracted on
    the device. Resume restarts the epoch's permutation at the
    right place; the workers' crop randomness is reseeded, so a resumed streamed run is
    statistically, not bitwise, the same."""

    def __init__(self, dataset, d, batch_size, mean, augment, device, seed, rank=0, world=1):
        self.dataset, self.d, self.batch_size, self.mean, self.device, self.seed = (
            dataset,
            d,
            batch_size,
            mean,
            device,
            seed,
        )
        self.rank, self.world = rank, world
        self.flip = augment.get("flip", True)
        self.decode = D.decode_where(d.get("decode", "auto"), dataset, device)
        self.aug_gen = torch.Generator(device=device).manual_seed(aug_seed(seed, rank))
        self.crop_gen = torch.Generator()  # scale and crop draws when decoding on the device
        self.epoch, self.consumed, self.it = 0, 0, None  # consumed: images of this epoch, all processes

    def _start(self):
        sampler = D.EpochSampler(len(self.dataset), self.seed, self.epoch, self.consumed, self.rank, self.world)
        seed = self.seed * 7919 + self.epoch * 31 + self.consumed + 104729 * self.rank
        if self.decode == "device":
            images, collate = D.EncodedImages(self.dataset), D.collate_encoded
            self.crop_gen.manual_seed(seed)
        else:
            images, collate = D.Transformed(self.dataset, D.train_transform(self.d["scale"], self.d["crop"])), None
        loader = torch.utils.data.DataLoader(
            images,
            batch_size=self.batch_size // self.world,
            sampler=sampler,
            num_workers=self.d.get("workers", 4),
            collate_fn=collate,
            pin_memory=self.device.type == "cuda",
            drop_last=True,
            persistent_workers=False,
            generator=torch.Generator().manual_seed(seed),
        )
        self.it = iter(loader)

    def next(self):
        if self.it is None:
            self._start()
        try:
            *x, y = next(self.it)
        except StopIteration:
            self.epoch, self.consumed = self.epoch + 1, 0
            self._start()
            *x, y = next(self.it)
        self.consumed += len(y) * self.world
        if self.decode == "device":
            images = D.decode_on_device(D.split_encoded(*x), self.device)
            x = D.scale_crop(images, self.d["scale"], self.d["crop"], self.crop_gen)
        else:
            (x,) = x
        x = D.normalize(x.to(self.device, non_blocking=True), self.mean)
        x = D.flip_and_lighting(x, self.aug_gen, self.flip, self.d.get("lighting", 0.1))
        return x, y.to(self.device, non_blocking=True)

    def state_dict(self):
        return {"epoch": self.epoch, "pos": self.consumed, "aug_gen": self.aug_gen.get_state()}

    def load_state_dict(self, s):
        self.epoch, self.consumed, self.it = s["epoch"], s["pos"], None
        self.aug_gen.set_state(s["aug_gen"])


class Step:
    """One training iteration on a batch: forward (under autocast), loss, backward, SGD step, and
    the running sums for the history added on the device. Nothing here reads a value back to the
    host, so on CUDA the CPU queues step after step without waiting; train() reads the sums every
    K iterations. The benchmark (benchmarks/train_throughput.py) and `resnet-repro estimate` time
    this very object.

    acc: loss sum, wrong predictions, images since the last history record.
    warm: wrong predictions, images since the last warm-up check (when counting them)."""

    def __init__(
        self, model, opt, device, bf16=False, channels_last=False, compile=False, count_warm=False, graph=False
    ):
        self.model, self.opt, self.device, self.bf16, self.count_warm = model, opt, device, bf16, count_warm
        self.format = memory_format(channels_last)
        # DDP and the compiled module share their parameters with `model`; checkpoints keep saving `model`
        net = parallel.wrap(model, device)
        self.forward = torch.compile(net) if compile else net
        self.acc = torch.zeros(3, device=device, dtype=torch.float64)
        self.warm = torch.zeros(2, device=device, dtype=torch.float64)
        # graph: on CUDA, one process, the whole step (forward, backward, SGD, sums) is captured once
        # as a CUDA graph and replayed: one launch instead of a thousand or so for a CIFAR net
        self.graph = graph and device.type == "cuda" and not parallel.WORLD.active
        self.captured, self.captured_lr, self.eager_steps = None, None, 0

    def __call__(self, x, y):
        if not self.graph:
            return self._step(x, y)
        lr = [g["lr"] for g in self.opt.param_groups]
        if self.captured is None or lr != self.captured_lr:
            if self.eager_steps < GRAPH_WARMUP:  # cuDNN's autotuning, compiling, the optimizer's state
                self.eager_steps += 1
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    loss = self._step(x, y)
                torch.cuda.current_stream(self.device).wait_stream(side)
                return loss
            self._capture(x, y, lr)
        self.static[0].copy_(x.contiguous(memory_format=self.format), non_blocking=True)
        self.static[1].copy_(y, non_blocking=True)
        self.captured.replay()
        return self.static[2]

    def _capture(self, x, y, lr):
        """Record the step once (recording runs nothing); again whenever the learning rate changes
        (SGD's lr is a constant of the recorded kernels)."""
        self.captured = None
        static_x, static_y = x.contiguous(memory_format=self.format).clone(), y.clone()
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            loss = self._step(static_x, static_y, cache=False)
        self.captured, self.captured_lr, self.static = graph, lr, (static_x, static_y, loss)

    def _step(self, x, y, cache=True):
        x = x.contiguous(memory_format=self.format)
        with autocast(self.device, self.bf16, cache):
            out = self.forward(x)
            loss = F.cross_entropy(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            n = len(y)
            wrong = (out.argmax(1) != y).sum().double()
            # python numbers go in as kernel arguments: a new tensor from a host value would be a
            # host-to-device copy (a synchronisation on CUDA) every step
            self.acc[0] += loss.detach().double() * n
            self.acc[1] += wrong
            self.acc[2] += n
            if self.count_warm:
                self.warm[0] += wrong
                self.warm[1] += n
        return loss


class LearningRate:
    """The paper's schedules: multi-step in iterations, or / 10 when the error on a held-out slice
    of the training set stops improving (never decided on the split the tables report); with an
    optional warm-up: a small lr until the training error first falls below a threshold, for at
    most warmup.max_iters iterations."""

    def __init__(self, spec):
        self.base, self.sched, self.warmup = spec["lr"], spec["schedule"], spec.get("warmup")
        self.warming = self.warmup is not None
        self.warmup_end = None  # {"iteration", "by": "train_error" or "cap", "train_error"}
        self.drops, self.best, self.best_at = [], math.inf, 0  # drops: iterations of plateau drops

    def at(self, iteration):
        if self.warming:
            return self.warmup["lr"]
        if self.sched["kind"] == "multistep":
            drops = sum(iteration >= m for m in self.sched["milestones"])
        else:
            drops = len(self.drops)
        return self.base * self.sched.get("gamma", 0.1) ** drops

    def warmup_check_due(self, iteration):
        return self.warming and (iteration % self.warmup["check_every"] == 0 or iteration >= self.warmup["max_iters"])

    def observe_train_error(self, iteration, error):
        """At a warm-up check: how the warm-up ends now ("train_error", or "cap" when max_iters is
        reached with the error still above the threshold), or None while it goes on."""
        if not self.warming:
            return None
        if error < self.warmup["until_train_error"]:
            by = "train_error"
        elif iteration >= self.warmup["max_iters"]:
            by = "cap"
        else:
            return None
        self.warming = False
        self.warmup_end = {"iteration": iteration, "by": by, "train_error": error}
        return by

    def observe_holdout_error(self, iteration, error):
        """Plateau rule: / 10 when the held-out error has not improved by `threshold` points for
        `patience_iters` iterations (at most `max_drops` times); patience restarts at each drop."""
        if self.sched["kind"] != "plateau":
            return False
        if error < self.best - self.sched["threshold"]:
            self.best, self.best_at = error, iteration
            return False
        if iteration - self.best_at >= self.sched["patience_iters"] and len(self.drops) < self.sched["max_drops"]:
            self.drops.append(iteration)
            self.best_at = iteration
            return True
        return False

    def state_dict(self):
        return {
            "warming": self.warming,
            "warmup_end": self.warmup_end,
            "drops": self.drops,
            "best": self.best,
            "best_at": self.best_at,
        }

    def load_state_dict(self, s):
        self.warming, self.warmup_end = s["warming"], s["warmup_end"]
        self.drops, self.best, self.best_at = list(s["drops"]), s["best"], s["best_at"]


def history_csv(history):
    buf = io.StringIO()
    w = csv.DictWriter(buf, HISTORY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in history:
        w.writerow({k: row.get(k, "") for k in HISTORY_COLUMNS})
    return buf.getvalue()


def _fmt_time(s):
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def open_data(spec, device):
    """(kind, data, mean, classes, holdout) for the model's family: in-memory for CIFAR nets, streamed
    for ImageNet nets. holdout: the training images the plateau rule decides on (never trained on),
    or None for a multi-step schedule."""
    d, sched = spec["data"], spec["schedule"]
    n_held = sched["holdout"] if sched["kind"] == "plateau" else 0
    if parse_model_name(spec["model"]).family == "cifar":
        if d["kind"] not in D.SMALL_KINDS:
            raise ReproError(
                f"CIFAR-family model {spec['model']} needs a small-image data set "
                f"({', '.join(D.SMALL_KINDS)}), not {d['kind']}"
            )
        td, holdout = D.small_data(d), None
        if n_held:
            td, holdout = D.hold_out_small(td, n_held, d.get("split_seed", 0))
        return "small", td, D.pixel_mean(td.train_x), list(td.classes), holdout
    train_ds, val_ds = D.stream_datasets(d["kind"], d.get("root"))
    D.decode_where(d.get("decode", "auto"), train_ds, device)  # a wrong setting fails before the mean is computed
    holdout = None
    if n_held:
        train_ds, holdout = D.hold_out_samples(train_ds, n_held, d.get("split_seed", 0))
    mean = D.stream_pixel_mean(train_ds, d["test_size"], d["crop"], d.get("mean_images", 10000), spec["seed"])
    return "stream", (train_ds, val_ds), mean, list(train_ds.classes), holdout


def train(spec, out_dir, resume=False, log=None, stop_at=None, tracking=(None, None)):
    """_train() under the run directory's lock (runlock.RunLock, taken by process 0 before any
    expensive work): a second copy of the same training fails at once with RunLocked."""
    if not parallel.WORLD.main:
        return _train(spec, out_dir, resume, log, stop_at, tracking)
    with runlock.RunLock(out_dir):
        return _train(spec, out_dir, resume, log, stop_at, tracking)


def _train(spec, out_dir, resume=False, log=None, stop_at=None, tracking=(None, None)):
    """Train as `spec` says, writing out_dir/{spec.yaml, checkpoint.pt, history.csv, metrics.json,
    model.pt}. checkpoint.pt (with optimizer state) is for resuming; model.pt is the final model.
    resume: continue from out_dir/checkpoint.pt when it exists. stop_at: leave after that
    iteration (with a checkpoint), as a job with a time limit would.
    Under torchrun (several processes, DDP) only process 0 logs and writes files; every process
    resumes from the same checkpoint. tracking: (MLflow URI, experiment); with an http(s) server,
    process 0 logs the run live (live.py). Returns the metrics (None on the other processes)."""
    world = parallel.WORLD
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    if not world.main:
        log = lambda msg: None  # noqa: E731
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    ckpt = None
    if resume and ckpt_path.exists():
        ckpt = load_torch(ckpt_path)
        if ckpt["spec"] != spec:
            changed = sorted(k for k in set(spec) | set(ckpt["spec"]) if spec.get(k) != ckpt["spec"].get(k))
            raise ReproError(
                f"{ckpt_path} was trained with a different spec (differs in: {', '.join(changed)}); "
                f"use another output directory or drop --resume"
            )
    if world.main:
        write_text(out_dir / "spec.yaml", yaml.safe_dump(spec, sort_keys=False))
    local_batch = parallel.local_batch_size(spec["batch_size"])  # fails early if the batch does not split
    if spec["bn_batch"] and local_batch > spec["bn_batch"] and local_batch % spec["bn_batch"]:
        raise ReproError(
            f"the batch of each of {parallel.WORLD.size} processes ({local_batch}) is not a multiple "
            f"of bn_batch {spec['bn_batch']}"
        )
    device = parallel.start(resolve_device(spec["device"]))
    bf16 = use_bf16(spec["precision"], device)
    # the test-error curve is a reported number: fp32 by default, whichever precision trains
    eval_bf16 = use_bf16(spec.get("eval_precision", "fp32"), device)
    cl = use_channels_last(spec["channels_last"], device)
    compiled = use_compile(spec["compile"], device, spec["max_iters"])
    configure(device)
    torch.manual_seed(spec["seed"])

    kind, data, mean, classes, holdout = open_data(spec, device)
    num_classes = spec.get("num_classes") or len(classes)
    mean = mean.to(device)
    if kind == "small":
        data = data.to(device)
        if holdout is not None:
            holdout = tuple(t.to(device) for t in holdout)
        batches = SmallBatches(
            data, spec["batch_size"], mean, spec.get("augment", {}), device, spec["seed"], world.rank, world.size
        )
    else:
        batches = StreamBatches(
            data[0],
            spec["data"],
            spec["batch_size"],
            mean,
            spec.get("augment", {}),
            device,
            spec["seed"],
            world.rank,
            world.size,
        )

    model = ResNet(parse_model_name(spec["model"]), num_classes, spec["bn_batch"]).to(
        device, memory_format=memory_format(cl)
    )
    # weight decay on every parameter, as the paper's Caffe/Torch set-ups did
    opt = make_sgd(
        model.parameters(), device, lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
    )
    lr = LearningRate(spec)
    graphed = use_cuda_graph(device, parse_model_name(spec["model"]).family, world.size)
    step = Step(model, opt, device, bf16, cl, compiled, count_warm=lr.warmup is not None, graph=graphed)
    history, iteration, elapsed = [], 0, 0.0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        lr.load_state_dict(ckpt["lr"])
        batches.load_state_dict(ckpt["batches"])
        history, iteration, elapsed = ckpt["history"], ckpt["iteration"], ckpt["elapsed_s"]
        aug_states = ckpt.get("aug_states", [ckpt["batches"]["aug_gen"]])
        if len(aug_states) == world.size:
            batches.aug_gen.set_state(aug_states[world.rank])
        else:  # another number of processes than the checkpoint's: fresh augmentation randomness
            batches.aug_gen.manual_seed(aug_seed(spec["seed"], world.rank) + 1_000_003 * iteration)
        if world.main:  # the sums in the checkpoint are over all processes
            step.acc.copy_(ckpt["acc"])
            step.warm.copy_(ckpt["warm"])
        torch.set_rng_state(ckpt["torch_rng"])
        log(
            f"[{spec['model']}] resumed from {ckpt_path} at iteration {iteration}"
            + (f" ({len(aug_states)} process(es) then, {world.size} now)" if len(aug_states) != world.size else "")
        )
    reset_peak_memory(device)
    acc, warm = step.acc, step.warm
    live = LiveRun.start(out_dir, spec, *tracking, resume=ckpt is not None, log=log) if world.main else None

    def evaluate():
        """(test loss, test error, held-out error or nan) on every process; process 0 computes them,
        the others wait."""
        if world.main:
            return parallel.from_main(list(evaluate_here()), device)
        return parallel.from_main([0.0, 0.0, 0.0], device)

    def predict(split):
        """(logits, labels) on the test split (what the tables report) or the held-out slice."""
        if kind == "small":
            x, y = (data.test_x, data.test_y) if split == "test" else holdout
            return predict_tensor(model, x, mean, device, eval_bf16, cl, spec["eval_batch_size"]), y.cpu()
        d, ds = spec["data"], data[1] if split == "test" else holdout
        logits = predict_view(
            model,
            ds,
            "center",
            mean,
            device,
            eval_bf16,
            cl,
            spec["eval_batch_size"],
            d.get("workers", 4),
            d["test_size"],
            d["crop"],
        )
        return logits, torch.tensor(ds.targets)

    def evaluate_here():
        logits, labels = predict("test")
        held_error = math.nan
        if holdout is not None:
            held_error = error_rates(*predict("holdout"))["top1_error"]
        model.train()
        return F.cross_entropy(logits, labels).item(), error_rates(logits, labels)["top1_error"], held_error

    def checkpoint(done=False):
        """Every process calls this at the same iteration; process 0 writes, the others wait for it
        (torchrun stops all processes when one exits, so none may leave before the file is there)."""
        aug_states = parallel.gathered(batches.aug_gen.get_state())
        acc_all, warm_all = parallel.summed(acc), parallel.summed(warm)
        if world.main:
            save_torch(
                {
                    "spec": spec,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "lr": lr.state_dict(),
                    "batches": batches.state_dict(),
                    "aug_states": aug_states,
                    "history": history,
                    "iteration": iteration,
                    "elapsed_s": elapsed,
                    "acc": acc_all.cpu(),
                    "warm": warm_all.cpu(),
                    "torch_rng": torch.get_rng_state(),
                    "mean": mean.cpu(),
                    "num_classes": num_classes,
                    "classes": classes,
                    "world_size": world.size,
                    "done": done,
                    "precision": precision_name(bf16),
                },
                ckpt_path,
            )
        parallel.barrier()
        last_checkpoint["t"] = time.monotonic()

    # wall-time checkpoints (spec checkpoint_minutes), besides the ones every checkpoint_every iterations
    last_checkpoint = {"t": time.monotonic()}
    ckpt_seconds = 60 * (spec.get("checkpoint_minutes") or 0)

    def wall_checkpoint_due():
        """checkpoint_minutes since the last checkpoint, agreed by all processes (checked every
        STOP_CHECK_EVERY iterations with DDP, like the stop signal)."""
        if not ckpt_seconds or (world.active and iteration % STOP_CHECK_EVERY):
            return False
        return parallel.any_true(time.monotonic() - last_checkpoint["t"] >= ckpt_seconds, device)

    def check_finite():
        if parallel.any_true(not math.isfinite(acc[0].item()), device):
            raise Diverged(
                f"[{spec['model']}] training diverged (loss is {acc[0].item()}) by iteration {iteration}; "
                f"lower the learning rate or use a warm-up (last checkpoint kept)"
            )

    def stop_requested():
        """A stop signal or stop_at, agreed by all processes. With DDP the processes compare flags
        every STOP_CHECK_EVERY iterations (a collective per step would cost a synchronisation)."""
        if stop_at is not None and stop_at <= iteration < max_iters:
            return True
        if world.active and iteration % STOP_CHECK_EVERY:
            return False
        return parallel.any_true(stop["signal"] is not None, device)

    stop = {"signal": None}
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        for s in STOP_SIGNALS:
            handlers[s] = signal.signal(s, lambda signum, frame: stop.update(signal=signum))

    max_iters, log_every, ckpt_every = spec["max_iters"], spec["log_every"], spec["checkpoint_every"]
    model.train()
    for g in opt.param_groups:
        g["lr"] = lr.at(iteration)
    t0, window_start, images, window_iters = time.perf_counter(), time.perf_counter(), 0, 0
    try:
        while iteration < max_iters:
            x, y = batches.next()
            step(x, y)
            iteration += 1
            window_iters += 1
            images += len(y) * world.size

            if lr.warmup_check_due(iteration):
                w = parallel.summed(warm).tolist()
                warm.zero_()
                train_error = 100.0 * w[0] / w[1]
                ended = lr.observe_train_error(iteration, train_error)
                if ended == "train_error":
                    log(
                        f"[{spec['model']}] warm-up over at iteration {iteration} "
                        f"(training error {train_error:.1f}% < {lr.warmup['until_train_error']}%)"
                    )
                elif ended == "cap":
                    log(f"[{spec['model']}] warning: {warmup_capped(lr.warmup, lr.warmup_end)}")
            if iteration % log_every == 0 or iteration == max_iters:
                check_finite()
                now = time.perf_counter()
                train_time = now - window_start
                loss_sum, wrong_sum, count = parallel.summed(acc).tolist()
                acc.zero_()
                test_loss, test_error, holdout_error = evaluate()
                elapsed += time.perf_counter() - t0
                t0 = time.perf_counter()
                row = {
                    "iteration": iteration,
                    "epoch": batches.epoch,
                    "lr": opt.param_groups[0]["lr"],
                    "train_loss": loss_sum / count,
                    "train_error": 100.0 * wrong_sum / count,
                    "test_loss": test_loss,
                    "test_error": test_error,
                    "holdout_error": "" if holdout is None else holdout_error,
                    "images_per_s": images / train_time,
                    "elapsed_s": elapsed,
                }
                history.append(row)
                if holdout is not None and lr.observe_holdout_error(iteration, holdout_error):
                    log(
                        f"[{spec['model']}] held-out training error plateaued ({holdout_error:.2f}%, best "
                        f"{lr.best:.2f}%): lr / 10 at iteration {iteration}"
                    )
                if world.main:
                    write_text(out_dir / "history.csv", history_csv(history))
                if live:
                    live.row(row, LIVE_METRICS)
                eta = (max_iters - iteration) * train_time / window_iters
                log(
                    f"[{spec['model']}] it {iteration}/{max_iters} lr {row['lr']:.4g} loss {row['train_loss']:.3f} "
                    f"train {row['train_error']:.2f}% {spec_split(data, kind)} {test_error:.2f}% "
                    + ("" if holdout is None else f"held-out {holdout_error:.2f}% ")
                    + f"| {row['images_per_s']:.0f} img/s | ETA {_fmt_time(eta)}"
                )
                window_start, images, window_iters = time.perf_counter(), 0, 0
            for g in opt.param_groups:
                g["lr"] = lr.at(iteration)
            if iteration % ckpt_every == 0 and iteration < max_iters:
                check_finite()
                checkpoint()
            if iteration < max_iters and wall_checkpoint_due():
                check_finite()
                checkpoint()
                log(
                    f"[{spec['model']}] checkpoint at iteration {iteration} ({spec['checkpoint_minutes']} minutes since the last)"
                )
            if stop_requested():
                check_finite()
                checkpoint()
                why = (
                    f"signal {signal.Signals(stop['signal']).name}"
                    if stop["signal"]
                    else (
                        f"stop_at={stop_at}"
                        if stop_at is not None and iteration >= stop_at
                        else "a signal to another process"
                    )
                )
                raise Interrupted(
                    f"[{spec['model']}] stopped at iteration {iteration} by {why}; "
                    f"checkpoint written, rerun with --resume to continue"
                )
    except Interrupted:
        if live:
            live.end("KILLED")
        raise
    except BaseException:
        if live:
            live.end("FAILED")
        raise
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    checkpoint(done=True)
    parallel.finish()
    if not world.main:
        return None
    write_text(out_dir / "history.csv", history_csv(history))
    # the final model, without optimizer state: what evaluation and analysis read
    save_torch(
        {
            "spec": spec,
            "model": model.state_dict(),
            "iteration": iteration,
            "mean": mean.cpu(),
            "num_classes": num_classes,
            "classes": classes,
            "history": history,
            "precision": precision_name(bf16),
        },
        out_dir / "model.pt",
    )
    last = history[-1]
    metrics = {
        "model": spec["model"],
        "iterations": iteration,
        "params": count_params(model),
        "train_error": last["train_error"],
        "test_error": last["test_error"],
        "test_split": spec_split(data, kind),
        "train_loss": last["train_loss"],
        "elapsed_s": elapsed,
        # the images trained on, tested on (the test curve's split) and held out for the plateau rule
        "train_images": len(data.train_x) if kind == "small" else len(data[0]),
        "test_images": len(data.test_x) if kind == "small" else len(data[1]),
        "holdout_images": 0 if holdout is None else len(holdout[1] if kind == "small" else holdout),
        # the median window: robust to the first one, which includes warm-up (and compiling)
        "images_per_s": statistics.median(h["images_per_s"] for h in history),
        "device": str(device),
        "processes": world.size,
        # the arithmetic actually used (precision: auto resolves per device)
        "precision": precision_name(bf16),
        "eval_precision": precision_name(eval_bf16),
        "channels_last": cl,
        "compile": compiled,
        "cuda_graph": step.graph,
        # how the warm-up ended (null without one) and the iterations of plateau drops
        "warmup": lr.warmup_end,
        "lr_drops": lr.drops if holdout is not None else None,
        "warnings": [warmup_capped(lr.warmup, lr.warmup_end)] if (lr.warmup_end or {}).get("by") == "cap" else [],
    }
    metrics["s_per_1k_iters"] = 1000 * spec["batch_size"] / metrics["images_per_s"]
    metrics["peak_memory_mb"] = peak_memory_mb(device)
    write_json(out_dir / "metrics.json", metrics)
    if live:
        live.end("FINISHED")
    return metrics


def warmup_capped(warmup, end):
    return (
        f"warm-up ended by its cap (warmup.max_iters={warmup['max_iters']}) at iteration {end['iteration']} "
        f"with training error {end['train_error']:.1f}%, not below {warmup['until_train_error']}%"
    )


def spec_split(data, kind):
    return data.test_split if kind == "small" else "val"
