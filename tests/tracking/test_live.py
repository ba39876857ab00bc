"""Live tracking against a real MLflow tracking server on a loopback port, started by the script of
`make mlflow-server` (MLflow's basic auth): a training's run is RUNNING with metric points while it
trains, KILLED by SIGTERM, continued by --resume and FINISHED, and the after-the-fact import completes
it without a second run. Also: a server that is down never fails a training; the server refuses a
request without the right credentials (401), and the CLI and a training say so in one line; the
script starts nothing without credentials; the pipeline logs to it with credentials."""

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import TINY_CONFIG, doc_commands, free_port, log_one_data_set_at_once

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


ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCRIPT = ROOT / "scripts" / "mlflow-server.sh"
USER = "resnet-test"
TINY_EXPERIMENT = "resnet-repro · tiny · ImageFolder 'digits-imagefolder' (20 px crops), digits (8x8)"


def script_env(home, **extra):
    """The environment `make mlflow-server` runs the script in (the venv first on PATH), with no
    MLflow credentials but those in `extra` (HOME: a directory without ~/.mlflow/credentials)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "MLFLOW_AUTH_"))}
    return dict(env, PATH=f"{BIN}:{env['PATH']}", HOME=str(home), **extra)


def stop(proc):
    """End the server and its workers: the script runs in a process group of its own."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    try:  # workers that outlived the main process
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture(scope="module")
def credentials():
    """A user name and a password made for this test session (MLflow asks for 12 characters or more)."""
    return USER, secrets.token_urlsafe(18)


@pytest.fixture(scope="module")
def server_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("server") / "mlflow-server"


@pytest.fixture(scope="module")
def server(server_dir, credentials):
    """A tracking server started as `make mlflow-server` starts it (scripts/mlflow-server.sh: MLflow's
    basic auth, 4 workers, so requests race in the store), its directory a temporary one; this module's
    process (and so every process it starts) has the credentials in its environment."""
    root = server_dir.parent
    port = free_port()
    user, password = credentials
    env = script_env(
        root,
        MLFLOW_SERVER_DIR=str(server_dir),
        MLFLOW_HOST="127.0.0.1",
        MLFLOW_PORT=str(port),
        MLFLOW_WORKERS="4",
        MLFLOW_TRACKING_USERNAME=user,
        MLFLOW_TRACKING_PASSWORD=password,
    )
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            ["bash", str(SCRIPT)], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True
        )
    try:
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
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_USERNAME", user)
            mp.setenv("MLFLOW_TRACKING_PASSWORD", password)
            yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


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


# ---------------------------------------------------------------- authentication


def status(uri, method="POST", auth=None):
    """The HTTP status of a search of experiments, sent with plain urllib (no MLflow client)."""
    url = f"{uri}/api/2.0/mlflow/experiments/search"
    req = (
        urllib.request.Request(url, data=b'{"max_results": 1}', headers={"Content-Type": "application/json"})
        if method == "POST"
        else urllib.request.Request(f"{url}?max_results=1")
    )
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_server_refuses_a_request_without_the_right_credentials(server, credentials):
    user, password = credentials
    assert status(server) == 401 and status(server, "GET") == 401
    assert status(server, auth=(user, password + "x")) == 401  # a wrong password
    assert status(server, auth=("nobody", password)) == 401
    assert status(server, auth=credentials) == 200 and status(server, "GET", auth=credentials) == 200


