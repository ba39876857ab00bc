"""Iteration-based SGD training with the paper's schedules, a history every K iterations,
atomic checkpoints and exact resume.

Read train_loop() first: the loop, then _train(), which sets it up. Around them, each concept in one
module: the data paths and their batches (batches.py), the learning rate (schedule.py), the model with
its optimizer and step (step.py: make_training, which `resnet-repro estimate` times too), Checkpoints
(saving, and the wall-time checkpoints) with read_checkpoint/restore (checkpoints.py), History
(history.csv rows and live MLflow rows: history.py); here, StopFlag (signals and stop_at)."""

import math
import signal
import statistics
import sys
import threading
from pathlib import Path

import torch
import yaml

from resnet_repro.device import (
    configure,
    peak_memory_mb,
    precision_name,
    reset_peak_memory,
    resolve_device,
    tf32_in_use,
    use_bf16,
)
from resnet_repro.errors import ReproError
from resnet_repro.files import write_json, write_text
from resnet_repro.models import count_params
from resnet_repro.rundir import CHECKPOINT, HISTORY, METRICS, MODEL, SPEC
from resnet_repro.tracking.live import LiveRun
from resnet_repro.training import parallel, runlock
from resnet_repro.training.batches import open_data
from resnet_repro.training.checkpoints import STOP_CHECK_EVERY, Checkpoints, read_checkpoint, restore, save_model
from resnet_repro.training.history import History, history_csv, progress_line
from resnet_repro.training.schedule import warmup_capped
from resnet_repro.training.step import make_training, set_lr

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # Slurm's pre-emption and time-limit warnings


class Diverged(ReproError):
    pass


class Interrupted(ReproError):
    pass


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
