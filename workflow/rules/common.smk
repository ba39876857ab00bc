# Config resolution and input functions. The logic lives in resnet_repro.plan (tested there).
import json
import os
import re
import shlex
import signal
import sys

from resnet_repro.paper.catalogue import ARTIFACT, ARTIFACTS, CATALOGUE, CLAIM_VIEW, ENSEMBLE, FIGURES, TABLES
from resnet_repro.plan import DIGITS_IMAGEFOLDER, Plan, cifar_packs, evaluations
from resnet_repro.errors import ReproError
from resnet_repro.rundir import HISTORY, METRICS, MLFLOW, MODEL, RESPONSES, eval_dir, run_path, view_metrics, view_scores

try:
    PLAN = Plan(config, os.path.join(workflow.basedir, "workflow", "schemas", "config.schema.yaml"))
except ReproError as e:  # one line, before any job starts
    sys.exit(f"resnet-repro: {e}")

# Site settings of a cluster profile (slurm/config.yaml's EDIT block passes them on in the environment);
# unset on one machine.
def site_minutes(name):
    value = os.environ.get(name, "")
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        sys.exit(f"resnet-repro: {name}={value!r}: expected a whole number above 0")
    return int(value)


MAX_RUNTIME = site_minutes("RESNET_SLURM_MAX_RUNTIME")  # minutes: the partition's time limit
SLURM_WARN_SECONDS = site_minutes("RESNET_SLURM_WARN_SECONDS")  # the early warning before it (seconds)
SLURM_GPU_MODEL = os.environ.get("RESNET_SLURM_GPU_MODEL", "")
# attempts after the first, for trainings: made by the Snakemake that submits the jobs, never by the one
# inside a job (which would rerun the training within the same, expiring, Slurm allocation)
TRAIN_RETRIES = None if workflow.remote_exec else site_minutes("RESNET_SLURM_TRAIN_RETRIES")

# Slurm's early warning (--signal=USR1@N, slurm/config.yaml) goes to every process of the job step: this
# Snakemake, its shell, torchrun and the trainers. The trainer checkpoints on it; the others would die of
# it (the default action) and take the job step, trainer included, with them. So in a Slurm job they
# ignore it, and so do their children (an ignored signal stays ignored across exec) until the trainer
# installs its handler.
if os.environ.get("SLURM_JOB_ID"):
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)

# every job's software (`snakemake --sdm conda`; relative to the rules' files)
CONDA_ENV = "../envs/resnet-repro.yaml"

PRESET = PLAN.preset
PACKS = cifar_packs(PLAN)  # CIFAR trainings sharing a GPU (resources.cifar.per_gpu > 1); none by default
EVALUATED = {r for r, views in evaluations(PLAN).items() if views - {None}}  # runs a table or the claims evaluate
RUN = run_path(PRESET, "{model}", "{seed}")
LOGS = f"logs/{PRESET}"
TRAIN_LOG = f"{LOGS}/train/{{model}}-seed{{seed}}.log"  # a training's log: its attempt's, and of all its attempts
TRAIN_ATTEMPTS_LOG = f"{LOGS}/train/{{model}}-seed{{seed}}.attempts.log"
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
    if wildcards.artifact in ARTIFACT:
        return list(ARTIFACT[wildcards.artifact].files())
    return ["reports/report.html", "reports/report.pdf", "reports/report.json"]


def artifact_sources(name):
    """The training runs a figure, table or the report is made from (the report: every run, the
    claims' extra seeds included)."""
    if name == "report":
        return sorted({PLAN.run_dir(m, s) for m, s in PLAN.all_runs()})
    return run_dirs(name)


# what shows more of a run than its training: a table its evaluations in one view, Figure 7 its layer
# responses, the claims (config `claim_seeds`) their runs' evaluations and responses; `track_shown` logs
# them into the runs, one job each (resnet_repro.plan.Plan.shown)
SHOWN = tuple(PLAN.shown())


def shown_stamp(name):
    return f"{MLFLOW_DIR}/shown/{name}.json"


def shown_dirs(name):
    return [PLAN.run_dir(m, s) for m, s in PLAN.shown()[name][0]]


def shown_files(wildcards):
    """The files of each run that an artifact (or the claims) shows beyond its training."""
    view = PLAN.shown()[wildcards.artifact][1]
    name = view_metrics(view) if view else RESPONSES
    return [f"{d}/{name}" for d in shown_dirs(wildcards.artifact)]


def shown_what(wildcards):
    view = PLAN.shown()[wildcards.artifact][1]
    return f"--view {view}" if view else "--responses"


