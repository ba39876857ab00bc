"""One training step (forward under autocast, loss, backward, SGD, the history's sums kept on the
device; a CUDA graph where it pays) and make_training, which builds the model, its SGD and its step for a
spec: the trainer runs it and `resnet-repro estimate` times the very same object."""

import torch
import torch.nn.functional as F

from resnet_repro.device import (
    autocast,
    make_sgd,
    memory_format,
    use_bf16,
    use_channels_last,
    use_compile,
    use_cuda_graph,
)
from resnet_repro.models import ResNet, parse_model_name
from resnet_repro.training import parallel
from resnet_repro.training.schedule import LearningRate

GRAPH_WARMUP = 3  # eager steps before a CUDA graph is recorded


class Step:
    """One training iteration on a batch: forward (under autocast), loss, backward, SGD step, and
    the running sums for the history added on the device. Nothing here reads a value back to the
    host, so on CUDA the CPU queues step after step without waiting; train() reads the sums every
    K iterations. The benchmark (benchmarks/train_throughput.py) and `resnet-repro estimate` time
    this very object.

    acc: loss sum, wrong predictions, images since the last history record.
    warm: wrong predictions, images since the last warm-up check (when counting them)."""

    def __init__(
        self, model, opt, device, bf16=False, channels_last=False, compile=False, count_warm=False, graph=False
    ):
        self.model, self.opt, self.device, self.bf16, self.count_warm = model, opt, device, bf16, count_warm
        self.format, self.channels_last, self.compiled = memory_format(channels_last), channels_last, compile
        # DDP and the compiled module share their parameters with `model`; checkpoints keep saving `model`
        net = parallel.wrap(model, device)
        self.forward = torch.compile(net) if compile else net
        self.acc = torch.zeros(3, device=device, dtype=torch.float64)
        self.warm = torch.zeros(2, device=device, dtype=torch.float64)
        # graph: on CUDA, one process, the whole step (forward, backward, SGD, sums) is captured once
        # as a CUDA graph and replayed: one launch instead of a thousand or so for a CIFAR net
        self.graph = graph and device.type == "cuda" and not parallel.WORLD.active
        self.captured, self.captured_lr, self.eager_steps = None, None, 0

    def __call__(self, x, y):
        if not self.graph:
            return self._step(x, y)
        lr = [g["lr"] for g in self.opt.param_groups]
        if self.captured is None or lr != self.captured_lr:
            if self.eager_steps < GRAPH_WARMUP:  # cuDNN's autotuning, compiling, the optimizer's state
                self.eager_steps += 1
                side = torch.cuda.Stream(self.device)
                side.wait_stream(torch.cuda.current_stream(self.device))
                with torch.cuda.stream(side):
                    loss = self._step(x, y)
                torch.cuda.current_stream(self.device).wait_stream(side)
                return loss
            self._capture(x, y, lr)
        self.static[0].copy_(x.contiguous(memory_format=self.format), non_blocking=True)
        self.static[1].copy_(y, non_blocking=True)
        self.captured.replay()
        return self.static[2]

    def _capture(self, x, y, lr):
        """Record the step once (recording runs nothing); again whenever the learning rate changes
        (SGD's lr is a constant of the recorded kernels)."""
        self.captured = None
        static_x, static_y = x.contiguous(memory_format=self.format).clone(), y.clone()
        graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(graph):
            loss = self._step(static_x, static_y, cache=False)
        self.captured, self.captured_lr, self.static = graph, lr, (static_x, static_y, loss)

    def _step(self, x, y, cache=True):
        x = x.contiguous(memory_format=self.format)
        with autocast(self.device, self.bf16, cache):
            out = self.forward(x)
            loss = F.cross_entropy(out.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        with torch.no_grad():
            n = len(y)
            wrong = (out.argmax(1) != y).sum().double()
            # python numbers go in as kernel arguments: a new tensor from a host value would be a
            # host-to-device copy (a synchronisation on CUDA) every step
            self.acc[0] += loss.detach().double() * n
            self.acc[1] += wrong
            self.acc[2] += n
            if self.count_warm:
                self.warm[0] += wrong
                self.warm[1] += n
        return loss


def set_lr(opt, value):
    for g in opt.param_groups:
        g["lr"] = value


def make_training(spec, device, num_classes):
    """(Step, LearningRate) for `spec` on `device`: the model, its SGD and the step that trains them
    (step.model, step.opt). train() runs it and `resnet-repro estimate` times it (estimate.measure),
    so the estimate cannot drift from the trainer."""
    m = parse_model_name(spec["model"])
    bf16, cl = use_bf16(spec["precision"], device), use_channels_last(spec["channels_last"], device)
    compiled = use_compile(spec["compile"], device, spec["max_iters"])
    model = ResNet(m, num_classes, spec["bn_batch"]).to(device, memory_format=memory_format(cl))
    # weight decay on every parameter, as the paper's Caffe/Torch set-ups did
    opt = make_sgd(
        model.parameters(), device, lr=spec["lr"], momentum=spec["momentum"], weight_decay=spec["weight_decay"]
    )
    lr = LearningRate(spec)
    graphed = use_cuda_graph(device, m.family, parallel.WORLD.size)
    step = Step(model, opt, device, bf16, cl, compiled, count_warm=lr.warmup is not None, graph=graphed)
    return step, lr
