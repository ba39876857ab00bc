"""Where an ImageNet step's time goes on a GPU: each stage of the trainer's JPEG path timed alone on
a batch of 256 generated ~500x375 JPEGs (doctor.write_jpegs): TorchCodec's nvJPEG decode, the
per-image scale-and-crop on the device, the ResNet-50 step (training.step.Step, eager), and the
alternative worker path (PIL decode + scale + crop in DataLoader processes).

    python benchmarks/imagenet_stages.py [--workers 15] [--batch 256]
"""

import argparse
import statistics
import tempfile
import time

import torch

from resnet_repro.data import decode, stream
from resnet_repro.device import configure, make_sgd
from resnet_repro.models import build_model
from resnet_repro.preflight.fixtures import write_jpegs
from resnet_repro.training.step import Step


def timed(fn, device, n):
    ts = []
    for _ in range(n):
        torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=15)
    args = p.parse_args()
    dev = torch.device("cuda")
    configure(dev)
    b = args.batch
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        folder = write_jpegs(tmp, 2 * b, 4, 4, (500, 375))
        train, _ = stream.stream_datasets("imagefolder", folder)
        print(f"wrote {2 * b} JPEGs in {time.perf_counter() - t:.1f}s", flush=True)
        enc = [decode.read_bytes(path) for path, _ in train.samples[:b]]
        print(f"mean JPEG size {sum(len(e) for e in enc) / b / 1024:.0f} KiB", flush=True)
        decode.decode_on_device(enc, dev)
        s = timed(lambda: decode.decode_on_device(enc, dev), dev, 5)
        print(f"decode (torchcodec nvJPEG, batch of {b}): {s * 1000:.0f} ms = {b / s:.0f} img/s", flush=True)
        imgs = decode.decode_on_device(enc, dev)
        u = stream.keyed_uniforms(0, 0, range(b))
        windows = stream.crop_windows(u, [img.shape[-2:] for img in imgs], (256, 480), 224)
        stream.scale_crop(imgs, windows, 224)
        s = timed(lambda: stream.scale_crop(imgs, windows, 224), dev, 5)
        print(
            f"scale_crop on the device (roi_align per shape, batch of {b}): {s * 1000:.0f} ms = {b / s:.0f} img/s",
            flush=True,
        )
        s = timed(lambda: [decode._decode_pil(e) for e in enc[:32]], dev, 3)
        print(f"PIL decode on one CPU core: {32 / s:.0f} img/s", flush=True)
        for name in ("resnet50",):
            model = build_model(name, 1000).to(dev, memory_format=torch.channels_last)
            step = Step(
                model, make_sgd(model.parameters(), dev, lr=0.1, momentum=0.9, weight_decay=1e-4), dev, True, True
            )
            x = torch.randn(b, 3, 224, 224, device=dev)
            y = torch.randint(0, 1000, (b,), device=dev)
            for _ in range(5):
                step(x, y)
            s = timed(lambda: [step(x, y) for _ in range(10)], dev, 3) / 10
            print(
                f"{name} step (bf16, channels_last, eager, fused SGD, batch {b}): {s * 1000:.0f} ms = {b / s:.0f} img/s",
                flush=True,
            )
            with torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
            ) as prof:
                for _ in range(3):
                    step(x, y)
                torch.cuda.synchronize(dev)
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12), flush=True)
        from resnet_repro.training.batches import StreamBatches

        mean = torch.full((3, 224, 224), 0.5, device=dev)
        for workers in (8, args.workers):
            d = {"scale": [256, 480], "crop": 224, "workers": workers, "decode": "device", "lighting": 0.1}
            batches = StreamBatches(train, d, b, mean, {"flip": True}, dev, seed=0)
            batches.next()
            torch.cuda.synchronize(dev)
            t = time.perf_counter()
            for _ in range(8):
                x, _ = batches.next()
            torch.cuda.synchronize(dev)
            s = time.perf_counter() - t
            print(
                f"trainer's batches (StreamBatches: {workers} workers read, nvJPEG decode, scale_crop, normalise, "
                f"flip, lighting): {8 * b / s:.0f} img/s",
                flush=True,
            )
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                for _ in range(3):
                    batches.next()
                torch.cuda.synchronize(dev)
            print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=10), flush=True)
            batches.it = None
        loader = torch.utils.data.DataLoader(
            stream.KeyedCrops(train, 0, 0, (256, 480), 224),
            batch_size=b,
            num_workers=args.workers,
            shuffle=True,
            drop_last=True,
            persistent_workers=True,
        )
        it = iter(loader)
        next(it)
        t = time.perf_counter()
        n = 0
        for _ in range(6):
            try:
                x, _ = next(it)
            except StopIteration:
                it = iter(loader)
                x, _ = next(it)
            n += len(x)
        s = time.perf_counter() - t
        print(f"worker path (PIL decode+scale+crop, {args.workers} workers): {n / s:.0f} img/s", flush=True)


if __name__ == "__main__":
    main()
