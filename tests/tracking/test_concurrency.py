"""Eight training processes logging to one SQLite MLflow store at the same moment: every run and every
metric point must arrive, once. Each process trains a tiny ResNet-8 on the bundled digits (a few
iterations, one thread), waits at a barrier until all eight have trained, then runs
`resnet-repro track train` against the shared store. (Rerunning `track train` is tested for idempotency
in test_tracking.py.)"""

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.concurrency

from mlflow import MlflowClient  # noqa: E402

from resnet_repro.tracking.record import HISTORY_METRICS, SUMMARY_METRICS  # noqa: E402

BIN = Path(sys.executable).parent
N = 8
TIMEOUT = 600  # s, for the whole group (about a minute on 2 idle cores)

JOB = r"""
set -eu
{train}
touch "$READY/$ID"
# barrier: log only once every job has trained, so all eight write to the store at the same moment
n=0
while [ "$(ls "$READY" | wc -l)" -lt {n} ]; do
    n=$((n + 1)); [ $n -lt 6000 ] || {{ echo "barrier timed out" >&2; exit 9; }}
    sleep 0.05
done
{track}
"""


def start_jobs(tmp_path, uri, ready):
    procs = []
    for i in range(N):
        run = tmp_path / "runs" / f"resnet8-seed{i}"
        train_cmd = (
            f'"{BIN}/resnet-repro" train --model resnet8 --data digits --max-iters {6 + 2 * i} --log-every 2 '
            f'--checkpoint-every 100 --batch-size 16 --seed {i} --threads 1 --out "{run}"'
        )
        track_cmd = f'"{BIN}/resnet-repro" track train "{run}" --preset tiny --tracking-uri "{uri}"'
        script = JOB.format(train=train_cmd, track=track_cmd, n=N)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", READY=str(ready), ID=str(i))
        env.pop("MLFLOW_TRACKING_URI", None)
        log = open(tmp_path / f"job{i}.log", "w")
        procs.append(
            (
                run,
                subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT),
                log,
            )
        )
    return procs


def wait(tmp_path, procs):
    deadline = time.monotonic() + TIMEOUT
    for run, p, log in procs:
        try:
            p.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for _, q, _ in procs:
                if q.poll() is None:
                    q.kill()
            raise
        finally:
            log.close()
    failed = [(run.name, Path(log.name).read_text()[-2000:]) for run, p, log in procs if p.returncode != 0]
    assert not failed, f"jobs failed: {failed}"


def history(run):
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_eight_concurrent_trainings_lose_no_run_and_no_metric_point(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    subprocess.run(
        [str(BIN / "resnet-repro"), "track", "setup", "--tracking-uri", uri],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    ready = tmp_path / "ready"
    ready.mkdir()
    procs = start_jobs(tmp_path, uri, ready)
    wait(tmp_path, procs)

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("resnet-repro")

    def check():
        runs = client.search_runs([exp.experiment_id], max_results=100)
        assert len(runs) == N and {r.info.status for r in runs} == {"FINISHED"}
        assert sorted(int(r.data.params["seed"]) for r in runs) == list(range(N))
        for run_dir, _, _ in procs:
            run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
            rows = history(run_dir)
            assert len(rows) >= 3
            for key in HISTORY_METRICS:
                points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
                logged_rows = [r for r in rows if r[key] != ""]  # holdout_error: only with a plateau schedule
                assert [m.step for m in points] == [int(r["iteration"]) for r in logged_rows], (run_dir.name, key)
                assert [m.value for m in points] == pytest.approx([float(r[key]) for r in logged_rows], rel=1e-12), key
            assert [int(r["iteration"]) for r in rows] == sorted(
                m.step for m in client.get_metric_history(run_id, "train_error")
            )
            summary = json.loads((run_dir / "metrics.json").read_text())
            logged = client.get_run(run_id).data.metrics
            for key in SUMMARY_METRICS:
                assert logged[key] == pytest.approx(summary[key], rel=1e-12)

    check()
