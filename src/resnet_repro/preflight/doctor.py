"""`resnet-repro doctor`: before the GPU-hours are spent, run every code path the pipeline will use
on this node, briefly and for real, with the settings `auto` picks here.

    srun --gpus=8 resnet-repro doctor          # on one GPU node of the cluster (or: make doctor)

Checks, one line each (ok / failed: the error / skipped: why):
  device            the device, torch and the `auto` choices (precision, layout, compile, CUDA graph)
  jpeg-decode       the training path's JPEG decoder on this device (TorchCodec: nvJPEG on CUDA) against the CPU's
  cifar-train       training.loop.train of ResNet-56 at CIFAR's shapes (32x32, batch 128 on a GPU) on the bundled digits,
                    stopped half-way by stop_at (a checkpoint), then resumed to the end
  checkpoint-resume the resumed run continued from the checkpoint's iteration and finished
  cifar-speed       images/s of the trainer's step for ResNet-56 (estimate.measure, synchronised)
  imagenet-train    training.loop.train of ResNet-50 at ImageNet's shapes from generated JPEG files (224 crops of
                    ~500x375 images, batch 256 on a GPU): loader, decoding, augmentation and step timed together
  eval-single, eval-center, eval-tencrop, eval-multiscale
                    every evaluation view on the two trained checkpoints (evaluate.evaluate_checkpoint)
  ddp               one DDP training step under torchrun over every visible GPU (NCCL); on a CPU, 2 processes (gloo)
  estimate          the GPU-hours `resnet-repro estimate all` derives from the measured images/s

On a CPU the same checks run at tiny sizes (their CPU twins); what needs a GPU is named in the
check's line. The exit status is 2 if any check failed (the command's one-line error says so).
"""

import tempfile
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

from resnet_repro.preflight import checks
from resnet_repro.preflight.checks import Context, Skip
from resnet_repro.preflight.fixtures import sizes


def run_check(ctx, check, results, show_traceback=False):
    """One check, reported on one line: ok, skipped (why) or failed (the error's first line); the next
    checks run whatever this one did."""
    t = time.perf_counter()
    try:
        missing = [n for n in check.needs if results.get(n) != "ok"]
        if missing:
            raise Skip(f"needs {missing[0]}, which {results.get(missing[0], 'did not run')}")
        detail, status = check.function(ctx), "ok"
    except Skip as e:
        status, detail = "skipped", str(e)
    except Exception as e:  # noqa: BLE001 (every failure is reported on its line; the others still run)
        status = "failed"
        msg = str(e).strip().splitlines()
        detail = f"{e.__class__.__name__}: {msg[0] if msg else ''}"[:400]
        if show_traceback:
            traceback.print_exc()
    results[check.name] = status
    sep = ": " if status != "ok" else " "
    ctx.out(f"{status:<8} {check.name:<18}{sep}{detail} [{time.perf_counter() - t:.1f}s]")


def run(ctx, show_traceback=False):
    """Every check of checks.CHECKS in order; returns {check: ok|failed|skipped}."""
    ctx.work.mkdir(parents=True, exist_ok=True)
    results = {}
    for check in checks.CHECKS:
        run_check(ctx, check, results, show_traceback)
    failed = [n for n, s in results.items() if s == "failed"]
    skipped = [n for n, s in results.items() if s == "skipped"]
    for model, ips in ctx.ips.items():
        ctx.out(f"measured: {model} {ips:.0f} images/s on {ctx.device}")
    ctx.out(
        f"doctor: {len(results) - len(failed) - len(skipped)} ok, {len(failed)} failed"
        + (f" ({', '.join(failed)})" if failed else "")
        + f", {len(skipped)} skipped"
        + (f" ({', '.join(skipped)})" if skipped else "")
    )
    return results


def doctor(device="auto", compile="auto", out=print, show_traceback=False, config="config.yaml", work=None):
    """Run every check; returns {check: ok|failed|skipped}."""
    from resnet_repro.device import resolve_device  # torch: imported when doctor runs, not with the CLI

    d = resolve_device(device)
    place = nullcontext(work) if work is not None else tempfile.TemporaryDirectory(prefix="resnet-repro-doctor-")
    with place as folder:
        return run(Context(d, compile, config, Path(folder), sizes(d), out), show_traceback)
