"""Live tracking against a real MLflow tracking server on a loopback port: a training's run is
RUNNING with metric points while it trains, KILLED by SIGTERM, continued by --resume and FINISHED,
and the after-the-fact import completes it without a second run. Also: a server that is down never
fails a training."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import free_port, log_one_data_set_at_once

pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

pytestmark = pytest.mark.live_tracking
CLI = [sys.executable, "-m", "resnet_repro"]
ARGS = [
    "train",
    "--model",
    "resnet8",
    "--data",
    "digits",
    "--max-iters",
    "300",
    "--log-every",
    "10",
    "--checkpoint-every",
    "100",
    "--batch-size",
    "32",
    "--milestones",
    "250",
]
EXPERIMENT = "resnet-repro · live test"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "4",  # as `make mlflow-server` runs it: requests race in the store
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(root / "server.log", "w"),
        env=env,
        cwd=root,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None, (root / "server.log").read_text()[-2000:]
            time.sleep(0.5)
    else:
        pytest.fail("mlflow server did not start in 120 s")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def test_live_run_is_killed_resumed_finished_and_not_duplicated(server, tmp_path):
    out = tmp_path / "run"
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MLFLOW_TRACKING_URI=server,
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
        MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1",
    )  # the default 10 s is longer than this training
    proc = subprocess.Popen(
        CLI + ARGS + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    c = MlflowClient(server)
    live = out / "mlflow-live.json"
    wait_for(lambda: live.is_file() or proc.poll() is not None, 120, "the live run")
    run_id = json.loads(live.read_text())["run_id"]

    def running_with_points():
        run = c.get_run(run_id)
        return run.info.status == "RUNNING" and len(c.get_metric_history(run_id, "train_error")) >= 1

    wait_for(lambda: running_with_points() or proc.poll() is not None, 120, "a metric point")
    assert proc.poll() is None, proc.communicate()
    assert c.get_run(run_id).data.tags["run_dir"] and c.get_run(run_id).info.status == "RUNNING"
    proc.send_signal(signal.SIGTERM)  # pre-empted, as Slurm does
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr
    assert c.get_run(run_id).info.status == "KILLED"
    stopped = len(c.get_metric_history(run_id, "train_error"))

    r = subprocess.run(CLI + ARGS + ["--out", str(out), "--resume"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert f"continuing run {run_id}" in r.stderr
    run = c.get_run(run_id)
    assert run.info.status == "FINISHED"
    steps = sorted(m.step for m in c.get_metric_history(run_id, "train_error"))
    assert steps == list(range(10, 301, 10)) and len(steps) > stopped  # one point per history row, none twice

    # the after-the-fact import completes the same run: files, data set, model; no second run
    r = subprocess.run(
        CLI + ["track", "train", str(out), "--preset", "test", "--tracking-uri", server, "--experiment", EXPERIMENT],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "mlflow.json").read_text())["run_id"] == run_id
    exp = c.get_experiment_by_name(EXPERIMENT)
    assert len(c.search_runs([exp.experiment_id], f"tags.run_dir = '{c.get_run(run_id).data.tags['run_dir']}'")) == 1
    run = c.get_run(run_id)
    assert run.data.tags["logged_model_id"] and len(run.inputs.dataset_inputs) == 2
    assert (
        run.data.params["preset"] == "test"
        and sorted(m.step for m in c.get_metric_history(run_id, "train_error")) == steps
    )
    assert any(k.startswith("system/") for k in run.data.metrics)  # psutil's CPU and memory while it trained


def test_a_server_that_is_down_never_fails_the_training(tmp_path):
    port = free_port()  # nothing listens there
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    r = subprocess.run(
        CLI + ARGS[:5] + ["--max-iters", "20", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("warning: MLflow server") == 1 and "without live tracking" in r.stderr
    assert (tmp_path / "run" / "model.pt").is_file() and not (tmp_path / "run" / "mlflow-live.json").exists()


def test_an_attempt_that_died_before_its_first_checkpoint_leaves_no_running_run(server, tmp_path):
    """A live run whose training died before any checkpoint (so the next attempt starts afresh) is
    ended FAILED by that next attempt, which logs to a new run."""
    c = MlflowClient(server)
    exp = c.get_experiment_by_name(EXPERIMENT) or c.get_experiment(c.create_experiment(EXPERIMENT))
    dead = c.create_run(exp.experiment_id).info.run_id  # RUNNING, as a killed first attempt leaves it
    out = tmp_path / "run"
    out.mkdir()
    (out / "mlflow-live.json").write_text(json.dumps({"run_id": dead}))
    env = dict(os.environ, OMP_NUM_THREADS="1", MLFLOW_TRACKING_URI=server, MLFLOW_EXPERIMENT_NAME=EXPERIMENT)
    r = subprocess.run(
        CLI + ARGS[:5] + ["--max-iters", "20", "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert c.get_run(dead).info.status == "FAILED"
    new = json.loads((out / "mlflow-live.json").read_text())["run_id"]
    assert new != dead and c.get_run(new).info.status == "FINISHED"


def test_jobs_logging_one_data_set_at_once_through_the_server(server):
    """The data-set race of test_tracking through a tracking server of 4 workers, as trainings on a
    cluster log: the server answers BAD_REQUEST with the store's UNIQUE constraint error, which the
    client retries. (Without the retry, 2 of 3 runs of this test failed; a one-worker server seldom races.)"""
    for _ in range(4):
        log_one_data_set_at_once(server)
