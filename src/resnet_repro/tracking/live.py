"""Live MLflow tracking of a training, for an http(s) tracking server: process 0 opens the run when
the training starts (or reopens it on --resume), logs each history row as it is written, samples
system metrics (CPU, memory, GPU), and ends the run FINISHED, FAILED or KILLED (a stop signal) as the
training ends. RUN/mlflow-live.json names the run, so a resumed training continues it and
`resnet-repro track train` completes it (files, data set, model) instead of making a second one.

A training never fails because of tracking: the first error is a warning, after which the run goes
on untracked; the after-the-fact import fills the run in later. With a SQLite store (the default)
nothing here runs: several trainings writing one SQLite file live would contend for its lock.
"""

import json
import os
import time
from pathlib import Path

from resnet_repro.files import write_json
from resnet_repro.rundir import LIVE_FILE

SYSTEM_METRICS_EVERY_S = 10


def is_server(uri):
    return bool(uri) and uri.startswith(("http://", "https://"))


class LiveRun:
    def __init__(self, client, run_id, log, monitor=None, uri=None):
        self.client, self.run_id, self.log, self.monitor, self.uri = client, run_id, log, monitor, uri

    @classmethod
    def start(cls, out_dir, spec, uri, experiment, resume, log):
        """The live run of the training in out_dir, or None (no server, or it cannot be reached)."""
        if not is_server(uri):
            return None
        # fail fast when the server is down: a training must not wait minutes on retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")
        try:
            return cls._open(Path(out_dir), spec, uri, experiment, resume, log)
        except Exception as e:  # noqa: BLE001 (any failure of tracking leaves the training alone)
            why = _auth_error(e, uri) or f"MLflow server {uri} not usable ({_first_line(e)})"
            log(
                f"[{spec['model']}] warning: {why}; training without live tracking "
                f"(`resnet-repro track train` logs the run when it has finished)"
            )
            return None

    @classmethod
    def _open(cls, out_dir, spec, uri, experiment, resume, log):
        from mlflow import MlflowClient
        from mlflow.entities import Param

        from resnet_repro.tracking.record import run_tags, train_params
        from resnet_repro.tracking.store import run_dir_tag, setup, ui_path

        client = MlflowClient(tracking_uri=uri)
        exp_id = setup(uri, experiment)[experiment]
        run = None
        path = out_dir / LIVE_FILE
        if resume and path.is_file():  # continue the run this training started
            info = json.loads(path.read_text())
            run = client.get_run(info["run_id"])
            client.update_run(run.info.run_id, status="RUNNING")
            log(f"[{spec['model']}] MLflow: continuing run {run.info.run_id} on {uri}")
        else:
            if path.is_file():  # an attempt that died before its first checkpoint: its run ends FAILED
                client.set_terminated(json.loads(path.read_text())["run_id"], "FAILED")
            tags = {**run_tags(spec), "run_dir": run_dir_tag(out_dir), "live": "true"}
            run = client.create_run(exp_id, tags=tags, run_name=tags["mlflow.runName"])
            params = train_params(spec, preset="unknown", config_hash=None, commit="unknown")
            keep = {k: v for k, v in params.items() if k not in ("preset", "config_hash", "git_commit")}
            client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in keep.items()])
            write_json(path, {"run_id": run.info.run_id, "experiment_id": exp_id, "tracking_uri": uri})
            log(
                f"[{spec['model']}] MLflow: logging live to run {run.info.run_id}: {uri}{ui_path(exp_id, run.info.run_id)}"
            )
        return cls(client, run.info.run_id, log, _system_metrics(run.info.run_id, uri, resume), uri)

    def row(self, row, keys):
        """Log one history row (step = iteration)."""
        from mlflow.entities import Metric

        if self.client is None:  # stopped after an error: the training goes on untracked
            return

        now = int(time.time() * 1000)
        points = [
            Metric(k, float(row[k]), now, int(row["iteration"])) for k in keys if isinstance(row.get(k), (int, float))
        ]
        self._call(self.client.log_batch, self.run_id, metrics=points)

    def end(self, status):
        if self.monitor is not None:
            self._call(self.monitor.finish)
        if self.client is not None:
            self._call(self.client.set_terminated, self.run_id, status)

    def _call(self, fn, *args, **kwargs):
        if self.client is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self.log(
                f"warning: MLflow live tracking stopped ({_auth_error(e, self.uri) or _first_line(e)}); the "
                f"training goes on and `resnet-repro track train` fills the run in when it has finished"
            )
            self.client = None


def _system_metrics(run_id, uri, resume):
    """CPU, memory, disk, network and (with pynvml) GPU utilisation and memory, every 10 s, as
    system/* metrics of the run; None where psutil is missing."""
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(
            run_id, sampling_interval=SYSTEM_METRICS_EVERY_S, resume_logging=resume, tracking_uri=uri
        )
        monitor.start()
        return monitor
    except Exception:  # noqa: BLE001 (psutil absent: no system metrics, nothing else changes)
        return None


def _auth_error(e, uri):
    from resnet_repro.tracking.store import auth_error

    try:
        return auth_error(e, uri)
    except Exception:  # noqa: BLE001 (a warning must not fail the training either)
        return None


def _first_line(e):
    text = str(e).strip().splitlines()
    return f"{e.__class__.__name__}: {text[0] if text else ''}"
