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
    """One training process of a packing measurement: prints its images/s."""
    from resnet_repro.device import resolve_device
    from resnet_repro.preflight.estimate import measure

    spec = specs(args.tiny)[PACK_MODEL]
    print(measure(spec, resolve_device(args.device), args.iters, args.warmup, args.batch), flush=True)


def packed(n, args, env):
    """Summed images/s of n worker processes started together."""
    cmd = [sys.executable, __file__, "--worker", "--device", args.device, "--iters", str(args.pack_iters)]
    cmd += ["--warmup", str(args.warmup)] + (["--tiny", "--batch", str(args.batch)] if args.tiny else [])
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **env}) for _ in range(n)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"a packing worker failed (n={n}): {outs}")
    return sum(float(o.split()[-1]) for o in outs)


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
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import torch

    from resnet_repro.device import resolve_device
    from resnet_repro.preflight.estimate import measure
    from resnet_repro.training.pack import MPS_CONTROL, mps_daemon

    dev = resolve_device(args.device)
    rates = {}
    for model, spec in sorted(specs(args.tiny).items()):
        rates[model] = measure(spec, dev, args.iters, args.warmup, args.batch)
        print(f"rate {model}: {rates[model]:.1f} images/s", flush=True)
    plain = packing(args, {}, "plain")
    mps = None
    if dev.type == "cuda":
        with mps_daemon("auto", print) as env:
            mps = packing(args, env, "mps") if env else None
    card = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    commit = os.environ.get("GIT_COMMIT") or "unknown commit"
    record = {
        "card": card,
        "date": time.strftime("%Y-%m-%d"),
        "source": f"benchmarks/rates.py (gpu_check.sh; eager steps, device-resident batches), {commit}",
        "rates": {m: round(v, 1) for m, v in rates.items()},
        "measured": sorted(rates),
        # what a pack's job gets: MPS where the node has it, else plain processes
        "packing": mps or plain,
        "packing_plain": plain,
        "packing_mps": mps if mps is not None else f"not measured: {MPS_CONTROL} not on PATH or no GPU",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rates.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"written {args.out / 'rates.json'}: {len(rates)} models")


if __name__ == "__main__":
    main()
