"""The checks `resnet-repro doctor` runs, in order: each a function of the run's context that returns
its line's detail, raises Skip (with why) or fails; `needs` names the checks that must be ok first."""

import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import resnet_repro
from resnet_repro.files import load_torch
from resnet_repro.preflight.fixtures import fresh_compiler, gflops, metrics_history, write_jpegs
from resnet_repro.rundir import CHECKPOINT, MODEL


class Skip(Exception):
    """A check that cannot run here; the message says why."""


@dataclass
class Context:
    """What the checks share: the device and settings, the sizes they run at, and what earlier checks
    made (runs: {family: (run dir, metrics, log)}; ips: {model: images/s})."""

    device: object
    compile_setting: str
    config: str
    work: Path
    size: dict
    out: object = print
    runs: dict = field(default_factory=dict)
    ips: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Check:
    name: str
    function: object  # function(ctx) -> the detail of its line
    needs: tuple = ()  # checks that must be ok before this one runs (else it is skipped, saying which)


def paper_compile(ctx, family):
    """What `auto` picks for a paper-length run of this family (the settings the GPU-hours go to)."""
    from resnet_repro.device import use_compile

    setting = ctx.compile_setting
    if setting == "auto":
        return use_compile("auto", ctx.device, 64000 if family == "cifar" else 600000)
    return use_compile(setting == "true", ctx.device)


COPY = "-copy"  # the name of a training JPEG linked again, to make an epoch 40 batches long


