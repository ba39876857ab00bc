# Config resolution and input functions. The logic lives in resnet_repro.config (tested there).
import json
import os
import re
import sys

from resnet_repro.config import ARTIFACTS, FIGURES, TABLES, TABLE_VIEW, Plan
from resnet_repro.errors import ReproError

try:
    PLAN = Plan(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
except ReproError as e:  # one line, before any job starts
    sys.exit(f"resnet-repro: {e}")

PRESET = PLAN.preset
RUN = f"results/runs/{PRESET}/{{model}}/seed{{seed}}"
LOGS = f"logs/{PRESET}"
MLFLOW_STAMP = f"results/mlflow/{PRESET}.json"
MLFLOW_DIR = f"results/mlflow/{PRESET}"  # stamps: what is in MLflow (figures, tables, report, seed groups)


def models_regex(family):
    return "|".join(re.escape(m) for m in PLAN.models(family)) or "(?!)"


def run_dirs(artifact):
    return [PLAN.run_dir(m, s) for m, s in PLAN.runs(artifact)]


def run_files(artifact, name):
    return [f"{d}/{name}" for d in run_dirs(artifact)]


def run_args(artifact):
    return " ".join(f"--run {d}" for d in run_dirs(artifact))


def artifact_files(wildcards):
    """The files of a figure, table or the report, as `track report` logs them."""
    name = wildcards.artifact
    if name in FIGURES:
        return [f"reports/{name}.pdf", f"reports/{name}.png"]
    if name in TABLES:
        return [f"results/{name}.csv", f"results/{name}.md"]
    return ["reports/report.html", "reports/report.pdf", "reports/report.json"]


def artifact_sources(name):
    """The training runs a figure, table or the report is made from."""
    if name == "report":
        return sorted({d for artifact in ARTIFACTS for d in run_dirs(artifact)})
    return run_dirs(name)


def seed_group_inputs(wildcards):
    """A model's seeds, tracked with the evaluations the tables show."""
    dirs = [PLAN.run_dir(wildcards.model, s) for s in PLAN.seed_groups()[wildcards.model]]
    views = PLAN.table_views(wildcards.model)
    return [f"{d}/mlflow.json" for d in dirs] + [f"{d}/eval/{v}/mlflow.json" for d in dirs for v in views]


def tracking_stamps():
    """Every MLflow stamp of the preset's figures, tables and seed groups (the report's: its own target)."""
    return [f"{MLFLOW_DIR}/{a}.json" for a in ARTIFACTS] + [f"{MLFLOW_DIR}/seeds/{m}.json" for m in PLAN.seed_groups()]


def data_stamp(wildcards):
    return f"results/data/{PRESET}/{PLAN.family(wildcards.model)}.json"


def made_data(wildcards):
    """The data directory a rule makes (the digits image folder), if the family uses it."""
    root = PLAN.data_dirs().get(wildcards.family)
    return [root] if root else []


def train_overrides(wildcards):
    return json.dumps(PLAN.train_overrides(wildcards.model, wildcards.seed))


def launcher(wildcards):
    """torchrun in front of a training on several GPUs (DDP, one process per GPU, on one node);
    nothing for one GPU or the CPU."""
    gpus = PLAN.resources(wildcards.model)["gpus"]
    return f"torchrun --standalone --nproc_per_node={gpus} --no-python " if gpus > 1 else ""


def resource(name):
    return lambda wildcards: PLAN.resources(wildcards.model)[name]


def runtime(fraction=1, minimum=1):
    """Wall time in minutes (config `resources.runtime` times `fraction`), times the attempt: a job
    retried after hitting its time limit gets longer each time (a training resumes from its
    checkpoint, so the retry only has to finish it)."""
    return lambda wildcards, attempt: max(minimum, int(PLAN.resources(wildcards.model)["runtime"] * fraction)) * attempt
