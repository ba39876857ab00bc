"""Training: learning on digits, exact resume after a kill, divergence, schedules, specs."""

import csv
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from resnet_repro.errors import ReproError
from resnet_repro.files import load_torch
from resnet_repro.spec.build import build_spec
from resnet_repro.training.loop import Diverged, Interrupted, train
from resnet_repro.training.schedule import LearningRate

CLI = [sys.executable, "-m", "resnet_repro"]
TIMING = {"images_per_s", "elapsed_s"}


def tiny_spec(**over):
    base = {
        "model": "resnet8",
        "data": {"kind": "digits"},
        "max_iters": 60,
        "log_every": 10,
        "checkpoint_every": 20,
        "batch_size": 64,
        "schedule": {"kind": "multistep", "milestones": [40]},
    }
    return build_spec(None, [base, over])


def read_history(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def strip_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def weights(out):
    return torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resnet_learns_digits(tmp_path):
    spec = build_spec(
        None,
        [
            {
                "model": "resnet20",
                "data": {"kind": "digits", "image_size": 16},
                "max_iters": 300,
                "log_every": 50,
                "checkpoint_every": 300,
                "schedule": {"kind": "multistep", "milestones": [200, 250]},
            }
        ],
    )
    metrics = train(spec, tmp_path)
    assert metrics["test_error"] < 20, metrics  # chance is 90%
    history = read_history(tmp_path / "history.csv")
    assert [int(r["iteration"]) for r in history] == list(range(50, 301, 50))
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    assert [float(r["lr"]) for r in history] == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.01, 0.001])
    ckpt = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert ckpt["done"] and ckpt["iteration"] == 300 and ckpt["classes"] == [str(i) for i in range(10)]


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_forced_precision_trains_and_is_recorded(tmp_path, precision):
    """Both arithmetic paths of training run on every machine (bf16 is emulated, slowly, on an AVX2 CPU):
    ResNet-20 learns a little in either, and metrics.json and the checkpoint say which was used.
    The test-error curve is computed in fp32 whatever trains."""
    spec = tiny_spec(model="resnet20", precision=precision, max_iters=40, log_every=20, checkpoint_every=40)
    metrics = train(spec, tmp_path, log=lambda msg: None)
    assert metrics["precision"] == precision and metrics["eval_precision"] == "fp32"
    assert metrics["tf32"] is None  # a CPU has no TF32; on CUDA device.configure turns it off and says so
    assert load_torch(tmp_path / "model.pt")["precision"] == precision
    history = read_history(tmp_path / "history.csv")
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"]) or metrics["test_error"] < 80


def test_stop_and_resume_equals_uninterrupted(tmp_path):
    spec = tiny_spec()
    full = train(spec, tmp_path / "full")
    with pytest.raises(Interrupted):
        train(spec, tmp_path / "split", stop_at=30)  # between two checkpoints: the stop writes its own
    assert torch.load(tmp_path / "split" / "checkpoint.pt", weights_only=False)["iteration"] == 30
    resumed = train(spec, tmp_path / "split", resume=True)
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "split"))
    assert strip_timing(read_history(tmp_path / "full" / "history.csv")) == strip_timing(
        read_history(tmp_path / "split" / "history.csv")
    )
    assert resumed["test_error"] == full["test_error"]


