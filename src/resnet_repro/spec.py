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
    if spec["schedule"]["kind"] == "multistep" and "milestones" not in spec["schedule"]:
        raise ReproError(f"{source}: schedule.milestones is required for a multistep schedule")
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
    return spec


def warmup_for(spec):
    """The warm-up rule actually used: 'auto' means the paper's rule for CIFAR nets of 110+ layers."""
    w = spec.get("warmup")
    if w == "auto":
        m = parse_model_name(spec["model"])
        if m.family == "cifar" and m.depth >= 110:
            return {"lr": 0.01, "until_train_error": 80.0, "check_every": 100}
        return None
    if w:
        return {"check_every": 100, **w}
    return None
