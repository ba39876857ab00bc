"""The paper's cost from `estimate`'s rows (each model's images/s): per figure and table, its trainings'
GPU-hours with one GPU per run and with 8-GPU DDP side by side, its evaluations' and the per-attempt
overheads, CIFAR packing where `per_gpu` is set; the README's cost block (cost_markdown).

What a rates file does not measure is said, not guessed: the DDP efficiency (linear unless the file
gives `ddp8_efficiency`, applied to every training on several GPUs), the packing gain (none unless it
gives `packing: {N: gain}`) and the per-attempt overhead (start-up, data check, compile: none unless it
gives `attempt_s`; the attempts are those of a cluster's `max_runtime`, $RESNET_SLURM_MAX_RUNTIME, one
per training where it is not set). Evaluation is priced from the training rate, a forward pass being a
third of a training step's FLOPs (the backward pass costs about twice the forward), at the number of
crop-sized forward passes each view makes, over the data set's test images (CIFAR-10's 10,000,
ImageNet's 50,000, the digits' 450; an image folder's count is unknown here: not priced)."""

import math
import os

from resnet_repro.paper.catalogue import CATALOGUE
from resnet_repro.plan import evaluations

TEST_IMAGES = {"cifar10": 10_000, "imagenet": 50_000, "digits": 450}  # test / validation sets
FORWARD_SHARE = 1 / 3
DDP_GPUS = 8


def view_passes(view, scales, crop):
    """Forward passes per test image, counted in crop-sized images: single and centre crop 1, 10-crop
    10, multi-scale whole (4:3) images at each shorter side with their flips."""
    if view == "tencrop":
        return 10
    if view == "multiscale":
        return sum(2 * s * s * 4 / 3 for s in scales) / crop**2
    return 1


def eval_hours(plan, row, views):
    """GPU-hours of a run's evaluations in `views` (a view None: its layer responses, one pass over the
    test set), at its model's training images/s (`estimate` row)."""
    data = row["spec"]["data"]
    images = TEST_IMAGES.get(data["kind"], 0)
    passes = sum(view_passes(v, plan.cfg["evaluation"]["scales"], data.get("crop") or 224) for v in views)
    return images * passes * FORWARD_SHARE / row["ips"] / 3600


def run_costs(plan, per_model, rates):
    """{(model, seed): {"train", "wall_1gpu", "wall_8gpu", "eval", "overhead"}} of each run of the preset:
    its training's GPU-hours as the config runs it (packed CIFAR trainings each a share of a GPU, several
    GPUs at the DDP efficiency), its wall-clock hours on one GPU (packed: beside its pack) and on 8, its
    evaluations' GPU-hours and its attempts' overhead."""
    rates = rates or {}
    per_gpu = plan.cfg["resources"]["cifar"].get("per_gpu", 1)
    gain = float((rates.get("packing") or {}).get(str(per_gpu), 1.0)) if per_gpu > 1 else 1.0
    eff = float(rates.get("ddp8_efficiency", 1.0))
    attempt_s = float(rates.get("attempt_s", 0.0))
    max_runtime = os.environ.get("RESNET_SLURM_MAX_RUNTIME")
    evaluated = evaluations(plan)
    out = {}
    for model, seed in plan.all_runs():
        row = per_model[model]
        alone = row["images"] / row["runs"] / row["ips"] / 3600
        gpus = max(1, plan.resources(model).get("gpus", 1))
        packed = plan.family(model) == "cifar" and per_gpu > 1
        beside = alone * per_gpu / gain  # a packed training's wall-clock, beside the others of its pack
        train = alone / gain if packed else alone / (eff if gpus > 1 else 1)
        wall = beside if packed else train / gpus
        attempts = max(1, math.ceil(wall * 60 / int(max_runtime))) if max_runtime else 1
        out[(model, seed)] = {
            "train": train,
            "wall_1gpu": beside if packed else alone,
            "wall_8gpu": alone / eff / DDP_GPUS,
            "eval": eval_hours(plan, row, evaluated.get((model, seed), ())),
            "overhead": attempts * attempt_s * gpus / (per_gpu if packed else 1) / 3600,
        }
    return out, {"per_gpu": per_gpu, "gain": gain, "attempt_s": attempt_s, "ddp8_efficiency": eff}


