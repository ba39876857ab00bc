"""Where an ImageNet step's time goes: each stage of the trainer's JPEG path alone, then end to end, on
generated JPEGs of ImageNet's size and mix of shapes (preflight.fixtures.write_jpegs, ~100 KB at
500x375), the file list repeated so an epoch holds at least --batches batches (a benchmark of 2-4
batches an epoch measures worker start-up, not the pipeline). Each number is the median of
--windows windows of --batches batches after a warm-up, timed by CUDA events on a GPU.

Stages: the batched decode (TorchCodec: nvJPEG on CUDA); the crop+resize, batched (one roi_align per
shape, stream.scale_crop) against one resize per image, with their mean difference on the same draws;
the trainer's batches alone (training.batches.StreamBatches), with and without its side stream; the
ResNet-50 step alone; and end to end (batches + step), with and without the side stream, as a
fraction of the step alone.

    python benchmarks/imagenet_stages.py                          # the device's sizes (a GPU: the paper's)
    python benchmarks/imagenet_stages.py --tiny --device cpu      # small sizes, a minute on a CPU
    python benchmarks/imagenet_stages.py --json stages.jsonl      # also one JSON line per number
"""

import argparse
import copy
import gc
import json
import statistics
import tempfile
import time

import torch

from resnet_repro.data import decode, stream
from resnet_repro.device import configure, describe, make_sgd, resolve_device, use_bf16, use_channels_last
from resnet_repro.models import build_model
from resnet_repro.preflight.fixtures import write_jpegs
from resnet_repro.training.batches import StreamBatches
from resnet_repro.training.step import Step

SHAPES = ((500, 375), (375, 500), (500, 333), (400, 400), (640, 480))  # (w, h): ImageNet's common ones
SIZES = {  # the paper's, and small ones for a CPU (the same stages, in about a minute)
    False: {"batch": 256, "scale": (256, 480), "crop": 224, "model": "resnet50", "shapes": SHAPES, "classes": 1000},
    True: {
        "batch": 8,
        "scale": (32, 48),
        "crop": 28,
        "model": "resnet18",
        "shapes": ((50, 37), (37, 50)),
        "classes": 4,
    },
}


def clock(device):
    """A function that times fn() run `n` times, in seconds: CUDA events on a GPU, else the wall clock."""

    def timed(fn, n):
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # nothing queued before the window counts in it
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000
        t = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t

    return timed


def rate(timed, fn, images, batches, windows):
    """Images/s: the median over `windows` windows of `batches` calls, after one warm-up call."""
    fn()
    return statistics.median(images * batches / timed(fn, batches) for _ in range(windows))


def jpeg_set(tmp, s, per_shape):
    """An ImageFolder-like set of JPEGs of the sizes' mixed shapes."""
    parts = [
        stream.stream_datasets("imagefolder", write_jpegs(f"{tmp}/{w}x{h}", per_shape, 2, 2, (w, h), seed=k))[0]
        for k, (w, h) in enumerate(s["shapes"])
    ]
    data = copy.copy(parts[0])
    data.samples = [sample for part in parts for sample in part.samples]
    data.imgs, data.targets = data.samples, [label for _, label in data.samples]
    return data


