"""MLflow tracking after the fact: one run per finished training (its curves and evaluations; its data
set and model: inputs.py); runs over runs (a model's seeds, figures, tables: runs.py).

Every command is idempotent: rerunning it finds the run it made before (by mlflow.json, or by tags)
instead of making a duplicate. The store itself (URI, retried client, setup) is store.py's; the
`track` sub-command is commands.py's. mlflow (and torch, via files) is imported inside functions
only, so `track`'s parser stays light.
"""

from pathlib import Path

from resnet_repro.digest import sha256
from resnet_repro.errors import ReproError
from resnet_repro.files import write_json
from resnet_repro.rundir import (
    HISTORY,
    LIVE_FILE,
    METRICS,
    MLFLOW,
    MODEL,
    RESPONSES,
    SPEC,
    RunDir,
    eval_dir,
    view_metrics,
)
from resnet_repro.tracking.inputs import dataset_inputs, log_model
from resnet_repro.tracking.store import (
    client,
    experiment_arg,
    experiment_id,
    find_finished,
    git_commit,
    log,
    quote,
    read_json,
    run_dir_tag,
    tracking_uri,
)

HISTORY_METRICS = ["train_error", "test_error", "train_loss", "test_loss", "lr", "holdout_error"]
SUMMARY_METRICS = ["images_per_s", "s_per_1k_iters", "elapsed_s"]
TRAIN_FILES = [MODEL, HISTORY, SPEC, METRICS]  # the finished training (MODEL: the final model, no optimizer state)
COMMIT_TAGS = ("git_commit", "mlflow.source.git.commit")
BATCH = 1000  # MLflow's limit of metrics per log_batch


# ---------------------------------------------------------------- training runs


def millis(seconds):
    return int(round(seconds * 1000))


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def read_run_dir(run_dir):
    """(spec, history rows, metrics) of a finished training, read through RunDir."""
    if not Path(run_dir).is_dir():
        raise ReproError(f"run directory {run_dir} does not exist")
    missing = [n for n in TRAIN_FILES if not (Path(run_dir) / n).is_file()]
    if missing:
        raise ReproError(f"run directory {run_dir} lacks {', '.join(missing)} (is the training finished?)")
    run = RunDir(run_dir)
    return run.spec, run.history, run.metrics


def _warmup_param(w):
    if not isinstance(w, dict):
        return str(w or "none")  # a spec.yaml from before the warm-up was resolved ("auto")
    return f"lr {w['lr']} until train error < {w['until_train_error']}% (at most {w.get('max_iters', '-')} it)"


def train_params(spec, preset, config_hash, commit):
    from resnet_repro.paper.names import parse_model_name

    m = parse_model_name(spec["model"])
    sched = spec["schedule"]
    return {
        "model": spec["model"],
        "family": m.family,
        "depth": m.depth,
        "shortcut": m.shortcut if m.residual else "none",
        "residual": m.residual,
        "dataset": spec["data"]["kind"],
        "seed": spec["seed"],
        "schedule_kind": sched["kind"],
        "schedule_milestones": ",".join(str(v) for v in sched.get("milestones") or []) or "none",
        "lr": spec["lr"],
        "batch_size": spec["batch_size"],
        "max_iters": spec["max_iters"],
        "bn_batch": spec.get("bn_batch") or "batch",
        "warmup": _warmup_param(spec.get("warmup")),
        "preset": preset,
        "git_commit": commit,
        "config_hash": config_hash or "none",
    }


def history_metrics(history, start_ms):
    """Metric points of every history row: step = iteration, timestamp = start + elapsed_s."""
    from mlflow.entities import Metric

    points = []
    for row in history:
        step = int(row["iteration"])
        stamp = start_ms + millis(_float(row.get("elapsed_s")) or 0.0)
        for key in HISTORY_METRICS:
            value = _float(row.get(key))
            if value is not None:
                points.append(Metric(key, value, stamp, step))
    return points


def summary_metrics(summary, step, stamp):
    from mlflow.entities import Metric

    keys = SUMMARY_METRICS + sorted(k for k in summary if k.startswith("peak_") or "memory" in k)
    return [
        Metric(k, float(summary[k]), stamp, step)
        for k in keys
        if isinstance(summary.get(k), (int, float)) and not isinstance(summary[k], bool)
    ]


def eval_metrics(run_dir, step, views=None):
    """(metrics, files) of RUN/eval/<view>/metrics.json: <view>_top1_error, <view>_top5_error, and
    {file: the precision that evaluation used}."""
    from mlflow.entities import Metric

    points, files = [], {}
    for path in sorted(Path(run_dir).glob(view_metrics("*"))):
        if views is not None and path.parent.name not in views:
            continue
        stamp = millis(path.stat().st_mtime)  # fixed per file, so relogging is a no-op in MLflow
        evaluation = read_json(path, "evaluation")
        for view, res in evaluation.get("views", {}).items():
            for key in ("top1_error", "top5_error"):
                if isinstance(res.get(key), (int, float)):
                    points.append(Metric(f"{view}_{key}", float(res[key]), stamp, step))
        files[path] = evaluation.get("precision", "unknown")
    return points, files


