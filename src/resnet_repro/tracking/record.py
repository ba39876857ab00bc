"""MLflow tracking after the fact: one run per finished training (its curves, evaluations, data set
and model), a parent run over one model's seeds, one run per figure/table.

Every command is idempotent: rerunning it finds the run it made before (by mlflow.json, or by tags)
instead of making a duplicate. The store itself (URI, retried client, setup) is store.py's; the
`track` sub-command is commands.py's. mlflow (and torch, via files) is imported inside functions
only, so `track`'s parser stays light.
"""

import hashlib
import json
import os
import time
from pathlib import Path

import resnet_repro
from resnet_repro.digest import artifacts_digest, sha256
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
from resnet_repro.tracking.store import (
    client,
    experiment_arg,
    experiment_id,
    find_finished,
    git_commit,
    log,
    quote,
    read_json,
    reports_experiment,
    retry,
    run_dir_tag,
    tracking_uri,
)

HISTORY_METRICS = ["train_error", "test_error", "train_loss", "test_loss", "lr", "holdout_error"]
SUMMARY_METRICS = ["images_per_s", "s_per_1k_iters", "elapsed_s"]
TRAIN_FILES = [MODEL, HISTORY, SPEC, METRICS]  # the finished training (MODEL: the final model, no optimizer state)
COMMIT_TAGS = ("git_commit", "mlflow.source.git.commit")
BATCH = 1000  # MLflow's limit of metrics per log_batch


# ---------------------------------------------------------------- training runs


def _ms(seconds):
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
        stamp = start_ms + _ms(_float(row.get("elapsed_s")) or 0.0)
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
        stamp = _ms(path.stat().st_mtime)  # fixed per file, so relogging is a no-op in MLflow
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
    end_ms = _ms((run_dir / METRICS).stat().st_mtime)
    start_ms = end_ms - _ms(float(summary.get("elapsed_s") or 0.0))
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
    end_ms = _ms((run_dir / METRICS).stat().st_mtime)
    start_ms = run.info.start_time or end_ms - _ms(float(summary.get("elapsed_s") or 0.0))
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


DATA_SOURCES = {
    "digits": "https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar.html",
    "imagenet": "https://image-net.org/",
}


