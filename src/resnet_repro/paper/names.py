"""Model names a user can type, parsed into a ModelSpec. Kept free of torch so that planning the
workflow (which parses every configured name) starts fast."""

import re
from dataclasses import dataclass

from resnet_repro.errors import ReproError

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
NAMING_HELP = (
    "valid names: resnet20, plain56, resnet110, resnet1202 (CIFAR, depth 6n+2; "
    "cifar-resnet50 for CIFAR depths that clash with ImageNet), resnet18/34/50/101/152, "
    "plain18/34 (ImageNet), shortcut suffix -A/-B/-C (resnet34-A), bottleneck '-v1.5'; "
    "`resnet-repro models` lists them all"
)


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
            raise ReproError(
                f"unknown model {name!r}: CIFAR depth must be 6n+2 (20, 32, 44, 56, 110, 1202, ...); {NAMING_HELP}"
            )
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
