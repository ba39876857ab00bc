"""`resnet-repro train-pack`: several trainings side by side in one job (config resources.cifar.per_gpu),
each as `train --resume` alone would run; the job-private MPS daemon (a stand-in for
nvidia-cuda-mps-control on PATH: this machine has no GPU); one training killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from resnet_repro.training import pack
from resnet_repro.training.pack import STOPPED, pack_status, run_pack

CLI = [sys.executable, "-m", "resnet_repro"]


def overrides(model, seed, iters):
    return json.dumps(
        {
            "model": model,
            "seed": seed,
            "data": {"kind": "digits"},
            "max_iters": iters,
            "log_every": 10,
            "checkpoint_every": 10,
            "batch_size": 32,
            "schedule": {"kind": "multistep", "milestones": [iters // 2]},
        }
    )


def pack_args(tmp_path, iters, names=("a", "b")):
    args = []
    for i, name in enumerate(names):
        d = tmp_path / name
        args += ["--run", str(d), overrides("resnet8", i, iters), str(tmp_path / f"{name}.attempts.log")]
        args += [str(tmp_path / f"{name}.log")]
    return args


def iterations(run):
    return json.loads((run / "metrics.json").read_text())["iterations"]


def fake_mps_control(bin_dir, record):
    """A stand-in for nvidia-cuda-mps-control: records each call (its arguments, stdin, and the MPS
    directories it was given) as a JSON line."""
    bin_dir.mkdir()
    tool = bin_dir / pack.MPS_CONTROL
    tool.write_text(
        f"""#!{sys.executable}
