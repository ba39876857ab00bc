"""The paper's networks: CIFAR-10 nets of depth 6n+2 and the ImageNet nets of Table 1.

Module names follow torchvision (conv1, bn1, layer1..4, downsample, fc) so that torchvision's
option-B ResNets load into ours with no key mapping.
"""

import torch
import torch.nn.functional as F
from torch import nn

from resnet_repro.paper.names import CIFAR_DEPTHS, IMAGENET_BLOCKS, ModelSpec, canonical_models, parse_model_name  # noqa: F401 (re-exported)


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are taken over groups of `group` images ("ghost" BN), as
    when a batch is split over GPUs that each normalise their own part. The running statistics
    follow the first group only, as under DDP, where every forward pass starts from process 0's
    buffers. So one process with group g on a batch of k*g trains exactly as k processes on g each."""

    group = None  # None: the whole batch

    def forward(self, x):
        if not self.training or self.group is None or len(x) <= self.group:
            return super().forward(x)
        first, *rest = x.split(self.group)
        out = [super().forward(first)]  # updates the running statistics
        out += [F.batch_norm(part, None, None, self.weight, self.bias, True, 0.0, self.eps) for part in rest]
        return torch.cat(out)


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by the stride, with the extra channels filled with zeros."""

    def __init__(self, stride, extra_channels):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def make_shortcut(residual, option, cin, cout, stride):
    """None means identity (or no shortcut at all for plain nets)."""
    if not residual:
        return None
    changes = stride != 1 or cin != cout
    if option == "C" or (option == "B" and changes):
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), BatchNorm2d(cout))
    if option == "A" and changes:
        return ZeroPadShortcut(stride, cout - cin)
    return None


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride, residual, shortcut, stride_on_3x3=False):
        super().__init__()
        self.residual = residual
        self.conv1, self.bn1 = conv3x3(cin, width, stride), BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width), BatchNorm2d(width)
        self.downsample = make_shortcut(residual, shortcut, cin, width, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out)  # after the addition, as in the paper


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride, residual, shortcut, stride_on_3x3=False):
        super().__init__()
        self.residual = residual
        cout = width * self.expansion
        s1, s3 = (1, stride) if stride_on_3x3 else (stride, 1)
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, s1, bias=False), BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, s3), BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), BatchNorm2d(cout)
        self.downsample = make_shortcut(residual, shortcut, cin, cout, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(out)


class ResNet(nn.Module):
    """Both families: a stem, stages of blocks (stride 2 in the first block of every stage but the
    first), global average pooling and a linear classifier. Plain nets are the same without shortcuts."""

    def __init__(self, spec: ModelSpec, num_classes=None, bn_batch=None):
        super().__init__()
        self.spec = spec
        if spec.family == "cifar":
            n = (spec.depth - 2) // 6
            block, blocks, widths, stem_width = BasicBlock, [n, n, n], [16, 32, 64], 16
            self.conv1 = conv3x3(3, stem_width)
            self.maxpool = nn.Identity()
            num_classes = num_classes or 10
        else:
            block = BasicBlock if spec.depth < 50 else Bottleneck
            blocks, widths, stem_width = IMAGENET_BLOCKS[spec.depth], [64, 128, 256, 512], 64
            self.conv1 = nn.Conv2d(3, stem_width, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            num_classes = num_classes or 1000
        self.bn1 = BatchNorm2d(stem_width)
        cin = stem_width
        for i, (count, width) in enumerate(zip(blocks, widths)):
            layer = []
            for j in range(count):
                stride = 2 if (i > 0 and j == 0) else 1
                layer.append(block(cin, width, stride, spec.residual, spec.shortcut, spec.stride_on_3x3))
                cin = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # any input size: the fully-convolutional test form
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():  # He et al. 2015 initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.group = bn_batch

    def features(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def build_model(name, num_classes=None):
    return ResNet(parse_model_name(name), num_classes)


def count_params(model):
    return sum(p.numel() for p in model.parameters())


def count_gflops(model, size):
    """Multiply-adds (GMACs, the paper's 'FLOPs') of one forward pass at size x size,
    from torch.utils.flop_counter (which counts a multiply-add as 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, size, size))
    model.train(was_training)
    return counter.get_total_flops() / 2 / 1e9


def describe_models(names=None):
    rows = []
    for name in names or canonical_models():
        spec = parse_model_name(name)
        model = ResNet(spec)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "depth": spec.depth,
                "residual": spec.residual,
                "shortcut": spec.shortcut if spec.residual else None,
                "params": count_params(model),
                "gflops": round(count_gflops(model, spec.input_size), 4),
                "input_size": spec.input_size,
            }
        )
    return rows
