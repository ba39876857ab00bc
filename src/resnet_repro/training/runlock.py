"""A training's lock on its run directory (OUT/train.lock), so that a second copy of a training
(Snakemake restarted after a crash while the old Slurm job still runs, or two Snakemakes) fails at
once instead of writing the same checkpoint.

The lock is a file created with O_EXCL (atomic on local and NFS file systems) that names its
holder: host, pid, the pid's start time, the Slurm job id. While the training runs, a thread
touches it every HEARTBEAT_S seconds. It is released (deleted) when the training ends, however it
ends but SIGKILL. A lock left behind by a killed process is recognised as stale and taken over:
  - same host: its pid no longer runs (or runs another program: a different start time);
  - a Slurm job id that is not ours, and that squeue no longer lists as running;
  - otherwise (another host, no Slurm): its heartbeat is older than STALE_S seconds.
"""

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from resnet_repro.errors import ReproError
from resnet_repro.rundir import LOCK

HEARTBEAT_S = 60
STALE_S = 600


class RunLocked(ReproError):
    pass


def _start_time(pid):
    """The pid's start time (clock ticks since boot, from /proc), or None if it does not run."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _pid_runs(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _slurm_job_running(job_id):
    """True/False when squeue can tell, None when it cannot (no Slurm here)."""
    try:
        r = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        # an unknown job id (long finished) is an error for squeue; anything else: cannot tell
        return False if "Invalid job id" in r.stderr else None
    return r.stdout.strip() in ("RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STOPPED")


def me():
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _start_time(pid),
        "slurm_job": os.environ.get("SLURM_JOB_ID"),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def stale(holder, age_s):
    """Why the lock's holder is gone (a string), or None if it may still run."""
    if not isinstance(holder, dict):
        return None if age_s < STALE_S else f"unreadable lock file, untouched for {age_s:.0f} s"
    host, pid, job = holder.get("host"), holder.get("pid"), holder.get("slurm_job")
    if host == socket.gethostname() and isinstance(pid, int):
        if not _pid_runs(pid):
            return f"pid {pid} on {host} has exited"
        start = _start_time(pid)
        if holder.get("start") and start and start != holder["start"]:
            return f"pid {pid} on {host} is another process now"
        return None
    if job:
        if job == os.environ.get("SLURM_JOB_ID"):
            return f"left by this Slurm job {job} before it was requeued"
        running = _slurm_job_running(job)
        if running is False:
            return f"Slurm job {job} no longer runs"
        if running:
            return None
    return f"no heartbeat for {age_s:.0f} s (over {STALE_S})" if age_s >= STALE_S else None


def describe(holder):
    if not isinstance(holder, dict):
        return "an unreadable lock file"
    job = f", Slurm job {holder['slurm_job']}" if holder.get("slurm_job") else ""
    return f"pid {holder.get('pid')} on {holder.get('host')}{job}, since {holder.get('since')}"


class RunLock:
    """with RunLock(out_dir): ... holds OUT/train.lock for the block (see the module's docstring)."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / LOCK
        self.holder = None
        self._stop = threading.Event()
        self._thread = None

    def _read(self):
        try:
            text = self.path.read_text()
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return None, None
        try:
            return json.loads(text), age
        except ValueError:  # being written this instant, or damaged
            return text, age

    def acquire(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        holder = me()
        for _ in range(5):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other, age = self._read()
                if other is None:
                    continue  # released in between
                why = stale(other, age)
                if why is None:
                    raise RunLocked(
                        f"{self.path.parent} is being trained by another process ({describe(other)}): a second "
                        f"copy would write the same checkpoint; cancel the old job (squeue --me) or wait for it. "
                        f"If that process is gone for sure, delete {self.path}"
                    ) from None
                # move the stale lock aside atomically: of several takers only one succeeds
                aside = self.path.with_name(f"{LOCK}.stale.{holder['host']}.{holder['pid']}")
                try:
                    os.rename(self.path, aside)
                    os.unlink(aside)
                except FileNotFoundError:
                    pass
                print(f"resnet-repro: took over a stale lock on {self.path.parent} ({why})", flush=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(holder, f)
            self.holder = holder
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
            return self
        raise RunLocked(f"could not take the lock {self.path}: it keeps changing hands")

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        other, _ = self._read()
        if (
            self.holder is not None
            and isinstance(other, dict)
            and other.get("pid") == self.holder["pid"]
            and other.get("host") == self.holder["host"]
        ):
            self.path.unlink(missing_ok=True)
        self.holder = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
