"""The paper's networks: CIFAR-10 nets of depth 6n+2 and the ImageNet nets of Table 1.

Module names follow torchvision (conv1, bn1, layer1..4, downsample, fc) so that torchvision's
option-B ResNets load into ours with no key mapping.
"""
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ReproError

IMAGENET_BLOCKS = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
CIFAR_DEPTHS = [20, 32, 44, 56, 110, 1202]  # the depths the paper trains; any 6n+2 works


@dataclass(frozen=True)
class ModelSpec:
    family: str  # "cifar" or "imagenet"
    residual: bool
    depth: int
    shortcut: str = "A"  # A: zero-pad identity, B: projection where shape changes, C: projection always
    stride_on_3x3: bool = False  # torchvision's "v1.5" bottleneck; the paper puts the stride on the 1x1

    @property
    def name(self):
        if self.family == "cifar":
            base = f"{'resnet' if self.residual else 'plain'}{self.depth}"
            if self.depth in IMAGENET_BLOCKS:
                base = "cifar-" + base
            return base + (f"-{self.shortcut}" if self.residual and self.shortcut != "A" else "")
        base = f"{'resnet' if self.residual else 'plain'}{self.depth}"
        if self.residual and self.shortcut != "B":
            base += f"-{self.shortcut}"
        return base + ("-v1.5" if self.stride_on_3x3 else "")

    @property
    def input_size(self):
        return 32 if self.family == "cifar" else 224


NAME_RE = re.compile(r"^(?:(cifar|imagenet)-)?(plain|resnet)(\d+)(?:-([ABC]))?(-v1\.5)?$")
NAMING_HELP = ("valid names: resnet20, plain56, resnet110, resnet1202 (CIFAR, depth 6n+2; "
               "cifar-resnet50 for CIFAR depths that clash with ImageNet), resnet18/34/50/101/152, "
               "plain18/34 (ImageNet), shortcut suffix -A/-B/-C (resnet34-A), bottleneck '-v1.5'; "
               "`resnet-repro models` lists them all")


def parse_model_name(name):
    """'resnet34-A' -> ModelSpec. Bare depths 18/34/50/101/152 are ImageNet nets, every other depth
    is a CIFAR net; the prefix 'cifar-' or 'imagenet-' forces a family."""
    m = NAME_RE.match(name)
    if not m:
        raise ReproError(f"unknown model {name!r}; {NAMING_HELP}")
    family, kind, depth, shortcut, v15 = m.groups()
    depth, residual = int(depth), kind == "resnet"
    family = family or ("imagenet" if depth in IMAGENET_BLOCKS else "cifar")
    if family == "cifar":
        if depth < 8 or (depth - 2) % 6:
            raise ReproError(f"unknown model {name!r}: CIFAR depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...); {NAMING_HELP}")
        if v15:
            raise ReproError(f"model {name!r}: '-v1.5' applies to ImageNet bottleneck nets (resnet50/101/152) only")
    else:
        if depth not in IMAGENET_BLOCKS:
            raise ReproError(f"unknown model {name!r}: ImageNet depths are 18, 34, 50, 101, 152; {NAMING_HELP}")
        if v15 and depth < 50:
            raise ReproError(f"model {name!r}: '-v1.5' applies to bottleneck nets (resnet50/101/152) only")
    if shortcut and not residual:
        raise ReproError(f"model {name!r}: plain nets have no shortcuts, drop the -{shortcut} suffix")
    default = "A" if family == "cifar" else "B"
    return ModelSpec(family, residual, depth, shortcut or default, bool(v15))


def canonical_models():
    """Every network the paper trains (and a few obvious variants), as names."""
    names = [f"plain{d}" for d in CIFAR_DEPTHS[:5]] + [f"resnet{d}" for d in CIFAR_DEPTHS]
    names += ["plain18", "plain34"]
    names += [f"resnet{d}-{s}" for d in (18, 34) for s in "ABC"]
    names += ["resnet50", "resnet101", "resnet152", "resnet50-v1.5", "resnet101-v1.5", "resnet152-v1.5"]
    return names


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by the stride, with the extra channels filled with zeros."""

    def __init__(self, stride, extra_channels):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x):
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def make_shortcut(residual, option, cin, cout, stride):
    """None means identity (or no shortcut at all for plain nets)."""
    if not residual:
        return None
    changes = stride != 1 or cin != cout
    if option == "C" or (option == "B" and changes):
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
    if option == "A" and changes:
        return ZeroPadShortcut(stride, cout - cin)
    return None


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin, width, stride, residual, shortcut, stride_on_3x3=False):
        super().__init__()
        self.residual = residual
        self.conv1, self.bn1 = conv3x3(cin, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width), nn.BatchNorm2d(width)
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
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, s1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, s3), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
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

    def __init__(self, spec: ModelSpec, num_classes=None):
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
        self.bn1 = nn.BatchNorm2d(stem_width)
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
        rows.append({"name": name, "family": spec.family, "depth": spec.depth, "residual": spec.residual,
                     "shortcut": spec.shortcut if spec.residual else None,
                     "params": count_params(model), "gflops": round(count_gflops(model, spec.input_size), 4),
                     "input_size": spec.input_size})
    return rows
