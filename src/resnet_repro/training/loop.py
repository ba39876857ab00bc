"""Iteration-based SGD training with the paper's schedules, a history every K iterations,
atomic checkpoints and exact resume.

Read train_loop() first: the loop. Around it, each concept in one place: the data paths and their
batches (batches.py), the learning rate (schedule.py), the model with its optimizer and step
(make_training, which `resnet-repro estimate` times too), Checkpoints (saving, and the wall-time
checkpoints) with read_checkpoint/restore, History (history.csv rows and live MLflow rows) and
StopFlag (signals and stop_at)."""

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

from resnet_repro.device import (
    autocast,
    configure,
    make_sgd,
    memory_format,
    peak_memory_mb,
    precision_name,
    reset_peak_memory,
    resolve_device,
    tf32_in_use,
    use_bf16,
    use_channels_last,
    use_compile,
    use_cuda_graph,
)
from resnet_repro.errors import ReproError
from resnet_repro.files import load_torch, save_torch, write_json, write_text
from resnet_repro.models import ResNet, count_params, parse_model_name
from resnet_repro.rundir import CHECKPOINT, HISTORY, METRICS, MODEL, SPEC
from resnet_repro.tracking.live import LiveRun
from resnet_repro.training import parallel, runlock

# SmallBatches and StreamBatches also under their old address: benchmarks/ import them from here
from resnet_repro.training.batches import aug_seed, open_data
from resnet_repro.training.schedule import LearningRate, warmup_capped

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
        self.format, self.channels_last, self.compiled = memory_format(channels_last), channels_last, compile
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


def set_lr(opt, value):
    for g in opt.param_groups:
        g["lr"] = value


def make_training(spec, device, num_classes):
    """(Step, LearningRate) for `spec` on `device`: the model, its SGD and the step that trains them
    (step.model, step.opt). train() runs it and `resnet-repro estimate` times it (estimate.measure),
    so the estimate cannot drift from the trainer."""
    m = parse_model_name(spec["model"])
    bf16, cl = use_bf16(spec["precision"], device), use_channels_last(spec["channels_last"], device)
    compiled = use_compile(spec["compile"], device, spec["max_iters"])
    model = ResNet(m, num_classes, spec["bn_batch"]).to(device, memory_format=memory_format(cl))
    # weight decay on every parameter, as the paper's Caffe/Torch set-ups did
    opt = make_sgd(
        model.parameters(), device, lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
    )
    lr = LearningRate(spec)
    graphed = use_cuda_graph(device, m.family, parallel.WORLD.size)
    step = Step(model, opt, device, bf16, cl, compiled, count_warm=lr.warmup is not None, graph=graphed)
    return step, lr


def read_checkpoint(path, spec):
    """The checkpoint at `path`, or None where there is none; refused if trained with another spec."""
    if not path.exists():
        return None
    ckpt = load_torch(path)
    if ckpt["spec"] != spec:
        changed = sorted(k for k in set(spec) | set(ckpt["spec"]) if spec.get(k) != ckpt["spec"].get(k))
        raise ReproError(
            f"{path} was trained with a different spec (differs in: {', '.join(changed)}); "
            f"use another output directory or drop --resume"
        )
    return ckpt


def restore(ckpt, step, lr, batches, seed):
    """Put the training back where the checkpoint left it. Returns (history rows, iteration,
    elapsed_s, the number of processes that wrote it)."""
    world = parallel.WORLD
    step.model.load_state_dict(ckpt["model"])
    step.opt.load_state_dict(ckpt["optimizer"])
    lr.load_state_dict(ckpt["lr"])
    batches.load_state_dict(ckpt["batches"])
    iteration = ckpt["iteration"]
    aug_states = ckpt.get("aug_states", [ckpt["batches"]["aug_gen"]])
    if len(aug_states) == world.size:
        batches.aug_gen.set_state(aug_states[world.rank])
    else:  # another number of processes than the checkpoint's: fresh augmentation randomness
        batches.aug_gen.manual_seed(aug_seed(seed, world.rank) + 1_000_003 * iteration)
    if world.main:  # the sums in the checkpoint are over all processes
        step.acc.copy_(ckpt["acc"])
        step.warm.copy_(ckpt["warm"])
    torch.set_rng_state(ckpt["torch_rng"])
    return ckpt["history"], iteration, ckpt["elapsed_s"], len(aug_states)


