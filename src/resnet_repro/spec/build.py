"""Training specs: the family's defaults (specs/*.yaml), then the user's YAML, then flags,
validated against specs/train_spec.schema.yaml."""

import copy
import functools
from importlib import resources

import yaml

from resnet_repro.errors import ReproError
from resnet_repro.paper.names import parse_model_name
from resnet_repro.paper.text import reference


def _package_yaml(name):
    return yaml.safe_load(resources.files(__package__).joinpath("specs", name).read_text())


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_assignment(text):
    """'schedule.milestones=[100, 200]' -> {'schedule': {'milestones': [100, 200]}} (value is YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ReproError(f"--set {text!r}: expected KEY=VALUE, e.g. schedule.milestones=[100,200]")
    out = node = {}
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ReproError(f"--set {text!r}: value is not valid YAML ({e.problem})") from None
    return out


def read_yaml(path, what="spec"):
    """A YAML mapping from `path` (empty: {}), or a one-line error naming `what` it was to be."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ReproError(f"cannot read {what} {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ReproError(f"{what} {path}{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReproError(f"{what} {path} must be a YAML mapping, got {type(data).__name__}")
    return data


def validate(spec, source="spec"):
    import jsonschema

    schema = _package_yaml("train_spec.schema.yaml")
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(spec))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ReproError(f"{source}: {where}: {error.message}")
    sched = spec["schedule"]
    if sched["kind"] == "multistep" and "milestones" not in sched:
        raise ReproError(f"{source}: schedule.milestones is required for a multistep schedule")
    if sched["kind"] == "plateau":
        missing = [k for k in ("holdout", "patience_iters", "threshold", "max_drops") if k not in sched]
        if missing:
            raise ReproError(
                f"{source}: a plateau schedule needs {', '.join('schedule.' + k for k in missing)} "
                f"(see src/resnet_repro/spec/specs/imagenet.yaml)"
            )
    bn, batch = spec.get("bn_batch"), spec["batch_size"]
    if bn and batch > bn and batch % bn:
        raise ReproError(f"{source}: batch_size {batch} is not a multiple of bn_batch {bn}")
    scale = spec["data"].get("scale")
    if scale and scale[0] > scale[1]:
        raise ReproError(f"{source}: data.scale must be [min, max], got {scale}")
    crop = spec["data"].get("crop")
    if scale and crop and scale[0] < crop:
        raise ReproError(
            f"{source}: data.scale's shortest side {scale[0]} is below data.crop {crop}: a crop must fit "
            f"inside the resized image, as in the paper (sides 256-480, crops 224)"
        )


def build_spec(path=None, overrides=()):
    """Merge defaults, the YAML file and override dicts (in order); return a validated spec."""
    user = read_yaml(path) if path else {}
    for o in overrides:
        user = deep_merge(user, o)
    source = f"spec {path}" if path else "spec"
    if not isinstance(user.get("model"), str):
        raise ReproError(f"{source}: no model given (set `model:` in the spec or pass --model)")
    family = parse_model_name(user["model"]).family
    spec = deep_merge(_package_yaml(f"{family}.yaml"), user)
    validate(spec, source)
    return resolve_warmup(spec)


def resolve_warmup(spec):
    """The family's warm-up names the nets it is for (`models`): for any other net it is off, so the
    spec that is printed, saved and compared on resume says what the training does."""
    w = spec.get("warmup")
    if w and "models" in w:
        named = {parse_model_name(m).name for m in w["models"]}  # resnet110-A is resnet110
        if parse_model_name(spec["model"]).name not in named:
            spec["warmup"] = None
    return spec


SCHEDULE_TERMS = {
    "multistep": ("kind", "milestones", "gamma"),
    "plateau": ("kind", "gamma", "holdout", "patience_iters", "threshold", "max_drops"),
}


def paper_protocol(model):
    """The paper's protocol for `model` (reference.yaml `protocol:`, its family's): {spec key: value, or
    {"says": the paper's words, and the terms it pins}}; the warm-up only for the nets it names."""
    m = parse_model_name(model)
    protocol = dict(reference()["protocol"][m.family])
    w = protocol.get("warmup")
    if w:
        protocol["warmup"] = {k: v for k, v in w.items() if k != "models"} if m.name in w["models"] else None
    return protocol


def protocol_value(spec, key, processes=1):
    """A spec's value of a protocol key, as comparable with the paper's: only the terms of its schedule
    kind; the warm-up's rate, threshold and cap; for bn_batch the images each BatchNorm statistic is
    taken over (the per-process batch, or the ghost batch within it)."""
    value = spec
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if key == "schedule" and isinstance(value, dict):
        value = {k: value.get(k) for k in SCHEDULE_TERMS.get(value.get("kind"), ())}
    if key == "warmup" and isinstance(value, dict):  # how often it is checked is ours; the paper does not say
        value = {k: value.get(k) for k in ("lr", "until_train_error", "max_iters")}
    if key == "bn_batch":
        per_process = spec["batch_size"] // max(1, processes or 1)
        value = min(value, per_process) if value else per_process
    return value


def stated(paper):
    """Whether the paper states a value for a key (not just words: `says` with no term pinned)."""
    return not (isinstance(paper, dict) and "says" in paper and len(paper) == 1)


def matches(ours, paper):
    if isinstance(paper, dict) and "says" in paper:
        pinned = {k: v for k, v in paper.items() if k != "says"}
        return bool(pinned) and isinstance(ours, dict) and all(ours.get(k) == v for k, v in pinned.items())
    return ours == paper


def protocol_differences(spec, processes=1):
    """[(key, ours, the paper's)] for every protocol key in which a spec (trained in `processes`
    processes) departs from the paper's protocol as written, or where the paper only says words."""
    return [
        (key, ours, paper)
        for key, paper in paper_protocol(spec["model"]).items()
        if key != "precision" and not matches(ours := protocol_value(spec, key, processes), paper)
    ]


@functools.lru_cache(maxsize=None)
def built_in_departures(model):
    """Where the package's own spec for `model` (its defaults: the paper preset) departs from the paper as
    written, or chooses where the paper is silent: named once in the report, not as a reduction. Cached:
    the report asks for every run of every verdict, and the answer depends on the model only."""
    return tuple(protocol_differences(build_spec(None, [{"model": model}])))


def paper_differences(spec, processes=1):
    """The departures of a run from the paper that make it reduced: [(key, ours, the paper's)], every
    stated term of the protocol in which it differs both from the paper and from the package's paper
    preset (the preset's own departures are built in, named once by the report). Choices where the paper
    states nothing (BatchNorm's batch) and the arithmetic (bf16 autocast: spec.PRECISION_POLICY) are
    not reductions; the report names them with the values the runs used."""
    built_in = built_in_departures(spec["model"])
    return [d for d in protocol_differences(spec, processes) if stated(d[2]) and d not in built_in]


PRECISION_POLICY = (
    "bf16 autocast (precision: auto on hardware with native bf16) is named, not counted as a reduction: "
    "weights, BatchNorm statistics, the loss and the optimizer stay fp32, only convolution and matmul inputs "
    "are rounded to bf16, and evaluation is fp32; bf16 training of ResNets matched fp32 accuracy in the "
    "literature (Kalamkar et al. 2019, ResNet-50 on ImageNet) and within seed noise here (ResNet-20 on "
    "digits, benchmarks/README.md); the CIFAR-10 comparison has not been run. precision: fp32 trains in "
    "IEEE fp32 (TF32 off on GPUs, recorded as metrics.json `tf32`)."
)