def repeated(data, n):
    """`data` with its file list repeated until it holds at least n samples."""
    out = copy.copy(data)
    out.samples = data.samples * -(-n // len(data.samples))
    out.imgs, out.targets = out.samples, [label for _, label in out.samples]
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="small sizes (a CPU, or a test)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--batches", type=int, default=40, help="batches per timed window (an epoch holds more)")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--json", help="append one JSON line per number to this file")
    a = p.parse_args()
    dev = resolve_device(a.device)
    configure(dev)
    s = SIZES[a.tiny]
    b, timed = s["batch"], clock(dev)

    def say(name, value, unit, **extra):
        """Print a number, and append it to --json at once (a stage killed later loses nothing)."""
        print(f"{name}: {value:.4g} {unit}" + "".join(f", {k} {v}" for k, v in extra.items()), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                row = {"benchmark": "imagenet_stages", "device": describe(dev), "stage": name, "value": value}
                f.write(json.dumps({**row, "unit": unit, **extra}) + "\n")

    print(f"{describe(dev)}; batch {b}, crops {s['crop']} of shorter sides {s['scale']}, {a.workers} workers")
    with tempfile.TemporaryDirectory() as tmp:
        files = jpeg_set(tmp, s, max(2, 2 * b // len(s["shapes"])))
        data = repeated(files, 2 * (a.batches * a.windows + 2) * b)  # an epoch outlasts every window
        sizes = [decode.read_bytes(path).numel() for path, _ in files.samples[:64]]
        say("jpeg_kib", sum(sizes) / len(sizes) / 1024, "KiB mean", files=len(files.samples))

        encoded = [decode.read_bytes(path) for path, _ in data.samples[:b]]
        say("decode", rate(timed, lambda: decode.decode_on_device(encoded, dev), b, a.batches, a.windows), "img/s")

        images = decode.decode_on_device(encoded, dev)
        windows = stream.crop_windows(
            stream.keyed_uniforms(0, 0, range(b)), [i.shape[-2:] for i in images], s["scale"], s["crop"]
        )
        batched = lambda: stream.scale_crop(images, windows, s["crop"])
        per_image = lambda: [stream.resize_crop(img, w, s["crop"]) for img, w in zip(images, windows)]
        difference = (batched().float() - torch.stack(per_image()).float()).abs().mean().item()
        say(
            "crop_roi_align",
            rate(timed, batched, b, a.batches, a.windows),
            "img/s",
            mean_abs_levels=round(difference, 2),
        )
        say("crop_per_image_resize", rate(timed, per_image, b, a.batches, a.windows), "img/s")

        mean = torch.full((3, s["crop"], s["crop"]), 0.5, device=dev)
        d = {"scale": list(s["scale"]), "crop": s["crop"], "workers": a.workers, "decode": "auto", "lighting": 0.1}
        model = build_model(s["model"], s["classes"]).to(dev, memory_format=torch.channels_last)
        sgd = make_sgd(model.parameters(), dev, lr=0.1, momentum=0.9, weight_decay=1e-4)
        # the trainer's `auto` choices: bf16 only where the hardware has it (emulated, it is 10-17x slower)
        step = Step(model, sgd, dev, use_bf16("auto", dev), use_channels_last("auto", dev))
        x = torch.randn(b, 3, s["crop"], s["crop"], device=dev)
        y = torch.randint(0, s["classes"], (b,), device=dev)
        step_rate = rate(timed, lambda: step(x, y), b, a.batches, a.windows)
        say("step", step_rate, "img/s", model=s["model"])
        for side in (True, False) if dev.type == "cuda" else (False,):  # a CPU has no streams
            label = "side_stream" if side else "current_stream"
            for name in ("batches", "end_to_end"):  # each on fresh batches: no queue filled by the other
                batches = StreamBatches(data, d, b, mean, {"flip": True}, dev, seed=0)
                batches.side = batches.side if side else None  # without it: the pipeline before issue 36
                try:
                    if name == "batches":
                        say(f"batches_{label}", rate(timed, batches.next, b, a.batches, a.windows), "img/s")
                    else:
                        end_to_end = rate(timed, lambda: step(*batches.next()), b, a.batches, a.windows)
                        say(f"end_to_end_{label}", end_to_end, "img/s", of_step=round(end_to_end / step_rate, 3))
                except Exception as e:  # one path failing leaves the others' numbers
                    say(f"{name}_{label}_failed", 0, repr(e)[:200])
                batches = None  # its persistent workers stop before the next loader starts its own
                gc.collect()


if __name__ == "__main__":
    main()