def test_the_script_without_credentials_starts_nothing(tmp_path):
    port = free_port()
    d = tmp_path / "mlflow-server"
    for creds, error in (
        ({}, "no credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
        ({"MLFLOW_TRACKING_USERNAME": USER}, "no credentials"),
        ({"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": "short"}, "at least 12 characters"),
    ):
        env = script_env(tmp_path, MLFLOW_SERVER_DIR=str(d), MLFLOW_PORT=str(port), **creds)
        r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 1 and r.stdout == "", r
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("mlflow-server: ") and error in r.stderr, r.stderr
        assert not d.exists()  # nothing written, nothing started
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            pass


def test_the_script_refuses_a_password_that_is_not_the_admins(server, server_dir, credentials, tmp_path):
    """Credentials from ~/.mlflow/credentials (the client's file), here not those of the account the
    first start created: one line, and nothing starts (the running server goes on)."""
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        f"[mlflow]\nmlflow_tracking_username = {USER}\nmlflow_tracking_password = not-{credentials[1]}\n"
    )
    env = script_env(tmp_path, MLFLOW_SERVER_DIR=str(server_dir), MLFLOW_PORT=str(free_port()))
    r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "has another password" in r.stderr, r.stderr
    for name, mode in (("", 0o700), ("basic_auth.ini", 0o600), ("secret_key", 0o600), ("basic_auth.db", None)):
        path = server_dir / name
        assert path.exists() and (mode is None or path.stat().st_mode & 0o777 == mode), name
    assert credentials[1] not in (server_dir / "basic_auth.ini").read_text()
    assert status(server, auth=credentials) == 200


