"""Training specs: the family's defaults (specs/*.yaml), then the user's YAML, then flags,
validated against specs/train_spec.schema.yaml."""

import copy
from importlib import resources

import yaml

from .errors import ReproError
from .names import parse_model_name


def _package_yaml(name):
    return yaml.safe_load(resources.files("resnet_repro").joinpath("specs", name).read_text())


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


def read_yaml(path):
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ReproError(f"cannot read spec {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ReproError(f"spec {path}{where} is not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReproError(f"spec {path} must be a YAML mapping, got {type(data).__name__}")
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
                f"(see src/resnet_repro/specs/imagenet.yaml)"
            )
    bn, batch = spec.get("bn_batch"), spec["batch_size"]
    if bn and batch > bn and batch % bn:
        raise ReproError(f"{source}: batch_size {batch} is not a multiple of bn_batch {bn}")
    scale = spec["data"].get("scale")
    if scale and scale[0] > scale[1]:
        raise ReproError(f"{source}: data.scale must be [min, max], got {scale}")


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


# What defines the paper's protocol in a training spec (not: paths, logging, checkpoints, devices, seed)
PROTOCOL_KEYS = (
    "data.kind",
    "data.image_size",
    "data.val_split",
    "data.scale",
    "data.crop",
    "data.test_size",
    "data.lighting",
    "augment",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "max_iters",
    "warmup",
    "bn_batch",
    "num_classes",
)
SCHEDULE_TERMS = {
    "multistep": ("kind", "milestones", "gamma"),
    "plateau": ("kind", "gamma", "holdout", "patience_iters", "threshold", "max_drops"),
}
PAPER_PRECISION = "fp32"  # 2015: single precision throughout


def _protocol_value(spec, key):
    value = spec
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if key == "schedule" and isinstance(value, dict):
        value = {k: value.get(k) for k in SCHEDULE_TERMS.get(value.get("kind"), ())}
    if key == "warmup" and isinstance(value, dict):  # when it is checked, and its cap, are ours, not the paper's
        value = {k: value.get(k) for k in ("lr", "until_train_error")}
    return value


def paper_differences(spec, precision=None):
    """Every way a run's training spec (and the precision it trained in) departs from the paper's
    protocol for its model: [(key, ours, the paper's)]."""
    paper = build_spec(None, [{"model": spec["model"]}])
    out = [
        (key, ours, theirs)
        for key in PROTOCOL_KEYS
        if (ours := _protocol_value(spec, key)) != (theirs := _protocol_value(paper, key))
    ]
    if precision and precision != PAPER_PRECISION:
        out.append(("precision", precision, PAPER_PRECISION))
    return out
