"""`resnet-repro estimate`: expected device-hours (GPU-hours on CUDA) of a workflow target, from
measured training throughput.

For every training the target needs (resnet_repro.plan.Plan: the same runs Snakemake would
make), images = max_iters x batch_size of its spec; hours = images / images-per-second, where the
throughput of a model is, in order of preference:
  1. given: --images-per-s MODEL=N;
  2. read from finished runs: results/runs/<preset>/<model>/seed<k>/metrics.json `images_per_s`
     (the device that run used; --measure skips this);
  3. measured now: a few iterations of the trainer's own step (training.step.Step, with on-device CIFAR
     augmentation for CIFAR-family models) on this machine's device, after warm-up, at the
     model's input size; once per model.
Training iterations only: evaluation every log_every iterations and checkpoints add a little, and
for ImageNet-family models the measurement assumes the DataLoader workers keep up with the step.
"""

import time
from pathlib import Path

from resnet_repro.errors import ReproError
from resnet_repro.paper.catalogue import artifact_of
from resnet_repro.plan import Plan, read_config
from resnet_repro.preflight.cost import per_artifact
from resnet_repro.rundir import METRICS, parse_run_path, run_path

SMALL_SIZES = {"cifar10": 32, "digits": 8}


def config_paths(configs):
    """The workflow config files: one path, or several merged in order (the first is the project's)."""
    return [Path(configs)] if isinstance(configs, (str, Path)) else [Path(c) for c in configs]


def load_plan(configs, preset=None):
    """Plan for the workflow config `configs` (a path, or paths merged in order as `snakemake
    --configfile` merges them; the schema is workflow/schemas/ beside the first), with `preset`
    chosen as `snakemake --config preset=...` would."""
    paths = config_paths(configs)
    config = read_config(paths)
    if preset:
        config["preset"] = preset
    return Plan(config, paths[0].parent / "workflow" / "schemas" / "config.schema.yaml")


def runs_for(plan, targets):
    """[(model, seed)] the targets need: `all`, a preset name (all of it), an artifact
    (results/table6.csv, reports/figure7.pdf, table6) or a run directory (or a file in it)."""
    runs = []
    for t in targets:
        if t == "all" or t == plan.preset:
            need = plan.all_runs()
        elif run := parse_run_path(t):
            preset, model, seed = run
            if preset != plan.preset:
                raise ReproError(
                    f"target {t} belongs to preset {preset!r}, not {plan.preset!r}: add --preset {preset} "
                    f"(and the --configfile that defines it, if config.yaml does not)"
                )
            need = [(model, seed)]
        elif artifact := artifact_of(t):
            need = plan.runs(artifact.name)
        else:
            raise ReproError(
                f"unknown target {t!r}: use all, a preset name, results/table2.csv ... results/table6.csv, "
                f"reports/figure1.pdf ... (figure1, 4, 6, 7) or results/runs/<preset>/<model>/seed<k>"
            )
        runs += [r for r in need if r not in runs]
    return runs


def input_size(spec):
    """The side of the images the model trains on."""
    from resnet_repro.paper.names import parse_model_name

    d = spec["data"]
    if parse_model_name(spec["model"]).family == "imagenet":
        return d["crop"]
    return d.get("image_size") or SMALL_SIZES.get(d["kind"], 32)  # an image folder without image_size: assume 32