import json, os, sys
stdin = "" if "-d" in sys.argv else sys.stdin.read()
with open({str(record)!r}, "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "stdin": stdin,
        "pipe": os.environ.get("CUDA_MPS_PIPE_DIRECTORY"), "log": os.environ.get("CUDA_MPS_LOG_DIRECTORY"),
        "pipe_exists": os.path.isdir(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/nonexistent"))}}) + "\\n")
"""
    )
    tool.chmod(0o755)
    return tool


def test_pack_status():
    assert pack_status([0, 0]) == 0
    assert pack_status([0, STOPPED]) == STOPPED and pack_status([STOPPED, STOPPED]) == STOPPED
    assert pack_status([0, -9]) == 1 and pack_status([STOPPED, 2]) == 1


def test_two_trainings_side_by_side_each_as_alone(tmp_path):
    """Both finish, each in its own run directory with its own logs, and each equals the same training run
    alone with `train`."""
    r = subprocess.run(
        CLI + ["train-pack", *pack_args(tmp_path, 30), "--threads", "2", "--attempt", "1", "--mps", "off"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "plain processes" in r.stdout
    for name in ("a", "b"):
        run = tmp_path / name
        assert iterations(run) == 30 and (run / "model.pt").exists()
        assert "it 30/30" in (tmp_path / f"{name}.log").read_text()
        assert "=== resnet-repro train: attempt 1," in (tmp_path / f"{name}.attempts.log").read_text()
        assert not (run / "train.lock").exists()
    alone = tmp_path / "alone"
    subprocess.run(
        CLI + ["train", "--overrides", overrides("resnet8", 1, 30), "--out", str(alone), "--threads", "1"],
        check=True,
        capture_output=True,
        timeout=600,
    )
    assert _errors(alone) == _errors(tmp_path / "b")  # one thread each, alone or packed


def _errors(run):
    """history.csv's error and loss columns (the timing columns differ between two runs)."""
    lines = (run / "history.csv").read_text().splitlines()
    head = lines[0].split(",")
    keep = [i for i, h in enumerate(head) if "error" in h or "loss" in h or h in ("iteration", "lr")]
    return [[row.split(",")[i] for i in keep] for row in lines[1:]]


def test_one_training_killed_then_the_pack_again_resumes_it(tmp_path):
    """One trainer SIGKILLed mid-run: the other finishes, the pack fails (status 1); the pack run again
    resumes the killed one from its checkpoint and the finished one from its final checkpoint: both end
    with every iteration."""
    iters = 400
    args = CLI + ["train-pack", *pack_args(tmp_path, iters), "--threads", "2", "--mps", "off"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lock, ckpt = tmp_path / "a" / "train.lock", tmp_path / "a" / "checkpoint.pt"
    deadline = time.time() + 300
    while not (ckpt.exists() and lock.exists()) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the pack ended before its first checkpoint: raise iters"
    os.kill(json.loads(lock.read_text())["pid"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    assert iterations(tmp_path / "b") == iters and not (tmp_path / "a" / "metrics.json").exists()
    r = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert iterations(tmp_path / "a") == iters and iterations(tmp_path / "b") == iters
    assert "resumed from" in (tmp_path / "a.log").read_text()
    assert f"at iteration {iters}" in (tmp_path / "b.log").read_text()  # nothing left but its files


def test_a_signal_to_the_pack_stops_every_training_after_a_checkpoint(tmp_path):
    """SIGTERM (scancel, pre-emption) to the pack: forwarded; each trainer checkpoints and exits 3; so
    does the pack, and a later attempt resumes both."""
    args = CLI + ["train-pack", *pack_args(tmp_path, 2000), "--threads", "2", "--mps", "off"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logs = [(tmp_path / f"{n}.log") for n in ("a", "b")]
        if all(p.exists() and "it 10/2000" in p.read_text() for p in logs):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == STOPPED, out
    for n in ("a", "b"):
        assert "by signal SIGTERM; checkpoint written" in (tmp_path / f"{n}.log").read_text()
        assert (tmp_path / n / "checkpoint.pt").exists() and not (tmp_path / n / "model.pt").exists()


def test_early_warning_to_every_process_as_slurm_sends_it(tmp_path):
    """SIGUSR1 to every process of the pack's process group (as Slurm's `--signal` reaches every process of
    the job step), twice, the first while the trainers are still starting (before their handler): none dies
    of it; each checkpoints and exits 3 (the second warning stops it), and so does the pack."""
    args = CLI + ["train-pack", *pack_args(tmp_path, 2000), "--threads", "2", "--mps", "off"]
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGUSR1, signal.SIG_IGN),  # as the job's Snakemake leaves it
    )
    logs = [tmp_path / f"{n}.log" for n in ("a", "b")]
    deadline = time.time() + 120
    while not all(p.exists() for p in logs) and time.time() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGUSR1)  # the trainers are importing torch: no handler of theirs yet
    while time.time() < deadline + 180 and proc.poll() is None:
        if all("it 10/2000" in p.read_text() for p in logs):
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == STOPPED, out
    for p in logs:
        assert "by signal SIGUSR1; checkpoint written" in p.read_text(), p.read_text()[-2000:]


def test_mps_daemon_is_private_to_the_pack_and_stopped(tmp_path, monkeypatch):
    """With nvidia-cuda-mps-control on PATH (--mps auto): the daemon is started (-d) with pipe and log
    directories of its own, the trainers get them, and after them it is told to quit and its
    directories are removed."""
    record = tmp_path / "mps.jsonl"
    fake_mps_control(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    seen = tmp_path / "seen"

    def trainer(member, *_):  # each "trainer" writes the MPS directory it was given
        return ["sh", "-c", f'echo "$CUDA_MPS_PIPE_DIRECTORY" > {seen}-{Path(member[0]).name}']

    monkeypatch.setattr(pack, "trainer_command", trainer)
    members = [(str(tmp_path / n), "{}", str(tmp_path / f"{n}.attempts.log")) for n in ("a", "b")]
    status = run_pack(members, [tmp_path / "a.log", tmp_path / "b.log"], threads=2, mps="auto", log=lambda m: None)
    assert status == 0
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert [c["argv"] for c in calls] == [["-d"], []] and calls[1]["stdin"] == "quit\n"
    pipe = calls[0]["pipe"]
    assert calls[0]["pipe_exists"] and calls[1]["pipe"] == pipe and calls[0]["log"] != pipe
    assert Path(pipe).parent.name.startswith("resnet-repro-mps-")
    for n in ("a", "b"):
        assert (Path(f"{seen}-{n}")).read_text().strip() == pipe
    assert not Path(pipe).parent.exists()  # removed after the daemon quit
    # a second pack gets directories of its own
    run_pack(members, [tmp_path / "a.log", tmp_path / "b.log"], threads=2, mps="auto", log=lambda m: None)
    assert json.loads(record.read_text().splitlines()[2])["pipe"] != pipe


def test_mps_on_without_the_daemon_is_one_line_error(tmp_path):
    empty = tmp_path / "empty"  # a PATH without nvidia-cuda-mps-control, even on a GPU host
    empty.mkdir()
    r = subprocess.run(
        CLI + ["train-pack", *pack_args(tmp_path, 10), "--mps", "on"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": str(empty)},
    )
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == (
        "resnet-repro: error: --mps on: nvidia-cuda-mps-control is not on PATH"
    )
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("bad", [{"gpus": 2}, {"nodes": 2}])
def test_per_gpu_only_packs_one_gpu_cifar_trainings(bad):
    from resnet_repro.errors import ReproError
    from resnet_repro.plan import check_packing

    check_packing({"resources": {"cifar": {"gpus": 1, "per_gpu": 4}, "imagenet": {"gpus": 8}}})
    with pytest.raises(ReproError, match=r"resources.cifar.per_gpu: 4: only CIFAR trainings"):
        check_packing({"resources": {"cifar": {"gpus": 1, "per_gpu": 4, **bad}}})
    with pytest.raises(ReproError, match=r"resources.imagenet.per_gpu: 2"):
        check_packing({"resources": {"imagenet": {"gpus": 1, "per_gpu": 2}}})


def test_packs_go_seed_by_seed_shallowest_first_and_later_seeds_leave_them(tmp_path):
    """The tiny preset's CIFAR trainings, 2 to a pack: each once; seed 0's first (plain-20 and ResNet-20,
    the shallowest); a claim seed added later changes only packs after seed 0's."""
    from conftest import ROOT, TINY_CONFIG

    from resnet_repro.plan import cifar_packs
    from resnet_repro.preflight.estimate import load_plan

    def packs(extra):
        f = tmp_path / "extra.yaml"
        f.write_text(yaml.safe_dump({"presets": {"tiny": extra}}))
        return cifar_packs(load_plan([ROOT / "config.yaml", TINY_CONFIG, f], "tiny"))

    cifar = {"threads": 2, "mem_mb": 2000, "runtime": 10, "gpus": 0, "per_gpu": 2}
    before = packs({"resources": {"cifar": cifar}})
    runs = [r for p in before for r in p]
    assert len(runs) == len(set(runs)) and all(len(p) == 2 for p in before[:-1])
    assert before[0] == [("plain20", 0), ("resnet20", 0)]
    assert [r[1] for r in runs] == sorted(r[1] for r in runs)  # seed by seed
    after = packs({"resources": {"cifar": cifar}, "claim_seeds": {"plain20": [0, 1], "resnet56": [1]}})
    seed0 = sum(1 for p in before if all(s == 0 for _, s in p))
    assert after[:seed0] == before[:seed0] and ("resnet56", 1) in [r for p in after for r in p]
    assert packs({}) == []  # per_gpu 1, the default: no packs


def test_an_mps_daemon_that_does_not_start(tmp_path, monkeypatch):
    """nvidia-cuda-mps-control present but failing (the driver's tools on a node without a GPU): --mps auto
    goes on with plain processes, its directories removed; --mps on stops with one line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / pack.MPS_CONTROL
    tool.write_text("#!/bin/sh\necho 'no CUDA-capable device' >&2\nexit 1\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where mkdtemp makes the daemon's directory
    (tmp_path / "tmp").mkdir()
    said = []
    with pack.mps_daemon("auto", said.append) as env:
        assert env == {}
        assert not list((tmp_path / "tmp").iterdir())  # its directories removed at once
    assert "did not start" in said[-1] and "no CUDA-capable device" in said[-1]
    with pytest.raises(pack.ReproError, match="--mps on: the MPS daemon did not start"):
        with pack.mps_daemon("on", said.append):
            pass
