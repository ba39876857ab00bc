"""Several CIFAR trainings on one GPU in one job (`resnet-repro train-pack`, config `resources.cifar.per_gpu`).

A CIFAR training keeps a few percent of a GPU busy (short kernels; GPU.md). A pack starts one
`resnet-repro train --resume` process per training, each with its own run directory, lock,
checkpoints, early-warning handling, log and MLflow run, exactly as a training alone. Where
`nvidia-cuda-mps-control` exists they share the GPU through a CUDA MPS daemon private to the job:
started before them and stopped after them, its pipe and log directories in a fresh temporary
directory, so that two packs on one node never meet. Without it they are plain processes (the GPU
time-slices between them).

The pack ends when all its trainings have: status 0 if each finished, else 3 if each that did not
was stopped by a signal after a checkpoint (Slurm's early warning, pre-emption), else 1. A pack that
did not finish is run again whole: its finished trainings then resume from their final checkpoints
and only write their outputs again.
"""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from resnet_repro.errors import ReproError

MPS_CONTROL = "nvidia-cuda-mps-control"
STOPPED = 3  # the trainer's status after a checkpoint on SIGTERM/SIGUSR1 (training.loop)
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)


@contextlib.contextmanager
def mps_daemon(mode, log):
    """The environment the trainers need to reach a job-private MPS daemon ({} for none). mode: auto (where
    nvidia-cuda-mps-control is on PATH), on (required) or off."""
    binary = shutil.which(MPS_CONTROL) if mode != "off" else None
    if mode == "on" and not binary:
        raise ReproError(f"--mps on: {MPS_CONTROL} is not on PATH")
    if not binary:
        log(f"{MPS_CONTROL} not used ({'--mps off' if mode == 'off' else 'not on PATH'}): plain processes")
        yield {}
        return
    job = os.environ.get("SLURM_JOB_ID", "nojob")
    root = Path(tempfile.mkdtemp(prefix=f"resnet-repro-mps-{job}-"))
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(root / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(root / "log")}
    for d in env.values():
        os.mkdir(d)
    daemon_env = {**os.environ, **env}
    started = subprocess.run([binary, "-d"], env=daemon_env, capture_output=True, text=True, timeout=60)
    if started.returncode != 0:  # e.g. the driver's tools on a node without a GPU
        shutil.rmtree(root, ignore_errors=True)
        why = f"{binary} -d: status {started.returncode} {started.stderr.strip()[-300:]}"
        if mode == "on":
            raise ReproError(f"--mps on: the MPS daemon did not start ({why})")
        log(f"the MPS daemon did not start ({why}): plain processes")
        yield {}
        return
    try:
        log(f"MPS daemon started ({binary} -d), pipe and log in {root}")
        yield env
    finally:
        # `quit` ends the daemon once its clients have gone (they have: the trainers were waited for)
        r = subprocess.run([binary], input="quit\n", text=True, env=daemon_env, capture_output=True, timeout=60)
        log(f"MPS daemon stopped (status {r.returncode})")
        shutil.rmtree(root, ignore_errors=True)


def trainer_command(member, threads, attempt, uri, experiment):
    out, overrides, attempts_log = member
    cmd = [sys.executable, "-m", "resnet_repro", "train", "--overrides", overrides, "--out", out, "--resume"]
    cmd += ["--threads", str(threads), "--attempts-log", attempts_log]
    if attempt is not None:
        cmd += ["--attempt", str(attempt)]
    if uri:
        cmd += ["--tracking-uri", uri]
    if experiment:
        cmd += ["--experiment", experiment]
    return cmd


def ignore_usr1():
    """In a trainer before it runs: SIGUSR1 ignored until the trainer installs its handler (as in a training
    job outside a pack, workflow/rules/common.smk). A handler of the pack's would be reset to the default
    by exec, which kills: Slurm's early warning reaches every process of the job step, a trainer still
    starting up included."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def pack_status(codes):
    if all(c == 0 for c in codes):
        return 0
    return STOPPED if all(c in (0, STOPPED) for c in codes) else 1


def run_pack(members, logs, threads, attempt=None, uri=None, experiment=None, mps="auto", log=print):
    """Train `members` ([(out, overrides_json, attempts_log)]) side by side, each printing to its file of
    `logs`, with `threads` CPU threads in all. Returns the pack's exit status (module docstring)."""
    if len(logs) != len(members):
        raise ReproError(f"{len(members)} trainings but {len(logs)} log files")
    each = max(1, threads // len(members))
    procs = []
    received = []

    def forward(signum, frame):  # scancel, Ctrl-C, the early warning: every trainer checkpoints and stops
        received.append(signum)
        for p in procs:  # a trainer checkpoints on SIGTERM and SIGUSR1, not on SIGINT
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM if signum == signal.SIGINT else signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        with mps_daemon(mps, log) as env:
            for member, path in zip(members, logs):
                if received:  # stopped before all had started: those not started have nothing to save
                    break
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                with open(path, "w") as f:
                    cmd = trainer_command(member, each, attempt, uri, experiment)
                    procs.append(
                        subprocess.Popen(
                            cmd, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **env}, preexec_fn=ignore_usr1
                        )
                    )
                log(f"started {member[0]} (pid {procs[-1].pid}, {each} threads), its log {path}")
            codes = [p.wait() for p in procs] + [STOPPED] * (len(members) - len(procs))
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    for (out, _, _), code in zip(members, codes):
        log(f"{out}: {'finished' if code == 0 else f'exit status {code}'}")
    return pack_status(codes)