class Checkpoints:
    """OUT/checkpoint.pt: everything an exact resume needs (the keys stay as they are: old checkpoints
    must resume). Keeps the time of the last one for the wall-time checkpoints (spec
    checkpoint_minutes), besides the ones every checkpoint_every iterations."""

    def __init__(self, path, spec, data, num_classes):
        self.path, self.spec, self.data, self.num_classes = path, spec, data, num_classes
        self.seconds = 60 * (spec.get("checkpoint_minutes") or 0)
        self.saved_at = time.monotonic()

    def save(self, step, lr, history, iteration, done=False):
        """Every process calls this at the same iteration; process 0 writes, the others wait for it
        (torchrun stops all processes when one exits, so none may leave before the file is there)."""
        aug_states = parallel.gathered(self.data.batches.aug_gen.get_state())
        acc_all, warm_all = parallel.summed(step.acc), parallel.summed(step.warm)
        if parallel.WORLD.main:
            save_torch(
                {
                    "spec": self.spec,
                    "model": step.model.state_dict(),
                    "optimizer": step.opt.state_dict(),
                    "lr": lr.state_dict(),
                    "batches": self.data.batches.state_dict(),
                    "aug_states": aug_states,
                    "history": history.rows,
                    "iteration": iteration,
                    "elapsed_s": history.elapsed,
                    "acc": acc_all.cpu(),
                    "warm": warm_all.cpu(),
                    "torch_rng": torch.get_rng_state(),
                    "mean": self.data.mean.cpu(),
                    "num_classes": self.num_classes,
                    "classes": self.data.classes,
                    "world_size": parallel.WORLD.size,
                    "done": done,
                    "precision": precision_name(step.bf16),
                },
                self.path,
            )
        parallel.barrier()
        self.saved_at = time.monotonic()

    def wall_time_due(self, iteration, device):
        """checkpoint_minutes since the last checkpoint, agreed by all processes (checked every
        STOP_CHECK_EVERY iterations with DDP, like the stop signal)."""
        if not self.seconds or (parallel.WORLD.active and iteration % STOP_CHECK_EVERY):
            return False
        return parallel.any_true(time.monotonic() - self.saved_at >= self.seconds, device)


