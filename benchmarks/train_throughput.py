"""Training throughput: the textbook CIFAR loop against the project's trainer, in one process.

(a) textbook: what the well-known reference repos do (e.g. kuangliu/pytorch-cifar): a torchvision
    Dataset of PIL images, RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize,
    a DataLoader with 2 workers, an eager fp32 NCHW model, loss.item() and the accuracy read back
    every step.
(b) project: resnet_repro.training.loop's own data path and step: uint8 images resident on the device,
    normalised and pad-crop-flipped a whole batch at a time (SmallBatches), then training.step.Step
    (channels_last / bf16 autocast / torch.compile as device.py's `auto` decides for this device,
    loss and errors summed on the device, no host sync per step).

Same model, same batch size (128), same SGD, same machine and process. Both are warmed up first,
then timed in alternating repetitions (so a burst of load from elsewhere hits both); the ratio
project / textbook is taken per repetition and the minimum is reported, so noise cannot flatter it.
The data are synthetic (random 32x32 uint8 images of CIFAR-10's size and 10 labels): the time per
image does not depend on pixel values, and CIFAR-10 need not be present.

    python benchmarks/train_throughput.py                 # CPU (or: --device cuda)
    python benchmarks/train_throughput.py --sweep         # also: the project step per precision/layout
The last line is `ratio: X.XX` (project / textbook images/s for ResNet-56).
"""

import argparse
import platform
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from resnet_repro.data import small
from resnet_repro.device import (
    configure,
    describe,
    make_sgd,
    resolve_device,
    use_bf16,
    use_channels_last,
    use_compile,
    use_cuda_graph,
)
from resnet_repro.models import build_model
from resnet_repro.training.batches import SmallBatches
from resnet_repro.training.step import Step

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)  # as in the reference repos


def synthetic_cifar(n, seed=0):
    """Random images of CIFAR-10's shape: (n, 32, 32, 3) uint8 (CIFAR10.data's layout) and labels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).tolist()


def textbook_loader(images, labels, batch_size, workers):
    from PIL import Image
    from torchvision import transforms
    from torchvision.datasets import VisionDataset

    class SyntheticCIFAR10(VisionDataset):
        """torchvision's CIFAR10 with the pickled arrays replaced by `images`: same __getitem__."""

        def __init__(self, transform):
            super().__init__("", transform=transform)
            self.data, self.targets = images, labels

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            img = Image.fromarray(self.data[i])
            return self.transform(img), self.targets[i]

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
        ]
    )
    return torch.utils.data.DataLoader(
        SyntheticCIFAR10(tf), batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True
    )


