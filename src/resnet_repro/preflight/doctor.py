"""`resnet-repro doctor`: before the GPU-hours are spent, run every code path the pipeline will use
on this node, briefly and for real, with the settings `auto` picks here.

    srun --gpus=8 resnet-repro doctor          # on one GPU node of the cluster (or: make doctor)

Checks, one line each (ok / failed: the error / skipped: why):
  device            the device, torch and the `auto` choices (precision, layout, compile, CUDA graph)
  jpeg-decode       the training path's JPEG decoder on this device (TorchCodec: nvJPEG on CUDA) against the CPU's
  cifar-train       train.train of ResNet-56 at CIFAR's shapes (32x32, batch 128 on a GPU) on the bundled digits,
                    stopped half-way by stop_at (a checkpoint), then resumed to the end
  checkpoint-resume the resumed run continued from the checkpoint's iteration and finished
  cifar-speed       images/s of the trainer's step for ResNet-56 (estimate.measure, synchronised)
  imagenet-train    train.train of ResNet-50 at ImageNet's shapes from generated JPEG files (224 crops of
                    ~500x375 images, batch 256 on a GPU): loader, decoding, augmentation and step timed together
  eval-single, eval-center, eval-tencrop, eval-multiscale
                    every evaluation view on the two trained checkpoints (evaluate.evaluate_checkpoint)
  ddp               one DDP training step under torchrun over every visible GPU (NCCL); on a CPU, 2 processes (gloo)
  estimate          the GPU-hours `resnet-repro estimate all` derives from the measured images/s

On a CPU the same checks run at tiny sizes (their CPU twins); what needs a GPU is named in the
check's line. The exit status is 1 if any check failed.
"""

import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import resnet_repro
from resnet_repro.files import load_torch
from resnet_repro.rundir import CHECKPOINT, HISTORY, MODEL

CHECKS = (
    "device",
    "jpeg-decode",
    "cifar-train",
    "checkpoint-resume",
    "cifar-speed",
    "imagenet-train",
    "eval-single",
    "eval-center",
    "eval-tencrop",
    "eval-multiscale",
    "ddp",
    "estimate",
)


class Skip(Exception):
    """A check that cannot run here; the message says why."""


def sizes(device):
    """How much each check does: the paper's shapes on a GPU, tiny ones on a CPU."""
    if device.type == "cuda":
        return {
            "cifar_batch": 128,
            "cifar_iters": 60,
            "speed_iters": 50,
            "speed_warmup": 10,
            "jpeg_size": (500, 375),
            "jpeg_train": 1024,
            "jpeg_val": 16,
            "classes": 4,
            "scale": [256, 480],
            "crop": 224,
            "test_size": 256,
            "scales": [224, 256],
            "imagenet_batch": 256,
            "imagenet_iters": 30,
            "imagenet_log": 10,
            "workers": min(8, os.cpu_count() or 1),
        }
    return {
        "cifar_batch": 16,
        "cifar_iters": 12,
        "speed_iters": 3,
        "speed_warmup": 1,
        "jpeg_size": (80, 60),
        "jpeg_train": 32,
        "jpeg_val": 8,
        "classes": 2,
        "scale": [64, 80],
        "crop": 56,
        "test_size": 64,
        "scales": [56, 64],
        "imagenet_batch": 8,
        "imagenet_iters": 6,
        "imagenet_log": 2,
        "workers": 1,
    }