def seed_group_inputs(wildcards):
    """A model's seeds, tracked with the evaluations the tables (and the claims) show."""
    dirs = [PLAN.run_dir(wildcards.model, s) for s in PLAN.seed_groups()[wildcards.model]]
    return [f"{d}/{MLFLOW}" for d in dirs] + [shown_stamp(n) for n in PLAN.seed_group_evaluations(wildcards.model)]


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
    """torchrun in front of a training on several GPUs (DDP, one process per GPU), srun + torchrun
    on several nodes; nothing for one GPU or the CPU (resnet_repro.plan.Plan.launcher)."""
    return PLAN.launcher(wildcards.model)


def resource(name):
    return lambda wildcards: PLAN.resources(wildcards.model)[name]


def one_gpu(name):
    """A one-GPU job's share of its model's training resources (evaluation, layer responses)."""
    return lambda wildcards: PLAN.one_gpu_resources(wildcards.model)[name]


def runtime(fraction=1, minimum=1):
    """Wall time in minutes (config `resources.runtime` times `fraction`), times the attempt, but never
    above the partition's limit (MAX_RUNTIME): a training resumes from its checkpoint, so it needs
    more attempts of a length the partition allows, not longer ones (TRAIN_RETRIES)."""
    def minutes(wildcards, attempt):
        t = max(minimum, int(PLAN.resources(wildcards.model)["runtime"] * fraction)) * attempt
        return min(t, MAX_RUNTIME) if MAX_RUNTIME else t
    return minutes