def log_metrics(c, run_id, metrics):
    for i in range(0, len(metrics), BATCH):
        c.log_batch(run_id, metrics=metrics[i : i + BATCH], synchronous=True)


def log_eval(c, run, run_dir, step, views=None, responses=True):
    """Add the evaluation metrics RUN has that the MLflow run lacks (and the evaluation files,
    responses.csv); return how many metrics were new. views: only these eval/<view>/ files."""
    points, files = eval_metrics(run_dir, step, views)
    have = run.data.metrics
    new = [m for m in points if have.get(m.key) != m.value]
    log_metrics(c, run.info.run_id, new)
    for path, precision in files.items():
        c.log_artifact(run.info.run_id, str(path), eval_dir(path.parent.name))
        # the arithmetic of that evaluation (fp32 unless asked otherwise), beside its numbers
        if run.data.tags.get(f"{path.parent.name}_precision") != precision:
            c.set_tag(run.info.run_id, f"{path.parent.name}_precision", precision)
    if responses and (Path(run_dir) / RESPONSES).is_file():  # Figure 7's layer responses, when computed
        c.log_artifact(run.info.run_id, str(Path(run_dir) / RESPONSES))
    return len(new)


def existing_run(c, run_dir, sha):
    """The run RUN/mlflow.json (or, for a training logged live, RUN/mlflow-live.json) names, if it is
    still in the store, is this run directory's and has this checkpoint (or none yet), else None."""
    from mlflow.exceptions import MlflowException

    for name in (MLFLOW, LIVE_FILE):
        path = Path(run_dir) / name
        if not path.exists():
            continue
        try:
            run = c.get_run(read_json(path, "tracking file")["run_id"])
        except (MlflowException, KeyError, ReproError):
            continue
        tags = run.data.tags
        if (
            run.info.lifecycle_stage == "active"
            and tags.get("run_dir") == run_dir_tag(run_dir)
            and tags.get("checkpoint_sha256", sha) == sha
        ):
            return run
    return None


def run_tags(spec, summary=None):
    """Tags of a training run, known when it starts (summary: metrics.json, once it has ended)."""
    import getpass

    tags = {
        "model": spec["model"],
        "dataset": spec["data"]["kind"],
        "mlflow.user": getpass.getuser(),
        "mlflow.source.type": "LOCAL",
        "mlflow.source.name": "resnet-repro train",
        "mlflow.runName": f"{spec['model']} · {spec['data']['kind']} · seed {spec['seed']}",
    }
    if summary:
        tags.update(
            {
                "device": str(summary.get("device", "unknown")),
                # what the arithmetic was, as the training resolved `precision: auto` on its hardware
                "precision": str(summary.get("precision", "unknown")),
                "eval_precision": str(summary.get("eval_precision", "unknown")),
            }
        )
    return tags


def track_train(run_dir, preset, uses=(), config_hash=None, uri=None, experiment=None, source=None):
    """Log the finished training in run_dir as one MLflow run (idempotent): a new run, or the one a
    live training made (RUN/mlflow.json), completed; return its run id."""
    run_dir = Path(run_dir)
    spec, history, summary = read_run_dir(run_dir)
    uri = tracking_uri(uri)
    sha = sha256(run_dir / MODEL)
    c = client(uri)
    exp_id = experiment_id(c, experiment_arg(experiment), uri)
    last_step = int(history[-1]["iteration"]) if history else 0

    run = existing_run(c, run_dir, sha)
    if run is None:
        found = find_finished(c, exp_id, {"run_dir": run_dir_tag(run_dir), "checkpoint_sha256": sha})
        if found:  # tracked before but mlflow.json was lost: adopt the run rather than duplicate it
            run = found[0]
            log(f"{run_dir} was tracked as run {run.info.run_id} (mlflow.json was missing); rewriting it")
    if run is None:
        run = _create_train_run(c, exp_id, run_dir, spec, summary)
        log(f"logged {run_dir} as run {run.info.run_id} in {uri}")
    else:
        exp_id = run.info.experiment_id
    commit = git_commit()
    done = _complete_train_run(
        c,
        run,
        run_dir,
        spec,
        history,
        summary,
        sha,
        last_step,
        uri,
        {
            "preset": preset,
            "git_commit": commit,
            "mlflow.source.git.commit": commit,
            "uses": ",".join(uses),
            "checkpoint_sha256": sha,
            **({"mlflow.source.name": source} if source else {}),
        },
        train_params(spec, preset, config_hash, commit),
    )
    log(
        f"{run_dir}: run {run.info.run_id} "
        + (f"completed ({', '.join(done)})" if done else "already complete; nothing to do")
    )
    run = c.get_run(run.info.run_id)
    n = log_eval(c, run, run_dir, last_step)
    if n:
        log(f"added {n} evaluation metrics")
    write_json(run_dir / MLFLOW, {"run_id": run.info.run_id, "experiment_id": exp_id, "tracking_uri": uri})
    return run.info.run_id


