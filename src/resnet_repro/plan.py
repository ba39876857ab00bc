"""The workflow's config.yaml, resolved: the chosen preset merged over the top level, validated
(one-line errors), and the questions the Snakemake rules ask of it (which runs an artifact needs,
each run's training spec and resources). Kept here, not in the .smk files, so it is tested."""

import hashlib
import json
import os

import yaml

from resnet_repro.errors import ReproError
from resnet_repro.paper.catalogue import ARTIFACT, ARTIFACTS, CATALOGUE, CLAIM_VIEW, TABLES
from resnet_repro.paper.names import parse_model_name
from resnet_repro.paper.text import data_names
from resnet_repro.rundir import HISTORY, RESPONSES, run_path, view_metrics, view_scores
from resnet_repro.spec.build import deep_merge, read_yaml

# the MLflow store without --tracking-uri, $MLFLOW_TRACKING_URI or config.yaml's mlflow.tracking_uri
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# the digits as an ImageFolder, made by the workflow (rule digits_imagefolder) for presets that name it
DIGITS_IMAGEFOLDER = "data/digits-imagefolder"
SETTINGS = (
    "data",
    "training",
    "model_training",
    "seeds",
    "extra_seeds",
    "claim_seeds",
    "evaluation",
    "experiments",
    "resources",
)


def read_config(paths):
    """The config Snakemake builds from `--configfile` files (the Snakefile's config.yaml first): each
    file merged over those before it, mappings key by key, anything else replaced."""
    config = {}
    for path in paths:
        config = deep_merge(config, read_yaml(path, "workflow config"))
    return config


def validate(config, schema_path):
    import jsonschema

    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    # a failing sub-schema leaves every key "unevaluated": report the real cause first
    errors = [e for e in errors if e.validator != "unevaluatedProperties"] or errors
    error = jsonschema.exceptions.best_match(errors)
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "(top level)"
        raise ReproError(f"config: {where}: {error.message}")


def resolve(config):
    """The chosen preset merged over the top-level settings, its model names and resources checked."""
    preset = config["preset"]
    if preset not in config["presets"]:
        raise ReproError(
            f"config: preset {preset!r} is not defined; choose one of {', '.join(config['presets'])}"
            + (" (the tests' preset: --configfile tests/config/tiny.yaml)" if preset == "tiny" else "")
        )
    cfg = deep_merge({k: config[k] for k in SETTINGS if k in config}, config["presets"][preset])
    for key in ("model_training", "extra_seeds", "claim_seeds"):
        cfg.setdefault(key, {})
    for key in ("extra_seeds", "claim_seeds"):
        for model in cfg[key]:
            try:
                parse_model_name(model)
            except ReproError as err:
                raise ReproError(f"config: {key}: {err}") from None
    for fam, r in cfg["resources"].items():
        nodes = r.get("nodes", 1)
        if nodes > 1 and (r["gpus"] < nodes or r["gpus"] % nodes):
            raise ReproError(
                f"config: resources.{fam}: {r['gpus']} gpus do not split evenly over {nodes} nodes "
                f"(gpus is the total over all nodes)"
            )
    return cfg


def experiments(cfg):
    """{artifact: [(model, seed or None)]} from `experiments`; every artifact lists a model."""
    out = {}
    for name in ARTIFACTS:
        entries = []
        for e in cfg["experiments"].get(name, []):
            model, seed = (e, None) if isinstance(e, str) else (e["model"], e.get("seed"))
            try:
                parse_model_name(model)
            except ReproError as err:
                raise ReproError(f"config: experiments.{name}: {err}") from None
            entries.append((model, seed))
        if not entries:
            raise ReproError(f"config: experiments.{name} lists no models")
        out[name] = entries
    return out


def config_hash(cfg):
    """The hash of the settings that make the runs, recorded with each run and checked by the report;
    `claim_seeds` is left out: asking for more seeds of a model leaves the runs made before, their
    MLflow runs and the figures drawn from them as they were (the new runs are new jobs); so is
    `per_gpu`, which only says which trainings share a GPU."""
    made = {k: v for k, v in cfg.items() if k != "claim_seeds"}
    made["resources"] = {f: {k: v for k, v in r.items() if k != "per_gpu"} for f, r in cfg["resources"].items()}
    return hashlib.sha256(json.dumps(made, sort_keys=True).encode()).hexdigest()[:12]


