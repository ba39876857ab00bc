"""Runs over runs: one model's seeds under a parent run (best / mean / std), and each figure, table and
the report as a run of the reports experiment, linked both ways to the training runs it was made from.
Idempotent, as record.py's."""

import time
from pathlib import Path

from resnet_repro.digest import artifacts_digest
from resnet_repro.errors import ReproError
from resnet_repro.rundir import MLFLOW
from resnet_repro.tracking.record import log_metrics
from resnet_repro.tracking.store import (
    client,
    experiment_id,
    find_finished,
    git_commit,
    log,
    read_json,
    reports_experiment,
    tracking_uri,
)


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
