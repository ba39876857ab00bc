"""Evaluation: single view (CIFAR), centre crop, 10-crop and fully-convolutional multi-scale testing
(ImageNet), per-example scores saved for ensembles."""

import hashlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_repro.data import small, stream
from resnet_repro.data.views import DEFAULT_SCALES, MEAN_KIND, error_rates, predict_tensor, predict_view
from resnet_repro.device import (
    configure,
    memory_format,
    precision_name,
    resolve_device,
    tf32_in_use,
    use_bf16,
    use_channels_last,
)
from resnet_repro.errors import ReproError
from resnet_repro.files import load_torch, write_json
from resnet_repro.models import ResNet, parse_model_name
from resnet_repro.rundir import METRICS, scores_metrics, scores_name


def load_checkpoint(path, device="cpu"):
    ckpt = load_torch(path)
    if not isinstance(ckpt, dict) or not {"spec", "model", "num_classes", "mean"} <= ckpt.keys():
        raise ReproError(f"{path} is not a checkpoint written by `resnet-repro train` (a bare state_dict?)")
    model = ResNet(parse_model_name(ckpt["spec"]["model"]), ckpt["num_classes"])
    model.load_state_dict(ckpt["model"])
    return ckpt, model.to(device)


def images_identity(*parts):
    """A short digest naming which images an evaluation scored, in which order: two runs' per-image errors
    are paired only where it is the same (equal labels alone do not make the same images)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else "\n".join(map(str, part)).encode())
    return h.hexdigest()[:16]


def streamed_identity(val):
    """The identity of a streamed evaluation split: its files (relative to the split's folder) and labels."""
    root = Path(getattr(val, "root", ""))
    return images_identity(
        [Path(p).relative_to(root) if Path(p).is_relative_to(root) else Path(p).name for p, _ in val.samples],
        val.targets,
    )


def check_views(family, views):
    """The views asked for (default: every view of the family), each one that applies to the family."""
    allowed = ("single",) if family == "cifar" else ("center", "tencrop", "multiscale")
    views = list(views or allowed)
    bad = [v for v in views if v not in allowed]
    if bad:
        raise ReproError(f"view(s) {', '.join(bad)} do not apply to {family} models: use {', '.join(allowed)}")
    return views


def streamed_runs(model, spec, d, views, mean, device, bf16, cl, batch_size, workers, scales, multiscale_flips):
    """({view: (a function computing its scores, labels)}, {view: mirrors or not}) for a streamed
    (ImageNet-style) evaluation split."""
    _, val = stream.stream_datasets(d["kind"], d["root"])
    labels = torch.tensor(val.targets)
    trained_flips = spec.get("augment", {}).get("flip", True)  # test-time mirrors only for a model trained on them
    flips = {
        "tencrop": trained_flips,
        "multiscale": trained_flips if multiscale_flips == "auto" else multiscale_flips == "true",
    }
    runs = {
        v: (
            lambda v=v: predict_view(
                model,
                val,
                v,
                mean,
                device,
                bf16,
                cl,
                batch_size,
                workers,
                d["test_size"],
                d["crop"],
                scales,
                flips.get(v, True),
            ),
            labels,
        )
        for v in views
    }
    return runs, flips, streamed_identity(val)


def evaluate_checkpoint(
    checkpoint,
    out_dir,
    views=None,
    scales=DEFAULT_SCALES,
    device="auto",
    batch_size=None,
    workers=None,
    data_root=None,
    precision=None,
    multiscale_flips="auto",
):
    """Evaluate a trained model on its data set's evaluation split with each view; write
    scores-<view>.npz (scores, labels, and the identity of the images: images_identity) and metrics.json into out_dir. Returns the metrics.
    precision: fp32, bf16 or auto; default the spec's eval_precision (fp32), so the reported numbers
    do not depend on which CPU or GPU evaluated them. multiscale_flips: auto (mirror images too if the
    model was trained on mirrors, augment.flip), true or false; the paper's text names no flips there."""
    multiscale_flips = str(multiscale_flips).lower()
    if multiscale_flips not in ("auto", "true", "false"):
        raise ReproError(f"multiscale_flips must be auto, true or false, not {multiscale_flips!r}")
    device = resolve_device(device)
    configure(device)  # TF32 off: an fp32 evaluation is fp32 on a GPU too
    ckpt, model = load_checkpoint(checkpoint, device)
    spec = ckpt["spec"]
    family = parse_model_name(spec["model"]).family
    views = check_views(family, views)
    d = dict(spec["data"], **({"root": data_root} if data_root else {}))
    bf16 = use_bf16(precision or spec.get("eval_precision", "fp32"), device)
    cl = use_channels_last(spec["channels_last"], device)
    model.to(memory_format=memory_format(cl))
    mean = ckpt["mean"].to(device)
    batch_size = batch_size or spec.get("eval_batch_size", 250)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {
        "checkpoint": str(checkpoint),
        "model": spec["model"],
        "iteration": ckpt["iteration"],
        "views": {},
        "precision": precision_name(bf16),
        "tf32": tf32_in_use(device),
        "train_precision": ckpt.get("precision", "unknown"),
    }
    if family == "cifar":
        td = small.small_data(d)
        metrics["split"] = td.test_split
        runs = {"single": (lambda: predict_tensor(model, td.test_x, mean, device, bf16, cl, batch_size), td.test_y)}
        flips = {}
        images = images_identity(td.test_x.numpy().tobytes(), td.test_y.numpy().tobytes())
    else:
        metrics["split"] = "val"
        w = d.get("workers", 4) if workers is None else workers
        runs, flips, images = streamed_runs(
            model, spec, d, views, mean, device, bf16, cl, batch_size, w, scales, multiscale_flips
        )
    for view in views:
        metrics["views"][view] = evaluate_view(out_dir, view, runs[view], images, family, scales, flips.get(view))
    write_json(out_dir / METRICS, metrics)
    return metrics


def evaluate_view(out_dir, view, run, images, family, scales, flips):
    """One view: its scores (with the labels and the images' identity) saved as scores-<view>.npz, and
    its errors with what the view averaged (scales, mirrors, the mean subtracted)."""
    predict, labels = run
    scores = predict()
    np.savez_compressed(
        out_dir / scores_name(view), scores=scores.numpy(), labels=labels.numpy(), images=np.array(images)
    )
    result = error_rates(scores, labels)
    if view == "multiscale":
        result["scales"] = list(scales)
    if view in ("tencrop", "multiscale"):
        result["flips"] = bool(flips)
    if family != "cifar":
        result["mean"] = MEAN_KIND[view]
    return result


def ensemble(score_files):
    """Average the softmax of several models' per-example scores (same examples, same order)."""
    if len(score_files) < 2:
        raise ReproError("an ensemble needs at least two score files")
    probs, labels = None, None
    for f in score_files:
        try:
            z = np.load(f)
        except (OSError, ValueError) as e:
            raise ReproError(f"cannot read scores {f}: {e}") from None
        if not isinstance(z, np.lib.npyio.NpzFile) or not {"scores", "labels"} <= set(z.files):
            raise ReproError(f"{f} is not a scores file from `evaluate` (an .npz with arrays scores and labels)")
        images = str(z["images"]) if "images" in z.files else None
        if labels is None:
            labels, first_images = z["labels"], images
        elif not np.array_equal(labels, z["labels"]) or (None not in (images, first_images) and images != first_images):
            raise ReproError(f"{f} scores other examples (or another order) than {score_files[0]}")
        p = F.softmax(torch.from_numpy(z["scores"]).float(), 1)
        if probs is not None and p.shape != probs.shape:
            raise ReproError(f"{f} scores {p.shape[1]} classes, {score_files[0]} {probs.shape[1]}")
        probs = p if probs is None else probs + p
    probs /= len(score_files)
    members = {str(f): error_rates(torch.from_numpy(np.load(f)["scores"]), labels) for f in score_files}
    return {
        "ensemble": error_rates(probs, torch.from_numpy(labels)),
        "members": members,
        "precision": ",".join(sorted({scores_metrics(f).get("precision", "unknown") for f in score_files})),
    }