def launch_line(r, per_node):
    """What goes in front of `resnet-repro train` for a training with resources `r`: nothing for one
    process; torchrun with one process per GPU on one node; on several nodes, srun (one task per node)
    and torchrun agents that meet at a c10d rendezvous on the job's first node (where the rule's shell
    runs). srun starts the agents with default signal handling, so each ignores SIGUSR1 itself (`trap ""
    USR1`, as the job's shell does on one node): Slurm's early warning then reaches only the trainers,
    which checkpoint."""
    if r["nodes"] > 1:
        return (
            f"srun --nodes={r['nodes']} --ntasks-per-node=1 --cpus-per-task={r['threads'] // r['nodes']} "
            f'--kill-on-bad-exit=1 sh -c \'trap "" USR1; exec "$0" "$@"\' '
            f"torchrun --nnodes={r['nodes']} --nproc_per_node={per_node} "
            f"--rdzv_backend=c10d --rdzv_endpoint=$(hostname):29400 --rdzv_id=${{SLURM_JOB_ID:-0}} "
            f"--no-python "
        )
    return f"torchrun --standalone --nproc_per_node={per_node} --no-python " if r["gpus"] > 1 else ""


def cifar_packs(plan):
    """[[(model, seed)]]: the CIFAR trainings that share one GPU in one job, `resources.cifar.per_gpu` at a
    time ([] at 1, the default): seed by seed, and within a seed shallowest first, so that a pack's
    trainings take about as long and seeds added later (claim_seeds) leave the packs before them as they
    were. The packs are the preset's: a target that needs one training of a pack trains the whole pack."""
    per_gpu = plan.cfg["resources"]["cifar"].get("per_gpu", 1)
    if per_gpu == 1:
        return []
    runs = sorted((r for r in plan.all_runs() if plan.family(r[0]) == "cifar"), key=lambda r: (r[1], depth(r[0]), r))
    return [runs[i : i + per_gpu] for i in range(0, len(runs), per_gpu)]


def evaluations(plan):
    """{(model, seed): {view, ...}}: what the preset evaluates of each run, once however many tables show it
    (None: its layer responses)."""
    out = {}
    for runs, view in plan.shown().values():
        for r in runs:
            out.setdefault(r, set()).add(view)
    return out


def check_packing(cfg):
    """per_gpu > 1 packs one-GPU CIFAR trainings: refused elsewhere, before any job starts."""
    for family, r in cfg["resources"].items():
        if r.get("per_gpu", 1) == 1:
            continue
        if family != "cifar" or r.get("gpus", 0) > 1 or r.get("nodes", 1) > 1:
            raise ReproError(
                f"resources.{family}.per_gpu: {r['per_gpu']}: only CIFAR trainings on at most one GPU and one "
                f"node share a GPU (here gpus: {r.get('gpus')}, nodes: {r.get('nodes', 1)})"
            )


def depth(model):
    return parse_model_name(model).depth


