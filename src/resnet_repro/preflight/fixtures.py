"""What doctor's checks run on: their sizes on this device, generated JPEG files, and small helpers."""

import os
from pathlib import Path

from resnet_repro.rundir import HISTORY


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
