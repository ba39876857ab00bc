"""Ghost BatchNorm, a vectorised candidate against the model's loop over its groups (models.BatchNorm2d:
one batch norm per group, then a cat), in one process: a training step (forward, backward, SGD) of a
CIFAR net with the paper's batch of 128 normalised in groups of 64 (`bn_batch`: two GPUs' worth), the
same model and data for both, in alternating timed repetitions. The ratio vectorised / loop of
images/s is taken per repetition; the minimum is reported. The candidate replaces the loop only where
this says it pays (tests/test_models.py checks that the two agree, forward, backward and running
statistics): on a 2-core AVX512-BF16 CPU it does not (0.52, fp32, benchmarks/README.md).

    python benchmarks/ghost_bn.py                  # CPU, ResNet-56 (or: --device cuda)
    python benchmarks/ghost_bn.py --group 32       # four groups a batch
The last line is `ratio: X.XX` (vectorised / loop images/s).
"""

import argparse
import platform
import time

import torch
import torch.nn.functional as F

from resnet_repro import models
from resnet_repro.device import describe, resolve_device


def vectorised_forward(self, x):
    """The k groups normalised at once over a (k, g, C, H, W) view of the batch: one var_mean and a few
    element-wise kernels whatever k (the loop launches k batch norms and a cat). Statistics in fp32,
    as BatchNorm keeps them under autocast; the running statistics follow the first group."""
    if not self.training or self.group is None or len(x) <= self.group or len(x) % self.group:
        return LOOP(self, x)
    groups = x.unflatten(0, (-1, self.group)).float()  # a view in either memory format
    var, mean = torch.var_mean(groups, dim=(1, 3, 4), keepdim=True, correction=0)
    with torch.no_grad():  # as nn.BatchNorm2d updates them: unbiased variance, momentum None = average
        self.num_batches_tracked += 1
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        n = groups[0].numel() // groups.shape[2]
        self.running_mean.lerp_(mean[0].flatten(), factor)
        self.running_var.lerp_(var[0].flatten() * n / max(n - 1, 1), factor)
    out = (groups - mean) * torch.rsqrt(var + self.eps)
    out = out * self.weight[:, None, None] + self.bias[:, None, None]
    return out.flatten(0, 1).to(x.dtype)


LOOP = models.BatchNorm2d.forward


def timed(model, x, y, opt, iters, device):
    for _ in range(2):  # warm-up of this variant
        step(model, x, y, opt)
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            step(model, x, y, opt)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        t = time.perf_counter()
        for _ in range(iters):
            step(model, x, y, opt)
        seconds = time.perf_counter() - t
    return iters * len(x) / seconds


def step(model, x, y, opt):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="resnet56")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--group", type=int, default=64)
    p.add_argument("--iters", type=int, help="timed steps per repetition (default 5 on CPU, 100 on CUDA)")
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    device = resolve_device(a.device)
    iters = a.iters or (100 if device.type == "cuda" else 5)
    torch.manual_seed(0)
    model = models.ResNet(models.parse_model_name(a.model), bn_batch=a.group).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(a.batch_size, 3, 32, 32, device=device).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch_size,), device=device)
    print(f"{a.model}, batch {a.batch_size} in groups of {a.group}, {describe(device)}, {platform.processor()}")
    ratios = []
    for r in range(a.repeats):
        models.BatchNorm2d.forward = LOOP
        before = timed(model, x, y, opt, iters, device)
        models.BatchNorm2d.forward = vectorised_forward
        after = timed(model, x, y, opt, iters, device)
        ratios.append(after / before)
        print(f"repetition {r + 1}: loop {before:.1f} images/s, vectorised {after:.1f} images/s")
    models.BatchNorm2d.forward = LOOP
    print(f"ratio: {min(ratios):.2f}")


if __name__ == "__main__":
    main()