def per_artifact(plan, per_model, rates=None):
    """({artifact: {...}}, settings): each figure's and table's trainings, their GPU-hours (run_costs), its
    evaluations' GPU-hours (what it shows) and the per-attempt overheads, and the wall-clock hours of its
    longest training on one GPU and with DDP on 8 (at the rates file's efficiency, else linear: a lower
    bound)."""
    costs, settings = run_costs(plan, per_model, rates)
    out = {}
    for a in CATALOGUE:
        runs = plan.runs(a.name)
        c = [costs[r] for r in runs]
        out[a.name] = {
            "trainings": len(runs),
            "gpu_hours": sum(x["train"] for x in c),
            "eval_hours": sum(eval_hours(plan, per_model[m], [a.view if a.shows == "eval" else None]) for m, _ in runs)
            if a.shows
            else 0.0,
            "overhead_hours": sum(x["overhead"] for x in c),
            "wall_hours_1gpu": max(x["wall_1gpu"] for x in c),
            "wall_hours_8gpu": max(x["wall_8gpu"] for x in c),
        }
    settings.update(
        eval_hours=sum(x["eval"] for x in costs.values()),
        overhead_hours=sum(x["overhead"] for x in costs.values()),
        train_hours=sum(x["train"] for x in costs.values()),
    )
    return out, settings


def cost_markdown(result):
    """The README's cost block: each artifact's trainings and GPU-hours, and the total, from the rates
    file the estimate read (result["rates"])."""
    rates, s = result["rates"], result["cost"]
    lines = [
        "| artifact | trainings | training GPU-hours | evaluation GPU-hours | its longest training, wall-clock "
        "hours: 1 GPU | 8 GPUs (DDP) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, a in result["artifacts"].items():
        lines.append(
            f"| {name} | {a['trainings']} | {a['gpu_hours']:.3g} | {a['eval_hours']:.2g} | "
            f"{a['wall_hours_1gpu']:.3g} | {a['wall_hours_8gpu']:.3g} |"
        )
    measured = ", ".join(rates["measured"]) or "none"
    total = s["train_hours"] + s["eval_hours"] + s["overhead_hours"]
    unmeasured = [
        "8-GPU DDP at linear scaling (a lower bound)" if s["ddp8_efficiency"] == 1.0 else "",
        "no per-attempt overhead (start-up, data check, compile)" if not s["attempt_s"] else "",
        f"no gain from `per_gpu: {s['per_gpu']}`" if s["per_gpu"] > 1 and s["gain"] == 1.0 else "",
    ]
    return "\n".join(
        lines
        + [
            "",
            f"**{total:.0f} GPU-hours** in all for the paper preset's {result['trainings']} trainings (a training two "
            f"artifacts share counted once): {s['train_hours']:.0f} training, {s['eval_hours']:.1f} evaluation and "
            f"layer responses, {s['overhead_hours']:.1f} per-attempt overhead; one GPU per CIFAR training"
            + (f", {s['per_gpu']} to a GPU (gain {s['gain']:.2g}x)" if s["per_gpu"] > 1 else "")
            + f". At the rates of {rates['card']} ({rates['date']}; measured: {measured}, the others scaled by "
            f"FLOPs; {rates['source']}); evaluation at a third of a training step's cost per image and view (at "
            "the training's arithmetic: the evaluation's fp32 is slower). For want of a measurement in the rates "
            f"file: {'; '.join(u for u in unmeasured if u) or 'none'}. Not counted: data unpacking.",
        ]
    )