def measure(spec, device, iters=5, warmup=2, batch_size=None):
    """Images/s of the trainer's step for spec's model, precision and layout on `device`, on
    synthetic data of the spec's input size (timed after warm-up, results read back at the end)."""
    import torch

    from resnet_repro.data import small
    from resnet_repro.models import parse_model_name
    from resnet_repro.training.batches import SmallBatches
    from resnet_repro.training.step import GRAPH_WARMUP, make_training, set_lr

    m = parse_model_name(spec["model"])
    size, batch = input_size(spec), batch_size or spec["batch_size"]
    torch.manual_seed(0)
    num_classes = spec.get("num_classes") or (10 if m.family == "cifar" else 1000)
    step, lr = make_training(spec, device, num_classes)  # the trainer's own model, SGD and step
    set_lr(step.opt, lr.at(0))
    gen = torch.Generator().manual_seed(0)
    if m.family == "cifar":  # the real data path: uint8 on the device, batched pad-crop-flip
        n = 2 * batch
        td = small.TensorData(
            torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=gen),
            torch.randint(0, num_classes, (n,), generator=gen),
            None,
            None,
            [],
            "test",
        )
        td.train_x, td.train_y = td.train_x.to(device), td.train_y.to(device)
        batches = SmallBatches(
            td, batch, torch.full((3, size, size), 0.5, device=device), spec.get("augment", {}), device, seed=0
        )
        next_batch = batches.next
    else:  # streamed: the workers' decoding is assumed to keep up; the step sees normalised batches
        x = torch.randn(batch, 3, size, size, generator=gen).to(device)
        y = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
        next_batch = lambda: (x, y)

    if step.graph:  # a few eager steps, then the recording: none of them timed
        warmup = max(warmup, GRAPH_WARMUP + 2)

    def run(k):
        for _ in range(k):
            step(*next_batch())
        step.acc.tolist()  # wait for the device

    run(warmup)
    t = time.perf_counter()
    run(iters)
    return iters * batch / (time.perf_counter() - t)


def finished_throughput(root, preset, model):
    """(mean images/s, device) over the model's finished runs of this preset, or None."""
    import json

    found = []
    for f in sorted(Path(root).glob(f"{run_path(preset, model, '*')}/{METRICS}")):
        try:
            m = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if m.get("images_per_s"):
            found.append((float(m["images_per_s"]), m.get("device", "?")))
    if not found:
        return None
    return sum(v for v, _ in found) / len(found), ", ".join(sorted({d for _, d in found}))


def parse_given(items):
    given = {}
    for item in items:
        model, sep, value = item.partition("=")
        try:
            given[model] = float(value)
            if not sep or given[model] <= 0:
                raise ValueError
        except ValueError:
            raise ReproError(f"--images-per-s {item!r}: expected MODEL=N with N > 0, e.g. resnet56=2500") from None
    return given


