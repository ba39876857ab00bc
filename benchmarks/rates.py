"""A rates file for `resnet-repro estimate --rates`: every model of a preset timed on this device (the
trainer's own step, eager, at its precision and layout, synthetic data at the model's input size:
resnet_repro.preflight.estimate.measure), and the packing gain of `resources.cifar.per_gpu`: N
processes training ResNet-56 at once (N = 1, 2, 4), as plain processes and, where
nvidia-cuda-mps-control exists, under a private MPS daemon (resnet_repro.training.pack.mps_daemon, as a
pack's job starts it); gain(N) = their summed images/s over one process's.

    python benchmarks/rates.py --device cuda --out DIR          # the paper preset (gpu_check.sh runs it)
    python benchmarks/rates.py --tiny --device cpu --out DIR    # the tests' preset, small, on a CPU

Writes DIR/rates.json (card, date, source with the commit, rates, measured: every model, packing,
packing_plain, packing_mps) and prints one line per number. ImageNet steps are timed on device-resident
batches: the input pipeline's share is imagenet_stages.py's to measure (end to end as a % of the step).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACK_MODEL = "resnet56"


def specs(tiny):
    """{model: spec} of every model the preset trains."""
    from resnet_repro.preflight.estimate import load_plan
    from resnet_repro.spec.build import build_spec

    configs = [ROOT / "config.yaml"] + ([ROOT / "tests" / "config" / "tiny.yaml"] if tiny else [])
    plan = load_plan(configs, "tiny" if tiny else "paper")
    out = {}
    for model, seed in plan.all_runs():
        # eager: torch.compile would take tens of seconds per model (the rates are then an upper bound on hours)
        out.setdefault(model, build_spec(None, [plan.train_overrides(model, seed), {"compile": False}]))
    return out


def worker(args):
    """One training process of a packing measurement: warmed up, it waits until all n are (a file each in
    --barrier), then times --iters steps; prints `start end images` (wall-clock seconds)."""
    from resnet_repro.device import resolve_device
    from resnet_repro.preflight.estimate import measure

    spec = specs(args.tiny)[PACK_MODEL]
    dev = resolve_device(args.device)
    measure(spec, dev, 1, args.warmup, args.batch)  # start-up, compile of the step's graph, warm-up
    barrier = Path(args.barrier)
    (barrier / str(os.getpid())).touch()
    while len(list(barrier.iterdir())) < args.n:
        time.sleep(0.01)
    start = time.time()
    ips = measure(spec, dev, args.iters, 1, args.batch)
    print(start, time.time(), ips * (time.time() - start), flush=True)


def packed(n, args, env):
    """Images/s of n worker processes training at once: all their images over the span from the first
    start to the last end (each timed after all had warmed up)."""
    with tempfile.TemporaryDirectory() as barrier:
        cmd = [sys.executable, __file__, "--worker", "--device", args.device, "--iters", str(args.pack_iters)]
        cmd += ["--warmup", str(args.warmup), "--barrier", barrier, "--n", str(n)]
        cmd += ["--tiny", "--batch", str(args.batch)] if args.tiny else []
        procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env}) for _ in range(n)]
        outs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a packing worker failed (n={n}): {outs}")
    spans = [[float(v) for v in o.split()[-3:]] for o in outs]
    return sum(s[2] for s in spans) / (max(s[1] for s in spans) - min(s[0] for s in spans))


def packing(args, env, kind):
    one = packed(1, args, env)
    gains = {}
    for n in (2, 4):
        gains[str(n)] = packed(n, args, env) / one
        print(f"packing_{kind}_{n}: {gains[str(n)]:.3f}x ({PACK_MODEL}, {n} processes)", flush=True)
    return gains


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="the tests' preset, small batches: a CPU check of this script")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--pack-iters", type=int, default=300)
    p.add_argument("--batch", type=int, help="every model's batch size (default: its spec's)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--barrier", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import torch

    from resnet_repro.device import resolve_device
    from resnet_repro.preflight.estimate import measure
    from resnet_repro.training.pack import MPS_CONTROL, mps_daemon

    dev = resolve_device(args.device)
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    commit = os.environ.get("GIT_COMMIT") or "unknown commit"
    record = {
        "card": card,
        "date": time.strftime("%Y-%m-%d"),
        "source": f"benchmarks/rates.py (gpu_check.sh; eager steps, device-resident batches), {commit}",
        "rates": {},
        "measured": [],
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def write():  # after every number: a stage stopped by its cap keeps what it measured
        (args.out / "rates.json").write_text(json.dumps(record, indent=1) + "\n")

    for model, spec in sorted(specs(args.tiny).items()):
        ips = measure(spec, dev, args.iters, args.warmup, args.batch)
        record["rates"][model] = round(ips, 1)
        record["measured"].append(model)
        write()
        print(f"rate {model}: {ips:.1f} images/s", flush=True)
    # what a pack's job gets: MPS where the node has it, else plain processes
    record["packing"] = record["packing_plain"] = packing(args, {}, "plain")
    record["packing_mps"] = f"not measured: {MPS_CONTROL} not on PATH or no GPU"
    write()
    if dev.type == "cuda":
        with mps_daemon("auto", print) as env:
            if env:
                record["packing"] = record["packing_mps"] = packing(args, env, "mps")
    write()
    print(f"written {args.out / 'rates.json'}: {len(record['rates'])} models")


if __name__ == "__main__":
    main()