def test_killed_process_resumes_to_the_same_result(tmp_path):
    """A real SIGKILL at an arbitrary moment after the first checkpoint, then --resume."""
    args = [
        "train",
        "--model",
        "resnet8",
        "--data",
        "digits",
        "--max-iters",
        "120",
        "--log-every",
        "10",
        "--checkpoint-every",
        "20",
        "--batch-size",
        "64",
        "--milestones",
        "80",
    ]
    subprocess.run(CLI + args + ["--out", str(tmp_path / "full")], check=True, capture_output=True)
    ckpt = tmp_path / "killed" / "checkpoint.pt"
    proc = subprocess.Popen(CLI + args + ["--out", str(tmp_path / "killed")], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert ckpt.exists(), "no checkpoint was written before the kill"
    killed_at = torch.load(ckpt, weights_only=False)["iteration"]
    assert 0 < killed_at < 120
    r = subprocess.run(CLI + args + ["--out", str(tmp_path / "killed"), "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"resumed from {ckpt} at iteration {killed_at}" in r.stderr
    assert_same_weights(weights(tmp_path / "full"), weights(tmp_path / "killed"))
    assert strip_timing(read_history(tmp_path / "full" / "history.csv")) == strip_timing(
        read_history(tmp_path / "killed" / "history.csv")
    )
    assert not [p for p in (tmp_path / "killed").iterdir() if p.name.endswith(".tmp")]


def test_sigterm_checkpoints_and_exits_3(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        CLI
        + [
            "train",
            "--model",
            "resnet8",
            "--data",
            "digits",
            "--max-iters",
            "100000",
            "--log-every",
            "10",
            "--checkpoint-every",
            "10",
            "--out",
            str(out),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 240
    while not (out / "history.csv").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "SIGTERM" in err and "--resume" in err
    it = torch.load(out / "checkpoint.pt", weights_only=False)["iteration"]
    assert it >= 10


def test_divergence_is_an_error(tmp_path):
    with pytest.raises(Diverged, match="diverged"):
        train(tiny_spec(lr=1e6), tmp_path)
    r = subprocess.run(
        CLI
        + [
            "train",
            "--model",
            "resnet8",
            "--data",
            "digits",
            "--max-iters",
            "20",
            "--lr",
            "1e6",
            "--log-every",
            "10",
            "--out",
            str(tmp_path / "cli"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "diverged" in r.stderr
    assert not (tmp_path / "cli" / "metrics.json").exists()


def test_warmup_rule(tmp_path):
    # digits' first iterations are above 95% error, so the warm-up ends at the first check (iteration 10)
    spec = tiny_spec(
        warmup={"models": ["resnet8"], "lr": 0.01, "until_train_error": 95, "check_every": 10, "max_iters": 50},
        max_iters=60,
    )
    metrics = train(spec, tmp_path)
    lrs = [float(r["lr"]) for r in read_history(tmp_path / "history.csv")]
    assert lrs[:2] == pytest.approx([0.01, 0.1])  # the record at 10 shows the lr its iterations used
    assert lrs[-1] == pytest.approx(0.01)  # after the warm-up: 0.1, then / 10 at the milestone (40)
    assert any(x == pytest.approx(0.1) for x in lrs)
    assert metrics["warmup"]["iteration"] == 10 and metrics["warmup"]["by"] == "train_error"
    assert metrics["warnings"] == []


def test_warmup_is_capped_and_says_so(tmp_path):
    """A net that never gets below the threshold leaves the warm-up at max_iters, follows the schedule
    from there, and the log and metrics.json say so."""
    spec = tiny_spec(
        warmup={"models": ["resnet8"], "lr": 0.01, "until_train_error": 0, "check_every": 10, "max_iters": 25},
        max_iters=60,
    )
    logged = []
    metrics = train(spec, tmp_path, log=logged.append)
    lrs = [float(r["lr"]) for r in read_history(tmp_path / "history.csv")]
    assert lrs == pytest.approx([0.01, 0.01, 0.1, 0.1, 0.01, 0.01])  # 0.1 from 26, / 10 at 40
    assert metrics["warmup"]["iteration"] == 25 and metrics["warmup"]["by"] == "cap"
    assert len(metrics["warnings"]) == 1 and "cap" in metrics["warnings"][0]
    assert any("warning: warm-up ended by its cap (warmup.max_iters=25) at iteration 25" in m for m in logged)


def test_warmup_is_for_the_residual_nets_the_paper_names():
    paper = {
        "models": ["resnet110", "resnet1202"],
        "lr": 0.01,
        "until_train_error": 80,
        "check_every": 100,
        "max_iters": 2000,
    }
    assert build_spec(None, [{"model": "resnet110"}])["warmup"] == paper
    assert build_spec(None, [{"model": "cifar-resnet110"}])["warmup"] == paper
    assert build_spec(None, [{"model": "resnet1202"}])["warmup"] == paper
    for model in ("plain110", "resnet56", "resnet152"):
        assert build_spec(None, [{"model": model}])["warmup"] is None, model
    # configurable: another net is warmed up once named; the paper's nets can go without
    assert build_spec(None, [{"model": "plain110", "warmup": {"models": ["plain110"]}}])["warmup"]["lr"] == 0.01
    assert build_spec(None, [{"model": "resnet110", "warmup": None}])["warmup"] is None
    shown = {
        m: yaml.safe_load(
            subprocess.run(CLI + ["spec", "--model", m], capture_output=True, text=True, check=True).stdout
        )["warmup"]
        for m in ("plain110", "resnet110")
    }
    assert shown == {"plain110": None, "resnet110": paper}


def test_learning_rate_schedules():
    lr = LearningRate(build_spec(None, [{"model": "resnet20"}]))
    assert [lr.at(i) for i in (0, 31999, 32000, 47999, 48000, 63999)] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    )
    lr = LearningRate(build_spec(None, [{"model": "resnet110"}]))
    assert lr.at(0) == 0.01
    assert lr.observe_train_error(100, 85.0) is None and lr.at(100) == 0.01
    assert lr.observe_train_error(200, 79.0) == "train_error" and lr.at(200) == 0.1
    assert lr.at(32000) == pytest.approx(0.01)
    lr = LearningRate(build_spec(None, [{"model": "resnet110"}]))
    assert lr.observe_train_error(1900, 85.0) is None and lr.observe_train_error(2000, 85.0) == "cap"
    assert lr.at(2000) == 0.1


def test_imagenet_schedule_is_the_papers_milestones():
    """Figure 4's drops near 150k and 300k of 600k iterations, not a plateau rule on the val split."""
    r = subprocess.run(CLI + ["spec", "--model", "resnet50"], capture_output=True, text=True, check=True)
    spec = yaml.safe_load(r.stdout)
    assert spec["schedule"]["kind"] == "multistep" and spec["schedule"]["milestones"] == [150000, 300000]
    assert spec["max_iters"] == 600000
    lr = LearningRate(spec)
    assert [lr.at(i) for i in (0, 149999, 150000, 300000, 599999)] == pytest.approx([0.1, 0.1, 0.01, 0.001, 0.001])


def test_plateau_patience_is_in_iterations():
    p = LearningRate(
        build_spec(
            None,
            [
                {
                    "model": "resnet50",
                    "schedule": {"kind": "plateau", "patience_iters": 20000, "threshold": 0.5, "max_drops": 1},
                }
            ],
        )
    )
    seen = [(5000, 50), (10000, 40), (15000, 39.8), (25000, 39.9), (30000, 39.6), (35000, 30), (60000, 29.9)]
    drops = [p.observe_holdout_error(i, e) for i, e in seen]
    # best 40 at 10k; 39.8 and 39.6 do not beat it by 0.5; 20k iterations later (30k): / 10; max_drops caps it
    assert drops == [False, False, False, False, True, False, False]
    assert p.drops == [30000] and p.at(30001) == pytest.approx(0.01)


def test_plateau_decides_on_held_out_training_images(tmp_path):
    """The plateau rule reads the error of `holdout` training images the training never sees; the test
    split (what the tables report) only goes into the history."""
    spec = tiny_spec(
        schedule={"kind": "plateau", "holdout": 200, "patience_iters": 20, "threshold": 100.0, "max_drops": 1},
        max_iters=50,
    )
    logged = []
    metrics = train(spec, tmp_path, log=logged.append)
    history = read_history(tmp_path / "history.csv")
    # threshold 100: nothing after the first record counts as an improvement, so the drop comes at 10 + 20
    assert [float(r["lr"]) for r in history] == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01])
    assert metrics["lr_drops"] == [30]
    held = [float(r["holdout_error"]) for r in history]
    assert all(0 <= e <= 100 for e in held) and held != [float(r["test_error"]) for r in history]
    assert any("held-out training error plateaued" in m and "iteration 30" in m for m in logged)
    # the held-out images are not trained on: the epoch is 200 images shorter (1347 - 200 = 1147 for digits)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["batches"]["perm"].numel() == 1147


def test_held_out_split_is_disjoint_and_seeded():
    from resnet_repro.data import small, stream

    kept, held = small.held_out_indices(100, 10, seed=3)
    assert len(held) == 10 and sorted(kept.tolist() + held.tolist()) == list(range(100))
    assert torch.equal(held, small.held_out_indices(100, 10, seed=3)[1])

    class Folder:
        samples = [(f"img{i}.png", i % 3) for i in range(30)]
        targets = [i % 3 for i in range(30)]
        classes = ["a", "b", "c"]

    rest, out = stream.hold_out_samples(Folder(), 5, seed=0)
    assert len(rest.samples) == 25 and len(out.samples) == 5 and out.targets == [label for _, label in out.samples]
    assert not {p for p, _ in rest.samples} & {p for p, _ in out.samples} and len(Folder.samples) == 30
    with pytest.raises(ReproError, match="schedule.holdout=30 must be between 1 and the training set size 30"):
        small.held_out_indices(30, 30, seed=0)


def test_plateau_needs_its_settings():
    with pytest.raises(ReproError, match="schedule.holdout, schedule.patience_iters"):
        build_spec(None, [{"model": "resnet20", "schedule": {"kind": "plateau"}}])
    with pytest.raises(ReproError, match="patience"):  # the old key (evaluations) is refused, not misread
        build_spec(None, [{"model": "resnet50", "schedule": {"kind": "plateau", "patience": 3}}])


def test_compile_can_be_set():
    for setting in (False, True, "auto"):
        assert build_spec(None, [{"model": "resnet20", "compile": setting}])["compile"] == setting
    assert build_spec(None, [{"model": "resnet50"}])["compile"] == "auto"


def test_resume_refuses_another_spec(tmp_path):
    with pytest.raises(Interrupted):
        train(tiny_spec(), tmp_path, stop_at=10)
    with pytest.raises(ReproError, match="different spec.*lr"):
        train(tiny_spec(lr=0.05), tmp_path, resume=True)


def test_spec_precedence_and_defaults(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text("model: resnet56\nlr: 0.05\ndata: {kind: digits}\n")
    spec = build_spec(str(f), [{"lr": 0.02}])
    assert spec["lr"] == 0.02 and spec["batch_size"] == 128 and spec["max_iters"] == 64000
    assert spec["schedule"]["milestones"] == [32000, 48000] and spec["data"]["kind"] == "digits"
    assert build_spec(None, [{"model": "resnet50"}])["schedule"]["kind"] == "multistep"
    assert build_spec(None, [{"model": "resnet50"}])["batch_size"] == 256


@pytest.mark.parametrize(
    "text,words",
    [
        ("model: resnet20\nlr: [\n", "not valid YAML"),
        ("model: resnet20\nlearning_rate: 0.1\n", "learning_rate"),
        ("model: resnet20\nbatch_size: big\n", "batch_size"),
        ("model: resnet20\nschedule: {kind: cosine}\n", "schedule.kind"),
        ("- a list\n", "mapping"),
        ("lr: 0.1\n", "no model"),
        ("model: resnet21\n", "6n+2"),
    ],
)
def test_malformed_specs_are_one_line_errors(tmp_path, text, words):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ReproError) as e:
        build_spec(str(f))
    assert words in str(e.value) and "\n" not in str(e.value)
    r = subprocess.run(CLI + ["train", "--spec", str(f), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and words in r.stderr
    assert not (tmp_path / "o").exists()  # nothing started


def test_spec_command_prints_the_effective_spec():
    r = subprocess.run(
        CLI + ["spec", "--model", "resnet110", "--set", "schedule.milestones=[10,20]", "--max-iters", "30"],
        capture_output=True,
        text=True,
        check=True,
    )
    spec = yaml.safe_load(r.stdout)
    assert spec["schedule"]["milestones"] == [10, 20] and spec["max_iters"] == 30 and spec["warmup"]["lr"] == 0.01


def test_missing_dataset_is_one_line_error(tmp_path):
    r = subprocess.run(
        CLI + ["train", "--model", "resnet20", "--data-root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "cifar-10-python.tar.gz" in r.stderr


def test_help_for_every_command():
    for cmd in ([], ["models"], ["spec"], ["train"], ["evaluate"], ["ensemble"], ["responses"], ["make-imagefolder"]):
        r = subprocess.run(CLI + cmd + ["--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: resnet-repro" in r.stdout and len(r.stdout) > 200


def test_wall_time_checkpoints(tmp_path):
    """checkpoint_minutes: a checkpoint once that much wall time has passed since the last, whatever
    checkpoint_every says; 0 turns it off."""
    logs = []
    train(tiny_spec(max_iters=20, checkpoint_every=1000, checkpoint_minutes=1e-9), tmp_path / "on", log=logs.append)
    assert [l for l in logs if "minutes since the last" in l][:2] == [
        "[resnet8] checkpoint at iteration 1 (1e-09 minutes since the last)",
        "[resnet8] checkpoint at iteration 2 (1e-09 minutes since the last)",
    ]
    logs.clear()
    train(tiny_spec(max_iters=20, checkpoint_every=1000, checkpoint_minutes=0), tmp_path / "off", log=logs.append)
    assert not [l for l in logs if "minutes since the last" in l]
    assert build_spec(None, [{"model": "resnet20"}])["checkpoint_minutes"] == 30
    with pytest.raises(ReproError, match="checkpoint_minutes"):
        tiny_spec(checkpoint_minutes=-1)


def test_attempt_header_names_the_attempt_and_the_slurm_job():
    from argparse import Namespace

    from resnet_repro.cli import attempt_header

    args = Namespace(command="train", attempt=3)
    h = attempt_header(args, {"SLURM_JOB_ID": "123", "SLURM_RESTART_COUNT": "1"})
    assert h.startswith("=== resnet-repro train: attempt 3, Slurm job 123 (requeued 1x) on ") and h.endswith(" ===")
    assert "attempt 1, no Slurm job on " in attempt_header(Namespace(command="evaluate", attempt=1), {})
    assert attempt_header(args, {"RANK": "1"}) is None  # torchrun's other processes stay quiet
    assert attempt_header(Namespace(command="train", attempt=None), {}) is None


def test_tf32_is_turned_off_on_cuda_and_recorded():
    """'fp32' on a GPU means IEEE fp32: device.configure turns TF32 off for convolutions and matmuls
    (PyTorch's default leaves cuDNN's on), and tf32_in_use reports what is set (None on a CPU)."""
    import torch

    from resnet_repro.device import configure, tf32_in_use

    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    saved = cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark
    try:
        cudnn.allow_tf32, matmul.allow_tf32 = True, True
        cuda = torch.device("cuda")
        assert tf32_in_use(cuda) is True
        configure(cuda)  # sets flags only: no GPU needed
        assert cudnn.allow_tf32 is False and matmul.allow_tf32 is False
        assert tf32_in_use(cuda) is False and tf32_in_use(torch.device("cpu")) is None
    finally:
        cudnn.allow_tf32, matmul.allow_tf32, cudnn.benchmark = saved