def jpeg_folder(ctx):
    """Generated JPEGs, the training files linked again until an epoch holds 40 batches: a timing over
    epochs of a few batches measures the DataLoader's start-up, not the pipeline."""
    folder = ctx.work / "jpegs"
    if not (folder / "val").is_dir():
        s = ctx.size
        write_jpegs(folder, s["jpeg_train"], s["jpeg_val"], s["classes"], s["jpeg_size"])
        files = sorted((folder / "train").rglob("*.jpg"))
        for k in range(1, -(-40 * s["imagenet_batch"] // len(files))):
            for f in files:
                again = f.with_name(f"{f.stem}{COPY}{k}.jpg")
                try:
                    os.link(f, again)
                except OSError:  # a file system without hard links
                    shutil.copyfile(f, again)
    return folder


def device_check(ctx):
    import torch

    from resnet_repro.data.decode import jpeg_decoder
    from resnet_repro.device import describe, use_bf16, use_channels_last, use_cuda_graph

    d = ctx.device
    extra = ""
    if d.type == "cuda":
        extra = (
            f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
            f"{torch.cuda.device_count()} GPU(s) visible"
        )
    return (
        f"{describe(d)}; torch {torch.__version__}{extra}; auto: {'bf16' if use_bf16('auto', d) else 'fp32'}, "
        f"{'channels_last' if use_channels_last('auto', d) else 'NCHW'}, "
        f"compile {paper_compile(ctx, 'cifar')}, CUDA graph (CIFAR nets) {use_cuda_graph(d, 'cifar')}, "
        f"JPEG decoder {jpeg_decoder()}"
    )


def jpeg_decode(ctx):
    import torch

    from resnet_repro.data import decode as data_decode

    folder = jpeg_folder(ctx)
    files = [f for f in sorted((folder / "train").rglob("*.jpg")) if COPY not in f.stem][:16]
    encoded = [data_decode.read_bytes(f) for f in files]
    library = data_decode.jpeg_decoder()
    t = time.perf_counter()
    images = data_decode.decode_on_device(encoded, ctx.device)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    took = time.perf_counter() - t
    reference = [data_decode._decode_pil(e) for e in encoded]
    worst = 0.0
    for img, ref in zip(images, reference):
        if img.device.type != ctx.device.type or img.dtype != torch.uint8 or img.shape != ref.shape:
            raise AssertionError(
                f"decoded {tuple(img.shape)} {img.dtype} on {img.device}, expected "
                f"{tuple(ref.shape)} uint8 on {ctx.device.type}"
            )
        worst = max(worst, (img.cpu().float() - ref.float()).abs().mean().item())
    if worst > 5.0:  # nvJPEG upsamples chroma and rounds the IDCT its own way: about 2 levels
        raise AssertionError(f"decoded images differ from PIL's by {worst:.2f} levels on average")
    where = (
        "nvJPEG on the GPU"
        if ctx.device.type == "cuda" and library == "torchcodec"
        else ("on the CPU (the CPU twin of nvJPEG)" if library == "torchcodec" else "PIL on the CPU")
    )
    return (
        f"{len(files)} JPEGs of {ctx.size['jpeg_size'][0]}x{ctx.size['jpeg_size'][1]} decoded by {library}, "
        f"{where}, in {took * 1000:.0f} ms (first call); mean difference from PIL {worst:.2f} levels"
    )


def cifar_train(ctx):
    from resnet_repro.spec.build import build_spec
    from resnet_repro.training.loop import Interrupted, train

    s, iters = ctx.size, ctx.size["cifar_iters"]
    spec = build_spec(
        None,
        [
            {
                "model": "resnet56",
                "data": {"kind": "digits", "image_size": 32},
                "batch_size": s["cifar_batch"],
                "max_iters": iters,
                "log_every": iters // 4,
                "checkpoint_every": iters,
                "schedule": {"kind": "multistep", "milestones": [iters * 3 // 4]},
                "compile": paper_compile(ctx, "cifar"),
                "device": str(ctx.device),
            }
        ],
    )
    out = ctx.work / "cifar"
    log = []
    t = time.perf_counter()
    try:
        fresh_compiler()
        train(spec, out, stop_at=iters // 2, log=log.append)
        raise AssertionError(f"train(stop_at={iters // 2}) did not stop")
    except Interrupted:
        pass
    fresh_compiler()  # as a resumed job starts: nothing compiled yet
    metrics = train(spec, out, resume=True, log=log.append)
    took = time.perf_counter() - t
    ctx.runs["cifar"] = (out, metrics, log)
    if not math.isfinite(metrics["train_loss"]):
        raise AssertionError(f"training loss is {metrics['train_loss']}")
    return (
        f"resnet56, batch {s['cifar_batch']}, {iters} iterations in {took:.0f}s (compiling included), "
        f"{metrics['precision']}, {'channels_last' if metrics['channels_last'] else 'NCHW'}, "
        f"compile {metrics['compile']}, CUDA graph {metrics['cuda_graph']}; loss {metrics['train_loss']:.3f}"
    )


def checkpoint_resume(ctx):
    out, metrics, log = ctx.runs["cifar"]
    iters = ctx.size["cifar_iters"]
    resumed = [line for line in log if "resumed from" in line]
    if not resumed or f"iteration {iters // 2}" not in resumed[0]:
        raise AssertionError(f"the run did not resume at iteration {iters // 2}: {resumed or 'no resume line'}")
    ckpt = load_torch(out / CHECKPOINT)
    iterations = [row["iteration"] for row in ckpt["history"]]
    if not (ckpt["done"] and ckpt["iteration"] == iters and iterations == sorted(set(iterations))):
        raise AssertionError(
            f"checkpoint after resume: iteration {ckpt['iteration']}, done {ckpt['done']}, history at {iterations}"
        )
    return f"stopped at {iters // 2} with a checkpoint, resumed there, finished at {iters}; history {iterations}"


def cifar_speed(ctx):
    from resnet_repro.preflight.estimate import measure
    from resnet_repro.spec.build import build_spec

    s = ctx.size
    spec = build_spec(None, [{"model": "resnet56", "compile": paper_compile(ctx, "cifar")}])
    fresh_compiler()
    ips = measure(spec, ctx.device, iters=s["speed_iters"], warmup=s["speed_warmup"], batch_size=s["cifar_batch"])
    ctx.ips["resnet56"] = ips
    per_run = 64000 * 128 / ips / 3600
    return (
        f"resnet56 {ips:.0f} images/s (trainer's step, batch {s['cifar_batch']}, 32x32, "
        f"{s['speed_iters']} timed iterations): {per_run:.2f} h for the paper's 64k iterations of 128"
    )


def imagenet_train(ctx):
    from resnet_repro.spec.build import build_spec
    from resnet_repro.training.loop import train

    s = ctx.size
    folder = jpeg_folder(ctx)
    iters = s["imagenet_iters"]
    spec = build_spec(
        None,
        [
            {
                "model": "resnet50",
                "num_classes": 1000,
                "data": {
                    "kind": "imagefolder",
                    "root": str(folder),
                    "scale": s["scale"],
                    "crop": s["crop"],
                    "test_size": s["test_size"],
                    "mean_images": 64,
                    "workers": s["workers"],
                    "decode": "auto",
                },
                "batch_size": s["imagenet_batch"],
                "max_iters": iters,
                "log_every": s["imagenet_log"],
                "checkpoint_every": iters,
                "eval_batch_size": 8,
                "compile": paper_compile(ctx, "imagenet"),
                "device": str(ctx.device),
            }
        ],
    )
    from resnet_repro.data import decode as data_decode
    from resnet_repro.data import stream

    decode = data_decode.decode_where("auto", stream.stream_datasets("imagefolder", folder)[0], ctx.device)
    out = ctx.work / "imagenet"
    t = time.perf_counter()
    fresh_compiler()
    log = []
    try:
        metrics = train(spec, out, log=log.append)
    finally:
        for line in log:
            ctx.out(f"         | {line}")
    took = time.perf_counter() - t
    ctx.runs["imagenet"] = (out, metrics, None)
    windows = [row["images_per_s"] for row in metrics_history(out)][1:]  # the first window compiles
    ips = statistics.median(windows) if windows else metrics["images_per_s"]
    ctx.ips["resnet50"] = ips
    w, h = s["jpeg_size"]
    return (
        f"resnet50 {ips:.0f} images/s from {w}x{h} JPEG files (decoded in the {decode}; "
        f"batch {s['imagenet_batch']}, {s['crop']}px crops, {s['workers']} loader workers; median of "
        f"{len(windows)} windows of {s['imagenet_log']} iterations after the first), {took:.0f}s in all, "
        f"{metrics['precision']}, compile {metrics['compile']}"
    )


def evaluate(ctx, run, view):
    from resnet_repro.evaluation.evaluate import evaluate_checkpoint

    out, _, _ = ctx.runs[run]
    scales = ctx.size["scales"]
    m = evaluate_checkpoint(
        out / MODEL,
        ctx.work / f"eval-{run}-{view}",
        [view],
        scales,
        str(ctx.device),
        batch_size=50,
        workers=min(2, ctx.size["workers"]),
    )
    r = m["views"][view]
    if not 0 <= r["top1_error"] <= 100:
        raise AssertionError(f"top-1 error {r['top1_error']}")
    return f"{run} checkpoint, {r['n']} images: top-1 error {r['top1_error']:.1f}%" + (
        f" (scales {scales})" if view == "multiscale" else ""
    )


def ddp(ctx):
    import torch

    env = dict(os.environ)
    src = str(Path(resnet_repro.__file__).resolve().parents[1])  # the package's parent: src/
    env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p])
    if ctx.device.type == "cuda":
        n = torch.cuda.device_count()
        if n < 2:
            return ddp_one_gpu(ctx)
        backend = f"NCCL over {n} GPUs"
    else:
        n, backend = 2, "gloo over 2 CPU processes (the CPU twin of NCCL)"
        env["OMP_NUM_THREADS"] = "1"
    out = ctx.work / "ddp"
    iters = 6
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]
    train = "-m resnet_repro train --model resnet20 --data digits --image-size 32 --log-every 3 --milestones 100"
    cmd = torchrun + train.split() + ["--max-iters", str(iters), "--checkpoint-every", str(iters)]
    cmd += ["--batch-size", str(16 * n), "--device", ctx.device.type, "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if r.returncode != 0:
        lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error:" in line]
        raise AssertionError(f"torchrun exited {r.returncode}: {(errors or lines or ['no output'])[-1]}")
    ckpt = load_torch(out / CHECKPOINT)
    if ckpt["world_size"] != n or ckpt["iteration"] != iters:
        raise AssertionError(f"checkpoint of {ckpt['world_size']} processes at iteration {ckpt['iteration']}")
    return f"torchrun, {n} processes, {backend}: {iters} DDP steps of resnet20 and a checkpoint"


def ddp_one_gpu(ctx):
    """One GPU: a one-process NCCL group, the DDP-wrapped model and one step, so NCCL and DDP are
    exercised; gradient all-reduce across GPUs needs a node with two or more."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from resnet_repro.models import build_model

    dist.init_process_group(
        "nccl", store=dist.HashStore(), rank=0, world_size=1, device_id=torch.device("cuda", ctx.device.index or 0)
    )
    try:
        model = build_model("resnet20").to(ctx.device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[ctx.device.index or 0])
        x = torch.randn(32, 3, 32, 32, device=ctx.device)
        y = torch.randint(0, 10, (32,), device=ctx.device)
        F.cross_entropy(ddp(x), y).backward()
        t = torch.ones(1, device=ctx.device)
        dist.all_reduce(t)
        torch.cuda.synchronize(ctx.device)
        if t.item() != 1.0:
            raise AssertionError(f"all_reduce over one process gave {t.item()}")
    finally:
        dist.destroy_process_group()
    return (
        "one GPU visible: NCCL process group of one, a DDP forward/backward and an all-reduce ran; "
        "torchrun across GPUs needs a node with 2+ (run doctor with all of the node's GPUs)"
    )


def estimate_check(ctx):
    from resnet_repro.paper.names import parse_model_name
    from resnet_repro.preflight.estimate import estimate, load_plan, runs_for

    if not Path(ctx.config).exists():
        raise Skip(f"no workflow config {ctx.config} here (run doctor from the project's directory, or --config)")
    plan = load_plan(ctx.config, "paper")
    models = sorted({m for m, _ in runs_for(plan, ["all"])})
    flops = {m: gflops(m) for m in set(models) | {"resnet56", "resnet50"}}
    base = {"cifar": ("resnet56", ctx.ips.get("resnet56")), "imagenet": ("resnet50", ctx.ips.get("resnet50"))}
    given, scaled = [], []
    for m in models:
        ref, ips = base[parse_model_name(m).family]
        if ips is None:
            continue
        given.append(f"{m}={ips if m == ref else ips * flops[ref] / flops[m]}")
        if m != ref:
            scaled.append(m)
    lines = []
    r = estimate(["all"], ctx.config, "paper", given=given, log=lines.append)
    for line in lines:
        ctx.out(f"         | {line}")
    missing = "" if ctx.ips.get("resnet50") else " (ImageNet-family models not priced: imagenet-train did not run)"
    if ctx.device.type == "cpu":
        missing += f"; on a CPU resnet50 was timed on {ctx.size['crop']}px crops, not 224"
    return (
        f"paper preset, all: {r['total_hours']:.4g} {'GPU' if ctx.device.type == 'cuda' else 'device'}-hours "
        f"from resnet56 and resnet50 as measured above, the other models scaled by their GFLOPs{missing}"
    )


CHECKS = (
    Check("device", device_check),
    Check("jpeg-decode", jpeg_decode),
    Check("cifar-train", cifar_train),
    Check("checkpoint-resume", checkpoint_resume, needs=("cifar-train",)),
    Check("cifar-speed", cifar_speed),
    Check("imagenet-train", imagenet_train),
    Check("eval-single", partial(evaluate, run="cifar", view="single"), needs=("cifar-train",)),
    Check("eval-center", partial(evaluate, run="imagenet", view="center"), needs=("imagenet-train",)),
    Check("eval-tencrop", partial(evaluate, run="imagenet", view="tencrop"), needs=("imagenet-train",)),
    Check("eval-multiscale", partial(evaluate, run="imagenet", view="multiscale"), needs=("imagenet-train",)),
    Check("ddp", ddp),
    Check("estimate", estimate_check, needs=("cifar-speed",)),
)