def dataset_inputs(spec, summary):
    """The data set a training used, as MLflow run inputs: its training split and the split its test
    curve was measured on, each with its size (metrics.json) and where the images came from."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from resnet_repro.paper.text import data_name

    d = spec["data"]
    if d.get("root") and d["kind"] != "digits":
        source_type, source = "local", Path(d["root"]).resolve().as_uri()
    else:  # digits: scikit-learn's bundled copy of the UCI set
        source_type, source = "http", DATA_SOURCES.get(d["kind"], d["kind"])
    inputs = []
    for context, split, n in (
        ("training", "train", summary.get("train_images")),
        ("evaluation", summary.get("test_split", "test"), summary.get("test_images")),
    ):
        key = {k: d.get(k) for k in ("kind", "root", "image_size", "val_split", "split_seed")}
        key.update(
            split=split,
            images=n,
            holdout=spec["schedule"].get("holdout") if spec["schedule"]["kind"] == "plateau" else None,
        )
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        entity = Dataset(
            name=f"{data_name(d)} · {split}",
            digest=digest,
            source_type=source_type,
            source=json.dumps({"url" if source_type == "http" else "uri": source}),
            profile=json.dumps({"split": split, "images": n}),
        )
        inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)]))
    return inputs


def log_model(run_id, run_dir, spec, params, uri):
    """RUN/model.pt as an MLflow LoggedModel of the run (Models page; registrable), with its input
    signature (mean-subtracted images at the training's size) and the training's params."""
    import mlflow
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    from resnet_repro.files import load_torch
    from resnet_repro.models import ResNet, parse_model_name

    try:
        ckpt = load_torch(run_dir / MODEL)
        model = ResNet(parse_model_name(spec["model"]), ckpt["num_classes"])
        model.load_state_dict(ckpt["model"])
    except (ReproError, KeyError, TypeError, RuntimeError) as e:
        log(
            f"warning: {run_dir / MODEL} is not a final model of {spec['model']} ({str(e).splitlines()[0]}); "
            f"no LoggedModel"
        )
        return None
    model.eval()
    size = ckpt["mean"].shape[-1]
    x = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        signature = infer_signature(x.numpy(), model(x).numpy())
    # the fluent API (the only way to log a model) sets the process's tracking URI and with it
    # $MLFLOW_TRACKING_URI; MLflow's own context manager puts both back afterwards
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    env = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            return _log_model_in_run(mlflow, run_id, model, signature, params, ckpt)
    finally:  # (which unsets the variable when no URI was set in this process: the user's stays)
        if env is not None:
            os.environ["MLFLOW_TRACKING_URI"] = env


def _log_model_in_run(mlflow, run_id, model, signature, params, ckpt):
    import torch

    with retry(mlflow.start_run, run_id=run_id):
        # pickled, with this package's code beside it so that mlflow.pytorch.load_model works anywhere
        # (torch.export's pt2 needs no code but took 4-11 s a model on 2 CPU cores, pickling 0.2 s)
        info = retry(
            mlflow.pytorch.log_model,
            model,
            name="model",
            signature=signature,
            serialization_format="pickle",
            code_paths=[str(Path(resnet_repro.__file__).resolve().parent)],  # the whole package
            params={k: str(v) for k, v in params.items()},
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],  # no slow inference
            step=int(ckpt.get("iteration", 0)),
        )
    return info.model_id


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


# ---------------------------------------------------------------- seeds of one model


def track_seeds(run_dirs, model, preset, uri=None):
    """Group the runs of one model's seeds under a parent run that carries, for the final test error
    and every evaluation's top-1/top-5 error, the best, mean and std over the seeds (Table 6's "best
    (mean +- std)"); each seed's run becomes its child. Idempotent; returns the parent's run id."""
    import statistics

    from mlflow.entities import Metric

    infos = [read_json(Path(d) / MLFLOW, "tracking file") for d in run_dirs]
    uri = tracking_uri(uri)
    c = client(uri)
    children = [c.get_run(i["run_id"]) for i in infos]
    exp_id = children[0].info.experiment_id
    ids = ",".join(r.info.run_id for r in children)
    key = {"seed_group": model, "preset": preset, "child_run_ids": ids}
    found = find_finished(c, exp_id, key)
    if found:
        parent = found[0].info.run_id
    else:
        seeds = ",".join(r.data.params.get("seed", "?") for r in children)
        parent = c.create_run(
            exp_id, tags={**key, "model": model, "seeds": seeds}, run_name=f"{model} · {len(children)} seeds ({seeds})"
        ).info.run_id
    keys = [k for k in children[0].data.metrics if k == "test_error" or k.endswith(("_top1_error", "_top5_error"))]
    stamp, points = int(time.time() * 1000), []
    for k in sorted(keys):
        values = [r.data.metrics[k] for r in children if k in r.data.metrics]
        if len(values) == len(children):
            points += [
                Metric(f"{k}_best", min(values), stamp, 0),
                Metric(f"{k}_mean", statistics.fmean(values), stamp, 0),
                Metric(f"{k}_std", statistics.stdev(values) if len(values) > 1 else 0.0, stamp, 0),
            ]
    log_metrics(c, parent, points)
    for r in children:
        if r.data.tags.get("mlflow.parentRunId") != parent:
            c.set_tag(r.info.run_id, "mlflow.parentRunId", parent)
    if not found:
        c.set_terminated(parent, "FINISHED")
    log(f"{model}: {len(children)} seeds under parent run {parent} ({len(points)} summary metrics)")
    return parent


# ---------------------------------------------------------------- figures and tables


def track_report(artifacts, name, sources, preset, uri=None):
    """Log a figure/table (its files) as one run of the reports experiment, linked both ways to
    the training runs it was made from (idempotent); return (run id, experiment id)."""
    files = [Path(a) for a in artifacts]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ReproError(f"artifact file(s) not found: {', '.join(missing)}")
    source_ids = []
    for src in sources:
        path = Path(src) / MLFLOW
        if not path.is_file():
            raise ReproError(f"{path} does not exist: run `resnet-repro track train {src}` first")
        source_ids.append(read_json(path, "tracking file")["run_id"])
    digest = artifacts_digest(files)  # the report finds this run by the same digest
    uri = tracking_uri(uri)
    c = client(uri)
    # the reports experiment beside the trainings' experiment (one per preset and data)
    train_exp = read_json(Path(sources[0]) / MLFLOW, "tracking file").get("experiment_id")
    exp_id = experiment_id(c, reports_experiment(c.get_experiment(train_exp).name), uri)
    key = {"artifact": name, "preset": preset, "artifacts_sha256": digest, "source_run_ids": ",".join(source_ids)}
    found = find_finished(c, exp_id, key)
    if found:
        run_id = found[0].info.run_id
        log(f"{name} ({preset}) is already tracked as run {run_id}; nothing to do")
    else:
        commit = git_commit()
        from resnet_repro.rundir import data_of_runs

        data = data_of_runs([Path(src) for src in sources]) if sources else "unknown"
        run_id = c.create_run(
            exp_id,
            tags={
                **key,
                "git_commit": commit,
                "mlflow.source.git.commit": commit,
                "files": ",".join(f.name for f in files),
                "dataset": data,
            },
            run_name=f"{name} · {preset} · {data}",
        ).info.run_id
        for f in files:
            c.log_artifact(run_id, str(f))
        for sid in dict.fromkeys(source_ids):  # a reader can go from a training to what used it
            c.set_tag(sid, f"used_by_{name}", run_id)
        c.set_terminated(run_id, "FINISHED")
        log(f"logged {name} ({preset}) as run {run_id} from {len(source_ids)} training runs")
    return run_id, exp_id