def test_track_without_the_right_credentials_says_so_in_one_line(server, credentials, tmp_path):
    for creds, says in (
        ({}, "asks for credentials, and none are set (401)"),
        (
            {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": "wrong-password-1"},
            "refused the credentials (401)",
        ),
    ):
        r = subprocess.run(
            CLI + ["track", "setup", "--tracking-uri", server, "--experiment", EXPERIMENT],
            capture_output=True,
            text=True,
            env=script_env(tmp_path, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", **creds),
            timeout=120,
        )
        assert r.returncode != 0
        lines = [l for l in r.stderr.splitlines() if "Warning" not in l and not l.startswith(" ")]
        assert len(lines) == 1 and f"MLflow server {server} {says}: set MLFLOW_TRACKING_USERNAME" in lines[0], r.stderr


def test_a_training_with_a_wrong_password_warns_once_and_trains(server, tmp_path):
    env = script_env(
        tmp_path,
        OMP_NUM_THREADS="1",
        MLFLOW_TRACKING_URI=server,
        MLFLOW_TRACKING_USERNAME=USER,
        MLFLOW_TRACKING_PASSWORD="wrong-password-1",
    )
    r = subprocess.run(
        CLI + ARGS[:5] + ["--max-iters", "20", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (warning,) = [l for l in r.stderr.splitlines() if "warning: MLflow" in l]
    assert f"warning: MLflow server {server} refused the credentials (401)" in warning, r.stderr
    assert "without live tracking" in warning and not (tmp_path / "run" / "mlflow-live.json").exists()


def test_the_pipeline_logs_to_the_server_with_credentials(server, credentials, tmp_path):
    """Part of the tiny DAG (Figure 1: two trainings, their tracking, the figure and its reports run)
    with MLFLOW_TRACKING_URI at the server and the credentials in the environment: the trainings log
    live, and the password is in none of Snakemake's logs."""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", MLFLOW_TRACKING_URI=server, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [str(BIN / "snakemake"), "results/mlflow/tiny/figure1.json", "--cores", "2", "-s", str(ROOT / "Snakefile")]
        + ["--directory", str(tmp_path), "--configfile", str(ROOT / "config.yaml"), str(TINY_CONFIG)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=1200,
    )
    assert r.returncode == 0, f"{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    assert not (tmp_path / "mlflow.db").exists()
    c = MlflowClient(server)
    exp = c.get_experiment_by_name(TINY_EXPERIMENT)
    runs = c.search_runs([exp.experiment_id])
    assert sorted(run.data.params["model"] for run in runs) == ["plain20", "plain56"]
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["live"] == "true"
        assert [m.step for m in c.get_metric_history(run.info.run_id, "train_error")] == [3, 6]
    (report,) = c.search_runs([c.get_experiment_by_name(f"{TINY_EXPERIMENT} · reports").experiment_id])
    assert report.data.tags["mlflow.runName"].startswith("figure1 ")
    logs = [p for d in ("logs", ".snakemake/log") for p in (tmp_path / d).rglob("*") if p.is_file()]
    text = "".join(p.read_text(errors="replace") for p in logs) + r.stdout + r.stderr
    assert logs and "warning: MLflow" not in text and credentials[1] not in text


# ---------------------------------------------------------------- the messages, without a server


def mlflow_error(code):
    from mlflow.exceptions import MlflowException
    from mlflow.protos import databricks_pb2

    status = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403}[code]
    return MlflowException(
        f"API request to endpoint /api/2.0/mlflow/runs/create failed with error code {status} != 200.\nbody",
        error_code=getattr(databricks_pb2, code),
    )


@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    return monkeypatch


def test_an_auth_error_names_what_to_set(no_credentials):
    from types import SimpleNamespace

    from resnet_repro.errors import ReproError
    from resnet_repro.tracking.store import auth_error, mlflow_errors

    uri = "http://mlflow.example:5000"
    assert auth_error(mlflow_error("UNAUTHENTICATED"), uri) == (
        f"MLflow server {uri} asks for credentials, and none are set (401): set MLFLOW_TRACKING_USERNAME "
        "and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials) to an account of the server"
    )
    no_credentials.setenv("MLFLOW_TRACKING_USERNAME", "ann")
    no_credentials.setenv("MLFLOW_TRACKING_PASSWORD", "wrong-password-1")
    assert f"MLflow server {uri} refused the credentials (401): set" in auth_error(mlflow_error("UNAUTHENTICATED"), uri)
    assert f"MLflow server {uri} refused user 'ann' a permission (403)" in auth_error(
        mlflow_error("PERMISSION_DENIED"), uri
    )
    assert auth_error(ValueError("x"), uri) is None

    def command(args):
        raise mlflow_error("UNAUTHENTICATED")

    with pytest.raises(ReproError) as e:
        mlflow_errors(command)(SimpleNamespace(tracking_uri=uri))
    assert str(e.value).startswith(f"MLflow server {uri} refused the credentials (401)") and "\n" not in str(e.value)


def test_live_tracking_warns_in_one_line_when_refused(no_credentials):
    from resnet_repro.tracking.live import LiveRun

    uri, lines = "http://mlflow.example:5000", []

    def refused(*args, **kwargs):
        raise mlflow_error("UNAUTHENTICATED")

    no_credentials.setattr(LiveRun, "_open", classmethod(refused))
    assert LiveRun.start("unused", {"model": "resnet8"}, uri, EXPERIMENT, False, lines.append) is None
    assert lines == [
        f"[resnet8] warning: MLflow server {uri} asks for credentials, and none are set (401): set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or ~/.mlflow/credentials) to an account of "
        "the server; training without live tracking (`resnet-repro track train` logs the run when it has finished)"
    ]

    class Client:
        def log_batch(self, *args, **kwargs):
            raise mlflow_error("PERMISSION_DENIED")

    lines.clear()
    no_credentials.setenv("MLFLOW_TRACKING_USERNAME", "ann")
    live = LiveRun(Client(), "run-id", lines.append, uri=uri)
    live.row({"iteration": 10, "train_error": 0.5}, ["train_error"])
    live.row({"iteration": 20, "train_error": 0.4}, ["train_error"])  # stopped: no second warning
    live.end("FINISHED")  # nor an error
    assert len(lines) == 1 and f"(MLflow server {uri} refused user 'ann' a permission (403)" in lines[0]
    assert live.client is None


def test_the_admin_adds_a_person_as_the_docs_say(server, credentials):
    """docs/tracking.md's command that adds a person to the server (its address replaced by this
    server's), run as the admin: the new person's credentials are then accepted."""
    [command] = [c for c in doc_commands() if "AuthServiceClient" in c]
    assert "http://10.1.2.3:5000" in command
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")  # the admin's credentials: the server fixture's
    r = subprocess.run(
        command.replace("http://10.1.2.3:5000", server), shell=True, capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert status(server, "GET", auth=("bob", "a-password-for-bob")) == 200
    assert status(server, "GET", auth=("bob", "a-password-for-bobx")) == 401