class StopFlag:
    """A stop signal (Slurm's pre-emption and time-limit warnings) or stop_at, agreed by all
    processes. The signal handlers are installed for a `with` block (where the main thread runs it)."""

    def __init__(self, stop_at, max_iters, device):
        self.stop_at, self.max_iters, self.device = stop_at, max_iters, device
        self.signal, self.handlers = None, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in STOP_SIGNALS:
                self.handlers[s] = signal.signal(s, self.on_signal)
        return self

    def on_signal(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for s, h in self.handlers.items():
            signal.signal(s, h)

    def requested(self, iteration):
        """With DDP the processes compare flags every STOP_CHECK_EVERY iterations (a collective per
        step would cost a synchronisation)."""
        if self.stop_at is not None and self.stop_at <= iteration < self.max_iters:
            return True
        if parallel.WORLD.active and iteration % STOP_CHECK_EVERY:
            return False
        return parallel.any_true(self.signal is not None, self.device)

    def why(self, iteration):
        if self.signal:
            return f"signal {signal.Signals(self.signal).name}"
        if self.stop_at is not None and iteration >= self.stop_at:
            return f"stop_at={self.stop_at}"
        return "a signal to another process"


class History:
    """The rows of history.csv, one every log_every iterations: the sums Step keeps on the device,
    the evaluation, the throughput of the window since the last row (training only) and the elapsed
    time (evaluation included, over every resume). Process 0 writes the file and the live MLflow rows."""

    def __init__(self, rows, elapsed, out_dir, live):
        self.rows, self.elapsed, self.out_dir, self.live = rows, elapsed, out_dir, live
        self.start()

    def start(self):
        self.t0 = time.perf_counter()
        self.new_window()

    def new_window(self):
        self.window_start, self.images, self.window_iters = time.perf_counter(), 0, 0

    def count(self, images):
        self.images += images
        self.window_iters += 1

    def record(self, iteration, step, data, eval_bf16):
        """Append the row at `iteration` (evaluating the model now); every process calls this."""
        train_time = time.perf_counter() - self.window_start
        loss_sum, wrong_sum, count = parallel.summed(step.acc).tolist()
        step.acc.zero_()
        test_loss, test_error, holdout_error = data.evaluate(step.model, eval_bf16, step.channels_last)
        self.elapsed += time.perf_counter() - self.t0
        self.t0 = time.perf_counter()
        self.seconds_per_iter = train_time / self.window_iters
        row = {
            "iteration": iteration,
            "epoch": data.batches.epoch,
            "lr": step.opt.param_groups[0]["lr"],
            "train_loss": loss_sum / count,
            "train_error": 100.0 * wrong_sum / count,
            "test_loss": test_loss,
            "test_error": test_error,
            "holdout_error": "" if data.holdout is None else holdout_error,
            "images_per_s": self.images / train_time,
            "elapsed_s": self.elapsed,
        }
        self.rows.append(row)
        if parallel.WORLD.main:
            write_text(self.out_dir / HISTORY, history_csv(self.rows))
        if self.live:
            self.live.row(row, LIVE_METRICS)
        return row


def progress_line(spec, row, data, seconds_per_iter):
    eta = (spec["max_iters"] - row["iteration"]) * seconds_per_iter
    return (
        f"[{spec['model']}] it {row['iteration']}/{spec['max_iters']} lr {row['lr']:.4g} "
        f"loss {row['train_loss']:.3f} train {row['train_error']:.2f}% {data.test_split} {row['test_error']:.2f}% "
        + ("" if data.holdout is None else f"held-out {row['holdout_error']:.2f}% ")
        + f"| {row['images_per_s']:.0f} img/s | ETA {_fmt_time(eta)}"
    )


def check_finite(step, iteration, spec):
    if parallel.any_true(not math.isfinite(step.acc[0].item()), step.device):
        raise Diverged(
            f"[{spec['model']}] training diverged (loss is {step.acc[0].item()}) by iteration {iteration}; "
            f"lower the learning rate or use a warm-up (last checkpoint kept)"
        )


def check_warmup(step, lr, iteration, spec, log):
    """At a warm-up check: the training error since the last check ends the warm-up, or its cap does."""
    w = parallel.summed(step.warm).tolist()
    step.warm.zero_()
    train_error = 100.0 * w[0] / w[1]
    ended = lr.observe_train_error(iteration, train_error)
    if ended == "train_error":
        log(
            f"[{spec['model']}] warm-up over at iteration {iteration} "
            f"(training error {train_error:.1f}% < {lr.warmup['until_train_error']}%)"
        )
    elif ended == "cap":
        log(f"[{spec['model']}] warning: {warmup_capped(lr.warmup, lr.warmup_end)}")


def train_loop(spec, step, lr, data, history, checkpoints, stop, iteration, eval_bf16, log):
    """Train from `iteration` to max_iters: a history row every log_every iterations, a checkpoint
    every checkpoint_every iterations and every checkpoint_minutes, and one before leaving on a stop."""
    max_iters, name, world = spec["max_iters"], f"[{spec['model']}]", parallel.WORLD
    step.model.train()
    set_lr(step.opt, lr.at(iteration))
    history.start()
    while iteration < max_iters:
        x, y = data.batches.next()
        step(x, y)
        iteration += 1
        history.count(len(y) * world.size)
        if lr.warmup_check_due(iteration):
            check_warmup(step, lr, iteration, spec, log)
        if iteration % spec["log_every"] == 0 or iteration == max_iters:
            check_finite(step, iteration, spec)
            row = history.record(iteration, step, data, eval_bf16)
            if data.holdout is not None and lr.observe_holdout_error(iteration, row["holdout_error"]):
                log(
                    f"{name} held-out training error plateaued ({row['holdout_error']:.2f}%, best "
                    f"{lr.best:.2f}%): lr / 10 at iteration {iteration}"
                )
            log(progress_line(spec, row, data, history.seconds_per_iter))
            history.new_window()
        set_lr(step.opt, lr.at(iteration))
        if iteration % spec["checkpoint_every"] == 0 and iteration < max_iters:
            check_finite(step, iteration, spec)
            checkpoints.save(step, lr, history, iteration)
        if iteration < max_iters and checkpoints.wall_time_due(iteration, step.device):
            check_finite(step, iteration, spec)
            checkpoints.save(step, lr, history, iteration)
            log(f"{name} checkpoint at iteration {iteration} ({spec['checkpoint_minutes']} minutes since the last)")
        if stop.requested(iteration):
            check_finite(step, iteration, spec)
            checkpoints.save(step, lr, history, iteration)
            raise Interrupted(
                f"{name} stopped at iteration {iteration} by {stop.why(iteration)}; "
                f"checkpoint written, rerun with --resume to continue"
            )
    return iteration


def train(spec, out_dir, resume=False, log=None, stop_at=None, tracking=(None, None)):
    """_train() under the run directory's lock (runlock.RunLock, taken by process 0 before any
    expensive work): a second copy of the same training fails at once with RunLocked."""
    if not parallel.WORLD.main:
        return _train(spec, out_dir, resume, log, stop_at, tracking)
    with runlock.RunLock(out_dir):
        return _train(spec, out_dir, resume, log, stop_at, tracking)


def check_batch_split(spec):
    """Fails early if the batch does not split over the processes, or a process's share over bn_batch."""
    local_batch = parallel.local_batch_size(spec["batch_size"])
    if spec["bn_batch"] and local_batch > spec["bn_batch"] and local_batch % spec["bn_batch"]:
        raise ReproError(
            f"the batch of each of {parallel.WORLD.size} processes ({local_batch}) is not a multiple "
            f"of bn_batch {spec['bn_batch']}"
        )


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
    ckpt = read_checkpoint(out_dir / CHECKPOINT, spec) if resume else None
    if world.main:
        write_text(out_dir / SPEC, yaml.safe_dump(spec, sort_keys=False))
    check_batch_split(spec)
    device = parallel.start(resolve_device(spec["device"]))
    # the test-error curve is a reported number: fp32 by default, whichever precision trains
    eval_bf16 = use_bf16(spec.get("eval_precision", "fp32"), device)
    configure(device)
    torch.manual_seed(spec["seed"])

    data = open_data(spec, device, world)
    num_classes = spec.get("num_classes") or len(data.classes)
    step, lr = make_training(spec, device, num_classes)
    rows, iteration, elapsed = [], 0, 0.0
    if ckpt is not None:
        rows, iteration, elapsed, processes = restore(ckpt, step, lr, data.batches, spec["seed"])
        log(
            f"[{spec['model']}] resumed from {out_dir / CHECKPOINT} at iteration {iteration}"
            + (f" ({processes} process(es) then, {world.size} now)" if processes != world.size else "")
        )
    reset_peak_memory(device)
    live = LiveRun.start(out_dir, spec, *tracking, resume=ckpt is not None, log=log) if world.main else None
    checkpoints = Checkpoints(out_dir / CHECKPOINT, spec, data, num_classes)
    history = History(rows, elapsed, out_dir, live)
    try:
        with StopFlag(stop_at, spec["max_iters"], device) as stop:
            iteration = train_loop(spec, step, lr, data, history, checkpoints, stop, iteration, eval_bf16, log)
    except Interrupted:
        if live:
            live.end("KILLED")
        raise
    except BaseException:
        if live:
            live.end("FAILED")
        raise
    checkpoints.save(step, lr, history, iteration, done=True)
    parallel.finish()
    if not world.main:
        return None
    write_text(out_dir / HISTORY, history_csv(history.rows))
    save_model(out_dir / MODEL, spec, step, data, num_classes, iteration, history.rows)
    metrics = final_metrics(spec, step, lr, data, history, iteration, eval_bf16)
    write_json(out_dir / METRICS, metrics)
    if live:
        live.end("FINISHED")
    return metrics


def save_model(path, spec, step, data, num_classes, iteration, rows):
    """The final model, without optimizer state: what evaluation and analysis read."""
    save_torch(
        {
            "spec": spec,
            "model": step.model.state_dict(),
            "iteration": iteration,
            "mean": data.mean.cpu(),
            "num_classes": num_classes,
            "classes": data.classes,
            "history": rows,
            "precision": precision_name(step.bf16),
        },
        path,
    )


def final_metrics(spec, step, lr, data, history, iteration, eval_bf16):
    last, device = history.rows[-1], step.device
    metrics = {
        "model": spec["model"],
        "iterations": iteration,
        "params": count_params(step.model),
        "train_error": last["train_error"],
        "test_error": last["test_error"],
        "test_split": data.test_split,
        "train_loss": last["train_loss"],
        "elapsed_s": history.elapsed,
        # the images trained on, tested on (the test curve's split) and held out for the plateau rule
        **data.sizes(),
        # the median window: robust to the first one, which includes warm-up (and compiling)
        "images_per_s": statistics.median(h["images_per_s"] for h in history.rows),
        "device": str(device),
        "processes": parallel.WORLD.size,
        # the arithmetic actually used (precision: auto resolves per device)
        "precision": precision_name(step.bf16),
        "eval_precision": precision_name(eval_bf16),
        "tf32": tf32_in_use(device),
        "channels_last": step.channels_last,
        "compile": step.compiled,
        "cuda_graph": step.graph,
        # how the warm-up ended (null without one) and the iterations of plateau drops
        "warmup": lr.warmup_end,
        "lr_drops": lr.drops if data.holdout is not None else None,
        "warnings": [warmup_capped(lr.warmup, lr.warmup_end)] if (lr.warmup_end or {}).get("by") == "cap" else [],
    }
    metrics["s_per_1k_iters"] = 1000 * spec["batch_size"] / metrics["images_per_s"]
    metrics["peak_memory_mb"] = peak_memory_mb(device)
    return metrics