def read_rates(path):
    """A rates file: {"card", "date", "source", "rates": {model: images/s}, "measured": [models timed on the
    card; the others were scaled from them]}, as benchmarks/rates_from_doctor.py writes it."""
    import json

    try:
        r = json.loads(Path(path).read_text())
        rates = {m: float(v) for m, v in r["rates"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ReproError(f"--rates {path}: not a rates file ({type(e).__name__}: {e})") from None
    if not rates or min(rates.values()) <= 0:
        raise ReproError(f"--rates {path}: every rate must be a number of images/s above 0")
    return {**r, "rates": rates, "measured": set(r.get("measured", ()))}


def model_rows(plan, runs):
    """{model: row} of the trainings `runs` (model, seed): their count, images, iterations, batch sizes
    and the spec of the first (what a measurement times)."""
    from resnet_repro.spec.build import build_spec

    per_model = {}
    for model, seed in runs:
        spec = build_spec(None, [plan.train_overrides(model, seed)])
        row = per_model.setdefault(model, {"model": model, "runs": 0, "images": 0, "spec": spec})
        row["runs"] += 1
        row["images"] += spec["max_iters"] * spec["batch_size"]
        row.setdefault("iters", set()).add(spec["max_iters"])
        row.setdefault("batch", set()).add(spec["batch_size"])
    return per_model


def estimate(
    targets,
    config="config.yaml",
    preset=None,
    given=(),
    measure_now=False,
    device="auto",
    iters=5,
    warmup=2,
    measure_batch=None,
    log=print,
    rates=None,
):
    """Rows (one per model) and the total; prints the table through `log`. `config`: a path, or paths
    merged in order (load_plan); finished runs are read under results/ beside the first. `rates`: a
    rates file's path (read_rates); with `all`, the result also holds each artifact's hours."""
    plan = load_plan(config, preset)
    root = config_paths(config)[0].parent
    runs = runs_for(plan, targets)
    per_model = model_rows(plan, runs)
    rates = read_rates(rates) if rates else None
    measured_note = throughputs(
        per_model, plan, root, parse_given(given), measure_now, device, iters, warmup, measure_batch, rates
    )
    rows = list(per_model.values())
    every = set(runs) == set(plan.all_runs())
    for r in rows:
        r["hours"] = r["images"] / r["ips"] / 3600
    total = sum(r["hours"] for r in rows)
    devices = {r["device"] for r in rows}
    unit = "GPU-hours" if devices and all(d.startswith("cuda") for d in devices) else "device-hours"

    log(f"estimate for {' '.join(targets)} (preset {plan.preset}): {len(runs)} trainings of {len(rows)} models")
    if measured_note:
        log(f"throughput {measured_note}")
    log(
        f"{'model':<14} {'runs':>4} {'iterations':>10} {'batch':>5} {'size':>4} {'images':>9} {'images/s':>9} "
        f"{'hours':>9}  source (device)"
    )
    for r in rows:
        fmt = lambda s: "/".join(str(v) for v in sorted(s))
        log(
            f"{r['model']:<14} {r['runs']:>4} {fmt(r['iters']):>10} {fmt(r['batch']):>5} {input_size(r['spec']):>4} "
            f"{_count(r['images']):>9} {r['ips']:>9.1f} {r['hours']:>9.3g}  {r['source']} ({r['device']})"
        )
    log(
        f"total: {total:.4g} {unit} ({', '.join(sorted(devices))}); training iterations only, at one device's "
        f"throughput (a DDP training on k GPUs takes at best 1/k of its hours in wall-clock time)"
    )
    return {
        "preset": plan.preset,
        "targets": list(targets),
        "trainings": len(runs),
        "total_hours": total,
        "unit": unit,
        "rows": [{k: (sorted(v) if isinstance(v, set) else v) for k, v in r.items() if k != "spec"} for r in rows],
        **dict(zip(("artifacts", "cost"), per_artifact(plan, per_model, rates) if every else ({}, {}))),
        "rates": rates and {k: sorted(v) if k == "measured" else v for k, v in rates.items() if k != "rates"},
    }


def throughputs(per_model, plan, root, given, measure_now, device, iters, warmup, measure_batch, rates=None):
    """Each model's images/s (row "ips", "source", "device"): given, else the rates file's, else that of
    its finished runs, else measured now; returns a line saying how it was measured, or None."""
    from resnet_repro.device import resolve_device

    dev, measured_note = None, None
    for model, row in per_model.items():
        if model in given:
            row["ips"], row["source"], row["device"] = given[model], "given", "given"
            continue
        if rates and model in rates["rates"]:
            kind = "measured" if model in rates["measured"] else "scaled by FLOPs"
            row["ips"], row["source"], row["device"] = rates["rates"][model], f"rates file, {kind}", "cuda"
            continue
        done = None if measure_now else finished_throughput(root, plan.preset, model)
        if done:
            row["ips"], row["device"] = done
            row["source"] = "finished runs"
            continue
        if dev is None:
            dev = resolve_device(device)
        spec = row["spec"]
        batch = measure_batch or spec["batch_size"]
        if measure_batch is None and dev.type == "cpu" and input_size(spec) >= 128:
            batch = min(batch, 32)  # a 256-image ImageNet batch takes minutes per step on a CPU
        row["ips"] = measure(spec, dev, iters, warmup, batch)
        row["source"], row["device"] = f"measured (batch {batch})", dev.type
        measured_note = (
            f"measured now on {_describe(dev)}: {warmup} warm-up + {iters} timed iterations of the "
            f"training step per model, synthetic data at the model's input size"
        )
    return measured_note


def _count(n):
    return (
        f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)
    )


def _describe(dev):
    from resnet_repro.device import describe

    return describe(dev)