def write_jpegs(root, n_train, n_val, classes, size, seed=0):
    """An ImageFolder of JPEGs that look like photographs to a codec (smooth colour fields with
    some texture, ~100 KB at 500x375 as ImageNet's average file), so decoding costs what it will."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    for split, n in (("train", n_train), ("val", n_val)):
        for c in range(classes):
            (Path(root) / split / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            coarse = Image.fromarray(rng.integers(0, 256, (max(2, h // 24), max(2, w // 24), 3), dtype=np.uint8))
            img = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.int16)
            img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(Path(root) / split / f"c{i % classes}" / f"{i:05d}.jpg", quality=90)
    return Path(root)


class Doctor:
    def __init__(self, device="auto", compile="auto", out=print, show_traceback=False, config="config.yaml", work=None):
        import torch

        from resnet_repro.device import resolve_device

        self.torch = torch
        self.device = resolve_device(device)
        self.compile_setting = compile
        self.out, self.show_traceback, self.config = out, show_traceback, config
        self.work = Path(work)
        self.size = sizes(self.device)
        self.results, self.ips, self.runs = {}, {}, {}

    # ------------------------------------------------------------ reporting

    def check(self, name, fn):
        t = time.perf_counter()
        try:
            detail = fn()
            status = "ok"
        except Skip as e:
            status, detail = "skipped", str(e)
        except Exception as e:  # noqa: BLE001 (every failure is reported on its line; the others still run)
            status = "failed"
            msg = str(e).strip().splitlines()
            detail = f"{e.__class__.__name__}: {msg[0] if msg else ''}"[:400]
            if self.show_traceback:
                traceback.print_exc()
        self.results[name] = status
        took = time.perf_counter() - t
        sep = ": " if status != "ok" else " "
        self.out(f"{status:<8} {name:<18}{sep}{detail} [{took:.1f}s]")

    def need(self, *names):
        for n in names:
            if self.results.get(n) != "ok":
                raise Skip(f"needs {n}, which {self.results.get(n, 'did not run')}")

    # ------------------------------------------------------------ the checks

    def paper_compile(self, family):
        """What `auto` picks for a paper-length run of this family (the settings the GPU-hours go to)."""
        from resnet_repro.device import use_compile

        setting = self.compile_setting
        if setting == "auto":
            return use_compile("auto", self.device, 64000 if family == "cifar" else 600000)
        return use_compile(setting == "true", self.device)

    def c_device(self):
        import torch

        from resnet_repro.data.sets import jpeg_decoder
        from resnet_repro.device import describe, use_bf16, use_channels_last, use_cuda_graph

        d = self.device
        extra = ""
        if d.type == "cuda":
            extra = (
                f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
                f"{torch.cuda.device_count()} GPU(s) visible"
            )
        return (
            f"{describe(d)}; torch {torch.__version__}{extra}; auto: {'bf16' if use_bf16('auto', d) else 'fp32'}, "
            f"{'channels_last' if use_channels_last('auto', d) else 'NCHW'}, "
            f"compile {self.paper_compile('cifar')}, CUDA graph (CIFAR nets) {use_cuda_graph(d, 'cifar')}, "
            f"JPEG decoder {jpeg_decoder()}"
        )

    def c_jpeg_decode(self):
        import torch

        from resnet_repro.data import sets as D

        folder = self.jpegs()
        files = sorted((folder / "train").rglob("*.jpg"))[:16]
        encoded = [D.read_bytes(f) for f in files]
        library = D.jpeg_decoder()
        t = time.perf_counter()
        images = D.decode_on_device(encoded, self.device)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        took = time.perf_counter() - t
        reference = [D._decode_pil(e) for e in encoded]
        worst = 0.0
        for img, ref in zip(images, reference):
            if img.device.type != self.device.type or img.dtype != torch.uint8 or img.shape != ref.shape:
                raise AssertionError(
                    f"decoded {tuple(img.shape)} {img.dtype} on {img.device}, expected "
                    f"{tuple(ref.shape)} uint8 on {self.device.type}"
                )
            worst = max(worst, (img.cpu().float() - ref.float()).abs().mean().item())
        if worst > 5.0:  # nvJPEG upsamples chroma and rounds the IDCT its own way: about 2 levels
            raise AssertionError(f"decoded images differ from PIL's by {worst:.2f} levels on average")
        where = (
            "nvJPEG on the GPU"
            if self.device.type == "cuda" and library == "torchcodec"
            else ("on the CPU (the CPU twin of nvJPEG)" if library == "torchcodec" else "PIL on the CPU")
        )
        return (
            f"{len(files)} JPEGs of {self.size['jpeg_size'][0]}x{self.size['jpeg_size'][1]} decoded by {library}, "
            f"{where}, in {took * 1000:.0f} ms (first call); mean difference from PIL {worst:.2f} levels"
        )

    def jpegs(self):
        folder = self.work / "jpegs"
        if not (folder / "val").is_dir():
            s = self.size
            write_jpegs(folder, s["jpeg_train"], s["jpeg_val"], s["classes"], s["jpeg_size"])
        return folder

    def c_cifar_train(self):
        from resnet_repro.spec.build import build_spec
        from resnet_repro.training.loop import Interrupted, train

        s, iters = self.size, self.size["cifar_iters"]
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
                    "compile": self.paper_compile("cifar"),
                    "device": str(self.device),
                }
            ],
        )
        out = self.work / "cifar"
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
        self.runs["cifar"] = (out, metrics, log)
        if not math.isfinite(metrics["train_loss"]):
            raise AssertionError(f"training loss is {metrics['train_loss']}")
        return (
            f"resnet56, batch {s['cifar_batch']}, {iters} iterations in {took:.0f}s (compiling included), "
            f"{metrics['precision']}, {'channels_last' if metrics['channels_last'] else 'NCHW'}, "
            f"compile {metrics['compile']}, CUDA graph {metrics['cuda_graph']}; loss {metrics['train_loss']:.3f}"
        )

    def c_checkpoint_resume(self):
        self.need("cifar-train")
        out, metrics, log = self.runs["cifar"]
        iters = self.size["cifar_iters"]
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

    def c_cifar_speed(self):
        from resnet_repro.preflight.estimate import measure
        from resnet_repro.spec.build import build_spec

        s = self.size
        spec = build_spec(None, [{"model": "resnet56", "compile": self.paper_compile("cifar")}])
        fresh_compiler()
        ips = measure(spec, self.device, iters=s["speed_iters"], warmup=s["speed_warmup"], batch_size=s["cifar_batch"])
        self.ips["resnet56"] = ips
        per_run = 64000 * 128 / ips / 3600
        return (
            f"resnet56 {ips:.0f} images/s (trainer's step, batch {s['cifar_batch']}, 32x32, "
            f"{s['speed_iters']} timed iterations): {per_run:.2f} h for the paper's 64k iterations of 128"
        )

    def c_imagenet_train(self):
        from resnet_repro.spec.build import build_spec
        from resnet_repro.training.loop import train

        s = self.size
        folder = self.jpegs()
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
                    "compile": self.paper_compile("imagenet"),
                    "device": str(self.device),
                }
            ],
        )
        from resnet_repro.data import sets as D

        decode = D.decode_where("auto", D.stream_datasets("imagefolder", folder)[0], self.device)
        out = self.work / "imagenet"
        t = time.perf_counter()
        fresh_compiler()
        log = []
        try:
            metrics = train(spec, out, log=log.append)
        finally:
            for line in log:
                self.out(f"         | {line}")
        took = time.perf_counter() - t
        self.runs["imagenet"] = (out, metrics, None)
        windows = [row["images_per_s"] for row in metrics_history(out)][1:]  # the first window compiles
        ips = statistics.median(windows) if windows else metrics["images_per_s"]
        self.ips["resnet50"] = ips
        w, h = s["jpeg_size"]
        return (
            f"resnet50 {ips:.0f} images/s from {w}x{h} JPEG files (decoded in the {decode}; "
            f"batch {s['imagenet_batch']}, {s['crop']}px crops, {s['workers']} loader workers; median of "
            f"{len(windows)} windows of {s['imagenet_log']} iterations after the first), {took:.0f}s in all, "
            f"{metrics['precision']}, compile {metrics['compile']}"
        )

    def evaluate(self, run, view):
        from resnet_repro.evaluation.evaluate import evaluate_checkpoint

        self.need({"cifar": "cifar-train", "imagenet": "imagenet-train"}[run])
        out, _, _ = self.runs[run]
        scales = self.size["scales"]
        m = evaluate_checkpoint(
            out / MODEL,
            self.work / f"eval-{run}-{view}",
            [view],
            scales,
            str(self.device),
            batch_size=50,
            workers=min(2, self.size["workers"]),
        )
        r = m["views"][view]
        if not 0 <= r["top1_error"] <= 100:
            raise AssertionError(f"top-1 error {r['top1_error']}")
        return f"{run} checkpoint, {r['n']} images: top-1 error {r['top1_error']:.1f}%" + (
            f" (scales {scales})" if view == "multiscale" else ""
        )

    def c_ddp(self):
        import torch

        env = dict(os.environ)
        src = str(Path(resnet_repro.__file__).resolve().parents[1])  # the package's parent: src/
        env["PYTHONPATH"] = os.pathsep.join([src] + [p for p in [env.get("PYTHONPATH")] if p])
        if self.device.type == "cuda":
            n = torch.cuda.device_count()
            if n < 2:
                return self.ddp_one_gpu()
            backend = f"NCCL over {n} GPUs"
        else:
            n, backend = 2, "gloo over 2 CPU processes (the CPU twin of NCCL)"
            env["OMP_NUM_THREADS"] = "1"
        out = self.work / "ddp"
        iters = 6
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={n}",
            "-m",
            "resnet_repro",
            "train",
            "--model",
            "resnet20",
            "--data",
            "digits",
            "--image-size",
            "32",
            "--max-iters",
            str(iters),
            "--log-every",
            "3",
            "--checkpoint-every",
            str(iters),
            "--batch-size",
            str(16 * n),
            "--milestones",
            "100",
            "--device",
            self.device.type,
            "--out",
            str(out),
        ]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:
            lines = [line for line in (r.stderr + r.stdout).splitlines() if line.strip()]
            errors = [line for line in lines if "Error" in line or "error:" in line]
            raise AssertionError(f"torchrun exited {r.returncode}: {(errors or lines or ['no output'])[-1]}")
        ckpt = load_torch(out / CHECKPOINT)
        if ckpt["world_size"] != n or ckpt["iteration"] != iters:
            raise AssertionError(f"checkpoint of {ckpt['world_size']} processes at iteration {ckpt['iteration']}")
        return f"torchrun, {n} processes, {backend}: {iters} DDP steps of resnet20 and a checkpoint"

    def ddp_one_gpu(self):
        """One GPU: a one-process NCCL group, the DDP-wrapped model and one step, so NCCL and DDP are
        exercised; gradient all-reduce across GPUs needs a node with two or more."""
        import torch
        import torch.distributed as dist
        import torch.nn.functional as F

        from resnet_repro.models import build_model

        dist.init_process_group(
            "nccl", store=dist.HashStore(), rank=0, world_size=1, device_id=torch.device("cuda", self.device.index or 0)
        )
        try:
            model = build_model("resnet20").to(self.device)
            ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index or 0])
            x = torch.randn(32, 3, 32, 32, device=self.device)
            y = torch.randint(0, 10, (32,), device=self.device)
            F.cross_entropy(ddp(x), y).backward()
            t = torch.ones(1, device=self.device)
            dist.all_reduce(t)
            torch.cuda.synchronize(self.device)
            if t.item() != 1.0:
                raise AssertionError(f"all_reduce over one process gave {t.item()}")
        finally:
            dist.destroy_process_group()
        return (
            "one GPU visible: NCCL process group of one, a DDP forward/backward and an all-reduce ran; "
            "torchrun across GPUs needs a node with 2+ (run doctor with all of the node's GPUs)"
        )

    def c_estimate(self):
        from resnet_repro.paper.names import parse_model_name
        from resnet_repro.preflight.estimate import estimate, load_plan, runs_for

        if not Path(self.config).exists():
            raise Skip(f"no workflow config {self.config} here (run doctor from the project's directory, or --config)")
        self.need("cifar-speed")
        plan = load_plan(self.config, "paper")
        models = sorted({m for m, _ in runs_for(plan, ["all"])})
        flops = {m: gflops(m) for m in set(models) | {"resnet56", "resnet50"}}
        base = {"cifar": ("resnet56", self.ips.get("resnet56")), "imagenet": ("resnet50", self.ips.get("resnet50"))}
        given, scaled = [], []
        for m in models:
            ref, ips = base[parse_model_name(m).family]
            if ips is None:
                continue
            given.append(f"{m}={ips if m == ref else ips * flops[ref] / flops[m]}")
            if m != ref:
                scaled.append(m)
        lines = []
        r = estimate(["all"], self.config, "paper", given=given, log=lines.append)
        for line in lines:
            self.out(f"         | {line}")
        missing = "" if self.ips.get("resnet50") else " (ImageNet-family models not priced: imagenet-train did not run)"
        if self.device.type == "cpu":
            missing += f"; on a CPU resnet50 was timed on {self.size['crop']}px crops, not 224"
        return (
            f"paper preset, all: {r['total_hours']:.4g} {'GPU' if self.device.type == 'cuda' else 'device'}-hours "
            f"from resnet56 and resnet50 as measured above, the other models scaled by their GFLOPs{missing}"
        )

    def run(self):
        self.work.mkdir(parents=True, exist_ok=True)
        views = {
            "eval-single": ("cifar", "single"),
            "eval-center": ("imagenet", "center"),
            "eval-tencrop": ("imagenet", "tencrop"),
            "eval-multiscale": ("imagenet", "multiscale"),
        }
        for name in CHECKS:
            if name in views:
                self.check(name, lambda v=views[name]: self.evaluate(*v))
            else:
                self.check(name, getattr(self, "c_" + name.replace("-", "_")))
        failed = [n for n, s in self.results.items() if s == "failed"]
        skipped = [n for n, s in self.results.items() if s == "skipped"]
        for model, ips in self.ips.items():
            self.out(f"measured: {model} {ips:.0f} images/s on {self.device}")
        self.out(
            f"doctor: {len(CHECKS) - len(failed) - len(skipped)} ok, {len(failed)} failed"
            + (f" ({', '.join(failed)})" if failed else "")
            + f", {len(skipped)} skipped"
            + (f" ({', '.join(skipped)})" if skipped else "")
        )
        return self.results


def fresh_compiler():
    """Forget what torch.compile compiled before: each training job of the pipeline is a process of
    its own, and a model compiled after another one of other shapes would be recompiled with
    dynamic shapes (slower kernels, long compiles), which no job sees."""
    import torch

    torch._dynamo.reset()


def gflops(model):
    """Forward multiply-adds at the model's input size, counted on the meta device (no arithmetic)."""
    import torch

    from resnet_repro.models import ResNet, count_gflops
    from resnet_repro.paper.names import parse_model_name

    spec = parse_model_name(model)
    with torch.device("meta"):
        return count_gflops(ResNet(spec), spec.input_size)


def metrics_history(out):
    import csv

    with open(Path(out) / HISTORY) as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def doctor(device="auto", compile="auto", out=print, show_traceback=False, config="config.yaml", work=None):
    """Run every check; returns {check: ok|failed|skipped}."""
    if work is not None:
        return Doctor(device, compile, out, show_traceback, config, work).run()
    with tempfile.TemporaryDirectory(prefix="resnet-repro-doctor-") as tmp:
        return Doctor(device, compile, out, show_traceback, config, tmp).run()