class Plan:
    def __init__(self, config, schema_path):
        validate(config, schema_path)
        self.preset = config["preset"]
        self.cfg = resolve(config)
        check_packing(self.cfg)
        self.tracking_uri = os.environ.get("MLFLOW_TRACKING_URI") or config["mlflow"].get(
            "tracking_uri", DEFAULT_TRACKING_URI
        )
        self.experiments = experiments(self.cfg)
        self.config_hash = config_hash(self.cfg)
        # the MLflow experiment of this preset's trainings: one per preset and data, so the list of
        # experiments reads as a list of reproductions (figures and tables: its reports experiment)
        self.mlflow_experiment = f"resnet-repro · {self.preset} · {data_names(self.cfg['data'].values())}"

    def family(self, model):
        return parse_model_name(model).family

    def seeds(self, model):
        """Every seed a model is trained with: `seeds`, and its `extra_seeds` and `claim_seeds`."""
        more = self.cfg["extra_seeds"].get(model, []) + self.cfg["claim_seeds"].get(model, [])
        return sorted(set(self.cfg["seeds"]) | set(more))

    def runs(self, artifact):
        """[(model, seed)] an artifact is made from: each model's seed its `experiments` entry names, else
        the first of `seeds` or every seed of the model (the catalogue's `seeds`)."""
        first = self.cfg["seeds"][0]
        out = []
        for model, seed in self.experiments[artifact]:
            if seed is not None:
                seeds = [seed]
            elif ARTIFACT[artifact].seeds == "first":
                seeds = [first]
            else:
                seeds = self.seeds(model)
            out += [(model, s) for s in seeds if (model, s) not in out]
        return out

    def claim_runs(self):
        """[(model, seed)]: every seed of each model of `claim_seeds`, the runs the report's claims rest on
        (each made with what the claims read of it: claim_files)."""
        return [(m, s) for m in sorted(self.cfg["claim_seeds"]) for s in self.seeds(m)]

    def claim_files(self, model):
        """The files of a claim run (relative to its run directory) the report's claims read: its
        training history, its family's claim evaluation (CLAIM_VIEW) with its per-image scores, and for
        a model of Figure 7 its layer responses."""
        view = CLAIM_VIEW[self.family(model)]
        files = [HISTORY, view_metrics(view), view_scores(view)]
        return files + ([RESPONSES] if model in self.response_models() else [])

    def response_models(self):
        return {m for a in CATALOGUE if a.shows == "responses" for m, _ in self.experiments[a.name]}

    def all_runs(self):
        """Every run of the preset: the figures' and tables' and the claims' (the report reads them all)."""
        return sorted({r for a in ARTIFACTS for r in self.runs(a)} | set(self.claim_runs()))

    def shown(self):
        """{name: (runs, view)}: what MLflow shows in trainings' runs beyond the training, one tracking job
        each: each table's view of its runs' evaluations, Figure 7's layer responses (view None), and
        the claims' (claims_shown)."""
        shows = sorted((a for a in CATALOGUE if a.shows), key=lambda a: a.shows != "eval")  # evaluations first
        out = {a.name: (self.runs(a.name), a.view if a.shows == "eval" else None) for a in shows}
        return {**out, **self.claims_shown()}

    def claims_shown(self):
        """{name: (runs, view)} of the claims' runs (`claim_seeds`; none: {}): their claim evaluations
        (claims-VIEW, one per view) and the layer responses of those of Figure 7's models (claims-responses)."""
        claims, out = self.claim_runs(), {}
        for view in sorted({CLAIM_VIEW[self.family(m)] for m, _ in claims}):
            out[f"claims-{view}"] = ([r for r in claims if CLAIM_VIEW[self.family(r[0])] == view], view)
        responses = [r for r in claims if r[0] in self.response_models()]
        if responses:
            out["claims-responses"] = (responses, None)
        return out

    def seed_groups(self):
        """{model: seeds} of the models a table reports, or the claims read, over several seeds
        (ResNet-110's five runs): MLflow groups them under a parent run with best / mean / std."""
        in_tables = {m for t in TABLES for m, seed in self.experiments[t] if seed is None}
        grouped = in_tables | set(self.cfg["claim_seeds"])
        return {m: self.seeds(m) for m in sorted(grouped) if len(self.seeds(m)) > 1}

    def seed_group_evaluations(self, model):
        """The names (of `shown`) that put a model's evaluations in MLflow: its seed group summarises
        them, so it waits for them."""
        return [n for n, (runs, view) in self.shown().items() if view and any(m == model for m, _ in runs)]

    def uses(self, model, seed):
        """The figures and tables made from a run; ['report'] for a run only the report's claims read."""
        used = [a for a in ARTIFACTS if (model, seed) in self.runs(a)]
        return used or (["report"] if (model, seed) in self.claim_runs() else [])

    def run_dir(self, model, seed):
        return run_path(self.preset, model, seed)

    def models(self, family):
        return sorted({m for m, _ in self.all_runs() if self.family(m) == family})

    def train_overrides(self, model, seed):
        """The training spec overrides for one run: family data and training settings, then the
        model's own, then model and seed."""
        fam = self.family(model)
        o = deep_merge({"data": self.cfg["data"][fam]}, self.cfg["training"].get(fam, {}))
        o = deep_merge(o, self.cfg["model_training"].get(model, {}))
        if fam == "imagenet" and "workers" not in o["data"]:
            # DataLoader workers from the CPUs each training process has (one of them is the process's own)
            o["data"]["workers"] = max(1, self.threads_per_process(model) - 1)
        return deep_merge(o, {"model": model, "seed": int(seed)})

    def data_overrides(self, family):
        """A spec that opens the family's data set as its trainings will (for `check-data`)."""
        model = {"cifar": "resnet20", "imagenet": "resnet18"}[family]
        o = deep_merge({"data": self.cfg["data"][family]}, self.cfg["training"].get(family, {}))
        return deep_merge(o, {"model": model})

    def resources(self, model):
        """A training job's resources: threads, mem_mb, gpus (totals over all its nodes), nodes, runtime."""
        return {"nodes": 1, **self.cfg["resources"][self.family(model)]}

    def processes_per_node(self, model):
        """Training processes per node: one per GPU (DDP), or one on the CPU."""
        r = self.resources(model)
        return max(1, r["gpus"] // r["nodes"])

    def threads_per_process(self, model):
        """CPU threads each training process may use: its share of its node's CPUs."""
        r = self.resources(model)
        return max(1, r["threads"] // r["nodes"] // self.processes_per_node(model))

    def one_gpu_resources(self, model):
        """What a one-GPU job on a training's model (evaluation, layer responses) asks for: the
        training's CPUs and memory per GPU, not the whole training's."""
        r = self.resources(model)
        share = max(1, r["gpus"])
        return {
            "threads": max(1, r["threads"] // share),
            "mem_mb": max(1000, r["mem_mb"] // share),
            "gpus": min(1, r["gpus"]),
        }

    def launcher(self, model):
        """torchrun (and srun on several nodes) in front of a training of `model` (launch_line)."""
        return launch_line(self.resources(model), self.processes_per_node(model))

    def data_dirs(self):
        """Data directories the workflow itself makes (the digits image folder), by family."""
        return {fam: d["root"] for fam, d in self.cfg["data"].items() if d.get("root") == DIGITS_IMAGEFOLDER}
