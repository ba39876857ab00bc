"""What the paper says, in one place: its reference numbers and captions (reference.yaml), the names
it gives models and data sets, and the note that marks a reduced preset as not comparable with it."""

from importlib import resources
from pathlib import Path

import yaml

from resnet_repro.paper.names import parse_model_name

PAPER_DATA_NAMES = {"cifar10": "CIFAR-10", "imagenet": "ImageNet"}


def reference():
    """reference.yaml: the paper's tables, figure captions and claims."""
    return yaml.safe_load(resources.files(__package__).joinpath("reference.yaml").read_text())


def preset_note(preset, reduced=()):
    """None where the report is comparable with the paper; else why not (a reduced preset, or the paper's
    preset with runs reduced from its protocol: `reduced`, claims.reduced)."""
    if preset == "paper":
        if reduced:
            return f"paper preset, but {len(reduced)} setting(s) of its runs depart from the paper's protocol (see the protocol differences): numbers are not comparable with the paper"
        return None
    if preset is None:
        return "preset unknown: check the runs used the paper's settings before comparing with the paper"
    return f"reduced preset '{preset}': numbers are not comparable with the paper"


def model_label(model):
    """A model (name or ModelSpec) as the paper writes it: 'plain-20', 'ResNet-110', 'ResNet-34-A';
    the shortcut option only for ImageNet ResNets under 50 layers (the paper's 50/101/152 are all B)."""
    m = parse_model_name(model) if isinstance(model, str) else model
    kind = "ResNet" if m.residual else "plain"
    shortcut = m.residual and m.family == "imagenet" and m.depth < 50
    return f"{kind}-{m.depth}" + (f"-{m.shortcut}" if shortcut else "")


def data_name(d):
    """The data set a run was trained on, in words, from its spec's `data` block: 'CIFAR-10',
    'ImageNet', 'digits (8x8, upsampled to 16 px)', "ImageFolder 'flowers' (20 px crops)"."""
    d = d if isinstance(d, dict) else {}
    kind = d.get("kind")
    if kind == "digits":
        return "digits (8x8" + (f", upsampled to {d['image_size']} px" if d.get("image_size") else "") + ")"
    name = PAPER_DATA_NAMES.get(kind) or (
        f"ImageFolder '{Path(str(d.get('root') or '?')).name}'"
        if kind == "imagefolder"
        else str(kind or "unknown data")
    )
    if d.get("image_size"):
        return name + f" (resized to {d['image_size']} px)"
    if d.get("crop") and kind == "imagefolder":
        return name + f" ({d['crop']} px crops)"
    return name


def data_names(data_blocks):
    """Several runs' data sets (their specs' `data` blocks) in words, each once ('CIFAR-10, ImageNet')."""
    return ", ".join(sorted({data_name(d) for d in data_blocks}))


def caption(name, data=None):
    """The paper's caption of a figure, with the data set the paper used replaced by the one the runs
    used (data: their data_name, or None for the paper's own)."""
    text = reference()["figures"][name]
    if data:
        for paper in PAPER_DATA_NAMES.values():
            text = text.replace(paper, data)
    return text