def sgd(model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


class Textbook:
    def __init__(self, name, loader, device):
        torch.manual_seed(0)
        self.model, self.loader, self.device = build_model(name).to(device), loader, device
        self.opt, self.it = sgd(self.model), None
        self.model.train()

    def batch(self):
        if self.it is None:
            self.it = iter(self.loader)
        try:
            return next(self.it)
        except StopIteration:  # next epoch
            self.it = iter(self.loader)
            return next(self.it)

    def run(self, iters):
        for _ in range(iters):
            x, y = self.batch()
            x, y = x.to(self.device), y.to(self.device)
            self.opt.zero_grad()
            out = self.model(x)
            loss = F.cross_entropy(out, y)
            loss.backward()
            self.opt.step()
            self.loss = loss.item()  # the per-step read-backs of the reference loops
            self.correct = out.argmax(1).eq(y).sum().item()


class Project:
    def __init__(self, name, data, device, batch_size, bf16, channels_last, compile, fused=True, graph=False):
        torch.manual_seed(0)
        mean = small.pixel_mean(data.train_x).to(device)
        self.batches = SmallBatches(data, batch_size, mean, {"pad": 4, "flip": True}, device, seed=0)
        model = build_model(name).to(
            device, memory_format=torch.channels_last if channels_last else torch.contiguous_format
        )
        model.train()
        opt = make_sgd(model.parameters(), device, lr=0.1, momentum=0.9, weight_decay=1e-4) if fused else sgd(model)
        self.step = Step(model, opt, device, bf16, channels_last, compile, graph=graph)

    def run(self, iters):
        for _ in range(iters):
            self.step(*self.batches.next())
        self.step.acc.tolist()  # wait for the device: the timing covers finished work


def timed(fn, iters):
    t = time.perf_counter()
    fn(iters)
    return time.perf_counter() - t


def compare(name, images, labels, data, device, args, choice):
    loader = textbook_loader(images, labels, args.batch_size, args.workers)
    a = Textbook(name, loader, device)
    b = Project(name, data, device, args.batch_size, *choice)
    t0 = time.perf_counter()
    a.run(args.warmup)
    t1 = time.perf_counter()
    b.run(args.warmup)
    t2 = time.perf_counter()
    print(f"  {name}: warm-up ({args.warmup} iterations) textbook {t1 - t0:.1f}s, project {t2 - t1:.1f}s", flush=True)
    ta, tb = [], []
    for r in range(args.repeats):
        ta.append(timed(a.run, args.iters))
        tb.append(timed(b.run, args.iters))
        print(
            f"  {name} repetition {r + 1}: textbook {args.iters * args.batch_size / ta[-1]:7.1f} img/s, "
            f"project {args.iters * args.batch_size / tb[-1]:7.1f} img/s, ratio {ta[-1] / tb[-1]:.2f}",
            flush=True,
        )
    a.it = None  # stop the workers
    ips = lambda ts: args.iters * args.batch_size / statistics.median(ts)
    return ips(ta), ips(tb), min(x / y for x, y in zip(ta, tb))


def sweep(data, device, args):
    """The project step under each precision / layout (/ compile, fused SGD, CUDA graph) choice, in
    alternating repetitions: the measurements behind device.py's `auto` settings."""
    options = [
        (False, False, False, False, False),
        (False, True, False, False, False),
        (True, False, False, False, False),
        (True, True, False, False, False),
    ]
    if device.type == "cuda":  # fused SGD and CUDA graphs exist on CUDA only
        options += [(True, True, False, True, False), (True, True, False, True, True), (False, True, False, True, True)]
    if args.sweep_compile and use_compile(True, device):
        options += [(False, True, True, False, False), (True, True, True, False, False)]
        if device.type == "cuda":
            options += [(True, True, True, True, False), (True, True, True, True, True)]
    print(
        f"sweep: project step, {args.sweep_model}, batch {args.batch_size}, best of {args.repeats} x {args.iters} "
        f"iterations after {args.warmup} warm-up, alternating"
    )
    runs = []
    for bf16, cl, comp, fused, graph in options:
        p = Project(args.sweep_model, data, device, args.batch_size, bf16, cl, comp, fused, graph)
        t = time.perf_counter()
        p.run(args.warmup)
        runs.append(
            (
                f"{'bf16' if bf16 else 'fp32'} {'channels_last' if cl else 'NCHW':13s} "
                f"{'compiled' if comp else 'eager':8s} {'fused-SGD' if fused else 'SGD':9s} "
                f"{'graph' if graph else '-':5s}",
                p,
                time.perf_counter() - t,
                [],
            )
        )
    for _ in range(args.repeats):
        for _, p, _, ts in runs:
            ts.append(timed(p.run, args.iters))
    for label, _, warm, ts in runs:
        print(f"  {label} {args.iters * args.batch_size / min(ts):8.1f} img/s   (warm-up {warm:.0f}s)", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--models", default="resnet20,resnet56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--images", type=int, default=50000, help="synthetic training images (CIFAR-10 has 50000)")
    p.add_argument(
        "--workers", type=int, default=2, help="DataLoader workers of the textbook loop (the reference repos use 2)"
    )
    p.add_argument("--iters", type=int, help="timed iterations per repetition (default 10 on CPU, 100 on CUDA)")
    p.add_argument("--warmup", type=int, help="warm-up iterations (default 3 on CPU, 30 on CUDA)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="project path (default: device.py's choice)",
    )
    p.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
    p.add_argument("--graph", default="auto", choices=["auto", "true", "false"], help="CUDA graph of the project step")
    p.add_argument("--sweep", action="store_true", help="also time the project step per precision and layout")
    p.add_argument("--sweep-model", default="resnet56")
    p.add_argument("--sweep-compile", action="store_true", help="include torch.compile in the sweep (slow to warm up)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    configure(device)  # cuDNN benchmark mode on CUDA, for both loops (the reference repos set it too)
    cuda = device.type == "cuda"
    args.iters = args.iters or (100 if cuda else 10)
    args.warmup = args.warmup or (30 if cuda else 3)
    flag = lambda v: v if v == "auto" else v == "true"
    choice = (
        use_bf16(args.precision, device),
        use_channels_last(flag(args.channels_last), device),
        use_compile(flag(args.compile), device),
        device.type == "cuda",
        use_cuda_graph(device, "cifar") if args.graph == "auto" else args.graph == "true",
    )

    images, labels = synthetic_cifar(args.images)
    data = small.TensorData(
        torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
        torch.tensor(labels),
        torch.zeros(0, 3, 32, 32, dtype=torch.uint8),
        torch.zeros(0, dtype=torch.long),
        [str(i) for i in range(10)],
        "test",
    ).to(device)
    print(f"device: {describe(device)}; torch {torch.__version__}, python {platform.python_version()}")
    print(f"data: synthetic, {args.images} random 32x32 uint8 images and labels (CIFAR-10's shape; no CIFAR-10 read)")
    print(
        f"textbook: torchvision Dataset of PIL images, RandomCrop(32, padding=4) + flip + ToTensor + Normalize, "
        f"DataLoader({args.workers} workers), fp32 NCHW eager, loss.item() and accuracy .item() every step"
    )
    print(
        f"project: uint8 on {device.type}, batched pad-crop-flip, training.step.Step: {'bf16 autocast' if choice[0] else 'fp32'}, "
        f"{'channels_last' if choice[1] else 'NCHW'}, {'torch.compile' if choice[2] else 'eager'}, {'fused SGD' if choice[3] else 'SGD'}, "
        f"{'CUDA graph of the step' if choice[4] else 'no graph'}, sums on the device"
    )
    print(
        f"batch {args.batch_size}; {args.warmup} warm-up iterations, then {args.repeats} x {args.iters} timed, alternating"
    )
    if args.sweep:
        sweep(data, device, args)
    results = {}
    for name in args.models.split(","):
        results[name] = compare(name, images, labels, data, device, args, choice)
    print(f"{'model':<10} {'textbook img/s':>15} {'project img/s':>14} {'ratio (min)':>12}")
    for name, (a, b, r) in results.items():
        print(f"{name:<10} {a:>15.1f} {b:>14.1f} {r:>12.2f}")
    last = "resnet56" if "resnet56" in results else list(results)[-1]
    print(f"ratio: {results[last][2]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