def _create_train_run(c, exp_id, run_dir, spec, summary):
    # the run's clock is the training's: it ended when metrics.json was written
    end_ms = millis((run_dir / METRICS).stat().st_mtime)
    start_ms = end_ms - millis(float(summary.get("elapsed_s") or 0.0))
    tags = {**run_tags(spec, summary), "run_dir": run_dir_tag(run_dir)}
    # a run a crashed attempt left RUNNING for this run directory is marked FAILED, not reused
    stale = c.search_runs([exp_id], f"tags.run_dir = {quote(tags['run_dir'])} and attributes.status = 'RUNNING'")
    for r in stale:
        c.set_terminated(r.info.run_id, "FAILED")
    return c.create_run(exp_id, start_time=start_ms, tags=tags, run_name=tags["mlflow.runName"])


def _complete_train_run(c, run, run_dir, spec, history, summary, sha, last_step, uri, tags, params):
    """Add what the run lacks (idempotent): history points, summary metrics, params, tags, the files,
    the data set as inputs, the model as a LoggedModel; end it FINISHED. Returns what was added."""
    from mlflow.entities import Param

    run_id, done = run.info.run_id, []
    end_ms = millis((run_dir / METRICS).stat().st_mtime)
    start_ms = run.info.start_time or end_ms - millis(float(summary.get("elapsed_s") or 0.0))
    have_steps = {m.step for m in c.get_metric_history(run_id, "train_error")}
    points = [m for m in history_metrics(history, start_ms) if m.step not in have_steps]
    points += [m for m in summary_metrics(summary, last_step, end_ms) if m.key not in run.data.metrics]
    if points:
        log_metrics(c, run_id, points)
        done.append(f"{len(points)} metric points")
    new_params = [Param(k, str(v)) for k, v in params.items() if k not in run.data.params]
    if new_params:
        c.log_batch(run_id, params=new_params, synchronous=True)
        done.append("params")
    tags = {**run_tags(spec, summary), **tags}
    for k, v in tags.items():
        # the commit is that of the first import (as the git_commit param, which MLflow cannot change):
        # a later `track train` from newer code must not rewrite a finished run's provenance
        if k in COMMIT_TAGS and k in run.data.tags:
            continue
        if run.data.tags.get(k) != v:
            c.set_tag(run_id, k, v)
    if run.data.tags.get("files_sha256") != sha:
        for f in TRAIN_FILES:
            c.log_artifact(run_id, str(run_dir / f))
        c.set_tag(run_id, "files_sha256", sha)
        done.append("files")
    if not run.inputs.dataset_inputs:
        c.log_inputs(run_id, datasets=dataset_inputs(spec, summary))
        done.append("data set")
    if not run.data.tags.get("logged_model_id"):
        model_id = log_model(run_id, run_dir, spec, params, uri)
        if model_id:
            c.set_tag(run_id, "logged_model_id", model_id)
            done.append("model")
    if run.info.status != "FINISHED":
        c.set_terminated(run_id, "FINISHED", end_time=end_ms)
    return done


def check_eval_inputs(run_dirs, views=None):
    """Each run directory exists, has the evaluations `views` names and has been tracked (mlflow.json)."""
    for run_dir in map(Path, run_dirs):
        if not run_dir.is_dir():
            raise ReproError(f"run directory {run_dir} does not exist")
        for view in views or ():
            if not (run_dir / view_metrics(view)).is_file():
                raise ReproError(f"{run_dir / view_metrics(view)} does not exist (run `resnet-repro evaluate`)")
        if not (run_dir / MLFLOW).is_file():
            raise ReproError(f"{run_dir / MLFLOW} does not exist: run `resnet-repro track train {run_dir}` first")


def track_eval(run_dir, uri=None, views=None, responses=True):
    """Add RUN's evaluation metrics (all, or those of `views`; and responses.csv) to the run
    RUN/mlflow.json names; return (run id, how many metrics were new)."""
    run_dir = Path(run_dir)
    check_eval_inputs([run_dir], views)
    info = read_json(run_dir / MLFLOW, "tracking file")
    uri = tracking_uri(uri)
    c = client(uri)
    run = c.get_run(info["run_id"])
    step = int(run.data.params.get("max_iters", 0))
    return run.info.run_id, log_eval(c, run, run_dir, step, views, responses)