def follow_up_minutes(wildcards, attempt):
    """Wall time of a CIFAR run's evaluation or layer responses: a tenth of the training's (at least 10
    minutes), times the attempt; on a cluster at most a tenth of max_runtime each (0 below 10 minutes:
    the partition's default), since they run in the training's own job (slurm/config.yaml `groups`),
    whose time limit is the sum of its jobs' (Snakemake's group resources)."""
    t = max(10, int(PLAN.resources(wildcards.model)["runtime"] * 0.1)) * attempt
    return min(t, MAX_RUNTIME // 10) if MAX_RUNTIME else t


def cifar_training_minutes(wildcards, attempt):
    """A CIFAR training's wall time: as any training's (runtime), but on a cluster capped at max_runtime
    less the two follow-ups its job may run after it, so that the job stays within max_runtime."""
    t = max(1, PLAN.resources(wildcards.model)["runtime"]) * attempt
    return min(t, MAX_RUNTIME - 2 * follow_up_minutes(wildcards, attempt)) if MAX_RUNTIME else t


def evaluation_first(wildcards):
    """A CIFAR run's layer responses wait for its evaluation, where the workflow evaluates the run: in the
    training's cluster job they then run one after the other on its one GPU (Snakemake adds up the
    resources of a group's jobs that could run side by side). `ancient`: an evaluation made again does
    not make the responses stale."""
    if (wildcards.model, int(wildcards.seed)) not in EVALUATED:
        return []
    return [ancient(f"{PLAN.run_dir(wildcards.model, wildcards.seed)}/{view_metrics(CLAIM_VIEW['cifar'])}")]


def attempt(wildcards, attempt):
    """The attempt number, for the header line each attempt writes into the (appended) log."""
    return attempt


def train_resources(family):
    """A training job's Slurm resources. One node: `gpu` GPUs (the plugin's --gpus). Several nodes: the
    plugin's multi-node path (`mpi`: the rule's own srun starts one task per node), GPUs per node as
    GRES, memory per node."""
    models = PLAN.models(family)
    r = PLAN.resources(models[0]) if models else {"nodes": 1}
    common = dict(runtime=cifar_training_minutes if family == "cifar" else runtime(), attempt=attempt)
    if r["nodes"] == 1:
        return dict(common, mem_mb=resource("mem_mb"), gpu=resource("gpus"), nodes=1)
    return dict(common, mem_mb=r["mem_mb"] // r["nodes"], nodes=r["nodes"], mpi="srun", tasks=r["nodes"],
                tasks_per_gpu=0, gres=f"gpu:{r['gpus'] // r['nodes']}")


def follow_up_resources():
    """What a CIFAR run's evaluation or layer responses ask for: one GPU and a training's CPUs and memory
    per GPU. After a training on several nodes, the training's nodes, tasks and GRES instead: a cluster
    runs them in the training's job, and Snakemake refuses a group whose jobs' string resources (the
    plugin's `mpi`, `gres`) differ; they then run on the job's first node."""
    models = PLAN.models("cifar")
    common = dict(mem_mb=one_gpu("mem_mb"), runtime=follow_up_minutes, attempt=attempt)
    if not models or PLAN.resources(models[0])["nodes"] == 1:
        return dict(common, gpu=one_gpu("gpus"))
    training = train_resources("cifar")
    return dict(common, **{k: training[k] for k in ("nodes", "mpi", "tasks", "tasks_per_gpu", "gres")})


def training_source(wildcards):
    """What trained a run, as MLflow's source of its run says, its pack where it has one."""
    run = (wildcards.model, int(wildcards.seed))
    packed = [i for i, pack in enumerate(PACKS) if run in pack]
    name, command = (f"train_cifar_pack{packed[0]}", "train-pack") if packed else (f"train_{PLAN.family(wildcards.model)}", "train")
    return " ".join(["snakemake", "rule", f"{name}:", "resnet-repro", command])


def pack_name(pack):
    return "+".join(f"{m}-seed{s}" for m, s in pack)


def pack_outputs(pack):
    """Each training's model (write-protected, as train_cifar's), history and metrics."""
    dirs = [PLAN.run_dir(m, s) for m, s in pack]
    return [protected(f"{d}/{MODEL}") for d in dirs] + [f"{d}/{f}" for d in dirs for f in (HISTORY, METRICS)]


def pack_logs(pack):
    """The pack's own log, then each training's (the same as train_cifar's)."""
    return [f"{LOGS}/train/{pack_name(pack)}.log"] + [TRAIN_LOG.format(model=m, seed=s) for m, s in pack]


def pack_runs(pack):
    """`--run OUT OVERRIDES ATTEMPTS_LOG LOG` for each training of a pack (`resnet-repro train-pack`)."""
    return " ".join(
        f"--run {PLAN.run_dir(m, s)} {shlex.quote(json.dumps(PLAN.train_overrides(m, s)))} "
        f"{TRAIN_ATTEMPTS_LOG.format(model=m, seed=s)} {TRAIN_LOG.format(model=m, seed=s)}"
        for m, s in pack
    )


def pack_resources(pack):
    """A pack's job: its trainings' GPU, their memory and wall time each times their number (they share
    the GPU: without MPS it time-slices), capped at max_runtime; and what a cluster profile gives every
    training job (the early warning, the GPU model: slurm/config.yaml passes them on), since it cannot
    name these rules."""
    r, n = PLAN.resources(pack[0][0]), len(pack)

    def minutes(wildcards, attempt):
        t = r["runtime"] * n * attempt
        return min(t, MAX_RUNTIME) if MAX_RUNTIME else t

    extra = {"slurm_extra": f"--signal=USR1@{SLURM_WARN_SECONDS}"} if SLURM_WARN_SECONDS else {}
    if SLURM_GPU_MODEL:
        extra["gpu_model"] = SLURM_GPU_MODEL
    return dict(gpu=r["gpus"], mem_mb=r["mem_mb"] * n, runtime=minutes, attempt=attempt, **extra)


def node_threads(wildcards):
    """Snakemake's threads for a training job: its CPUs per node (per Slurm task)."""
    r = PLAN.resources(wildcards.model)
    return max(1, r["threads"] // r["nodes"])


# Input functions of the figure, table and report rules


def artifact_caption(wildcards):
    """The paper's caption of a figure (its data set replaced by the runs') or table."""
    from resnet_repro.paper.text import caption, data_name, reference

    art = ARTIFACT[getattr(wildcards, "figure", None) or wildcards.table]
    if art.kind == "figure":
        return caption(art.name, data_name(PLAN.cfg["data"][art.family]))
    return reference()["tables"][art.name]


def figure_inputs(wildcards):
    name = wildcards.figure
    files = run_files(name, MLFLOW) + run_files(name, HISTORY)
    if ARTIFACT[name].shows == "responses":
        files += run_files(name, RESPONSES) + [shown_stamp(name)]
    return files


def figure_args(wildcards):
    name = wildcards.figure
    args = run_args(name)
    if ARTIFACT[name].shows == "responses":
        args += " " + " ".join(f"--responses {f}" for f in run_files(name, RESPONSES))
    return args


def table_inputs(wildcards):
    name, view = wildcards.table, ARTIFACT[wildcards.table].view
    files = run_files(name, view_metrics(view)) + [shown_stamp(name)]
    if ARTIFACT[name].ensemble:
        files.append(rules.ensemble.output[0])
    return files


def table_args(wildcards):
    args = run_args(wildcards.table)
    if ARTIFACT[wildcards.table].ensemble:
        args += f" --ensemble {rules.ensemble.output[0]}"
    return args


def report_run_files(wildcards):
    files = [f"{d}/{name}" for d in artifact_sources("report") for name in (MLFLOW, HISTORY)]
    for a in CATALOGUE:  # the evaluations behind each table (the report reads their sizes), Figure 7's responses
        if a.shows:
            files += run_files(a.name, view_metrics(a.view) if a.shows == "eval" else RESPONSES)
    # what the claims read of each of their runs (config `claim_seeds`), and that it is in MLflow
    files += [f"{PLAN.run_dir(m, s)}/{f}" for m, s in PLAN.claim_runs() for f in PLAN.claim_files(m)]
    files += [shown_stamp(n) for n in PLAN.claims_shown()]
    # the figures and tables in MLflow first: the report links each to its run
    files += [f"{MLFLOW_DIR}/{a}.json" for a in ARTIFACTS]
    return sorted(set(files))
