"""A training's lock on its run directory: a second copy fails at once with one line, a lock left by
a dead process is taken over, and the lock is gone when the training ends."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from resnet_repro.rundir import LOCK
from resnet_repro.spec.build import build_spec
from resnet_repro.training import runlock
from resnet_repro.training.loop import Interrupted, train
from resnet_repro.training.runlock import RunLock, RunLocked

CLI = [sys.executable, "-m", "resnet_repro"]


def spec(**over):
    return build_spec(
        None,
        [
            {
                "model": "resnet8",
                "data": {"kind": "digits"},
                "max_iters": 20,
                "log_every": 10,
                "checkpoint_every": 10,
                "batch_size": 32,
                "schedule": {"kind": "multistep", "milestones": [15]},
            },
            over,
        ],
    )


def write_lock(out, **holder):
    out.mkdir(parents=True, exist_ok=True)
    (out / LOCK).write_text(json.dumps(holder))


@pytest.fixture
def other_process():
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield p
    p.kill()
    p.wait()


def test_a_live_holder_makes_a_second_training_fail_at_once_with_one_line(tmp_path, other_process):
    out = tmp_path / "run"
    write_lock(
        out,
        host=socket.gethostname(),
        pid=other_process.pid,
        start=runlock._start_time(other_process.pid),
        slurm_job="4242",
        since="2026-01-01T00:00:00",
    )
    t0 = time.monotonic()
    r = subprocess.run(
        CLI + ["train", "--model", "resnet8", "--data", "digits", "--max-iters", "20", "--out", str(out), "--resume"],
        capture_output=True,
        text=True,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
    )
    assert r.returncode == 2
    errors = [l for l in r.stderr.splitlines() if l.strip()]
    assert (
        len(errors) == 1
        and errors[0].startswith("resnet-repro: error: ")
        and "is being trained by another process" in errors[0]
    )
    assert f"pid {other_process.pid} on {socket.gethostname()}, Slurm job 4242" in errors[0]
    assert not (out / "checkpoint.pt").exists() and not (out / "spec.yaml").exists()  # nothing was touched
    assert json.loads((out / LOCK).read_text())["pid"] == other_process.pid  # nor the lock
    assert time.monotonic() - t0 < 30


def test_stale_locks_are_taken_over(tmp_path, monkeypatch, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "dead"
    write_lock(out, host=socket.gethostname(), pid=dead.pid, start="1", slurm_job=None, since="x")
    with RunLock(out) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert f"pid {dead.pid} on {socket.gethostname()} has exited" in capsys.readouterr().out
    # this pid number, but another process (a reused pid: another start time)
    write_lock(out, host=socket.gethostname(), pid=os.getpid(), start="0", slurm_job=None, since="x")
    with RunLock(out):
        pass
    # another host: stale once its heartbeat is older than STALE_S, not before
    write_lock(out, host="elsewhere", pid=1, start="1", slurm_job=None, since="x")
    with pytest.raises(RunLocked):
        RunLock(out).acquire()
    old = time.time() - runlock.STALE_S - 5
    os.utime(out / LOCK, (old, old))
    with RunLock(out):
        pass
    # another host's Slurm job that squeue no longer lists
    write_lock(out, host="elsewhere", pid=1, start="1", slurm_job="77", since="x")
    monkeypatch.setattr(runlock, "_slurm_job_running", lambda job: job != "77")
    with RunLock(out):
        pass
    write_lock(out, host="elsewhere", pid=1, start="1", slurm_job="78", since="x")
    with pytest.raises(RunLocked, match="Slurm job 78"):
        RunLock(out).acquire()


def test_the_lock_is_released_however_the_training_ends(tmp_path):
    out = tmp_path / "run"
    train(spec(), out, log=lambda m: None)
    assert not (out / LOCK).exists()
    with pytest.raises(Interrupted):
        train(spec(max_iters=40), out / "stopped", stop_at=10, log=lambda m: None)
    assert not (out / "stopped" / LOCK).exists()


def test_the_lock_is_held_while_training(tmp_path, monkeypatch):
    seen = []
    original = runlock.RunLock.acquire

    def acquire(self):
        result = original(self)
        seen.append(json.loads(self.path.read_text()))
        return result

    monkeypatch.setattr(runlock.RunLock, "acquire", acquire)
    monkeypatch.setenv("SLURM_JOB_ID", "999")
    train(spec(), tmp_path, log=lambda m: None)
    assert seen and seen[0]["pid"] == os.getpid() and seen[0]["slurm_job"] == "999"
