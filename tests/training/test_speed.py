"""The fast training path computes what a plain fp32 step computes; peak memory is recorded; and
`resnet-repro estimate` plans and prices a target. Speed itself is measured only by
benchmarks/train_throughput.py, never asserted here. The batch augmentation (pad-crop-flip) is
tested thoroughly in tests/data/test_data.py; here only that the trainer's batches are made by it."""

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import TINY_CONFIG

from resnet_repro import device as dev
from resnet_repro.data import small
from resnet_repro.errors import ReproError
from resnet_repro.models import build_model
from resnet_repro.preflight import estimate as E
from resnet_repro.preflight.commands import add_estimate
from resnet_repro.preflight.cost import cost_markdown
from resnet_repro.spec.build import build_spec
from resnet_repro.training.batches import SmallBatches
from resnet_repro.training.loop import train
from resnet_repro.training.step import Step

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits():
    return small.load_small("digits")


def batch_from(digits, n=64, seed=0):
    mean = small.pixel_mean(digits.train_x)
    return SmallBatches(digits, n, mean, {"pad": 2, "flip": True}, CPU, seed).next()


def plain_step(model, x, y):
    """The textbook step: eager, fp32, NCHW."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def fast_step(model, x, y, bf16, channels_last):
    model.to(memory_format=dev.memory_format(channels_last))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    step = Step(model, opt, CPU, bf16, channels_last)
    loss = step(x, y)
    return loss.item(), step


def twins(name="resnet8"):
    torch.manual_seed(0)
    a = build_model(name)
    b = build_model(name)
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("bf16,channels_last,tol", [(False, True, 1e-5), (False, False, 1e-6), (True, True, 2e-2)])
def test_fast_step_gives_the_plain_fp32_loss_and_update(digits, bf16, channels_last, tol):
    x, y = batch_from(digits)
    a, b = twins()
    ref = plain_step(a, x, y)
    loss, step = fast_step(b, x, y, bf16, channels_last)
    assert loss == pytest.approx(ref, rel=tol)
    # the same update: weights after one SGD step agree (bf16 rounds conv inputs, so looser there)
    for (k, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(pa.float(), pb.float(), rtol=tol, atol=tol * 1e-1 if not bf16 else 5e-3), k
    # the on-device sums: loss x n, wrong predictions, images
    loss_sum, wrong, count = step.acc.tolist()
    assert count == len(y) and loss_sum == pytest.approx(loss * len(y), rel=1e-6) and 0 <= wrong <= len(y)


def test_step_counts_errors_like_argmax(digits):
    x, y = batch_from(digits)
    torch.manual_seed(0)
    model = build_model("resnet8")
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the forward pass below sees the same weights
    step = Step(model, opt, CPU, count_warm=True)
    with torch.no_grad():
        wrong = (model(x).argmax(1) != y).sum().item()
    step(x, y)
    step(x, y)
    assert step.acc.tolist()[1:] == [2 * wrong, 2 * len(y)]
    assert step.warm.tolist() == [2 * wrong, 2 * len(y)]


def test_trainer_batches_are_normalised_pad_crop_flips(digits):
    """SmallBatches = index by a seeded permutation, normalize, small.pad_crop_flip (tested in test_data.py)."""
    mean = small.pixel_mean(digits.train_x)
    x, y = SmallBatches(digits, 32, mean, {"pad": 4, "flip": True}, CPU, seed=3).next()
    idx = torch.randperm(len(digits.train_x), generator=torch.Generator().manual_seed(3))[:32]
    want = small.pad_crop_flip(small.normalize(digits.train_x[idx], mean), 4, torch.Generator().manual_seed(4))
    assert torch.equal(x, want) and torch.equal(y, digits.train_y[idx])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_no_host_device_sync_per_step_on_cuda(digits):
    cuda = torch.device("cuda")
    data = digits.to(cuda)
    batches = SmallBatches(data, 64, small.pixel_mean(digits.train_x).to(cuda), {"pad": 2}, cuda, 0)
    model = build_model("resnet8").to(cuda, memory_format=torch.channels_last)
    step = Step(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), cuda, True, True)
    step(*batches.next())  # first call: lazy initialisation may synchronise
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            step(*batches.next())
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_auto_choices(monkeypatch):
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert (
        dev.use_bf16("auto", CPU) is False and dev.use_bf16("bf16", CPU) is True and dev.use_bf16("fp32", CPU) is False
    )
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    assert dev.use_bf16("auto", CPU) is True
    assert dev.use_channels_last("auto", CPU) is True and dev.use_channels_last(False, CPU) is False
    assert dev.use_compile("auto", CPU, 64000) is False and dev.use_compile(False, CPU) is False
    # CUDA: compile only runs long enough to pay for it (decided before looking for a GPU or Triton)
    assert dev.use_compile("auto", torch.device("cuda"), 100) is False


def test_compile_falls_back_without_a_compiler(monkeypatch, capsys):
    monkeypatch.setattr(dev, "compiler_available", lambda device: False)
    assert dev.use_compile(True, CPU) is False
    assert "running eager" in capsys.readouterr().err


def test_cpu_bf16_detection_follows_the_instruction_set():
    caps = torch.cpu.get_capabilities()
    assert dev.cpu_has_native_bf16() == bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def test_metrics_record_peak_memory(tmp_path):
    spec = build_spec(
        None,
        [
            {
                "model": "resnet8",
                "data": {"kind": "digits"},
                "max_iters": 10,
                "log_every": 5,
                "checkpoint_every": 10,
                "batch_size": 32,
                "schedule": {"kind": "multistep", "milestones": [8]},
            }
        ],
    )
    metrics = train(spec, tmp_path, log=lambda m: None)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["peak_memory_mb"] == metrics["peak_memory_mb"]
    assert 10 < saved["peak_memory_mb"] < 64 * 1024  # the process's max RSS on CPU, in MB
    assert saved["images_per_s"] > 0 and saved["s_per_1k_iters"] > 0 and saved["channels_last"] is True


# ---------------------------------------------------------------- estimate


def run_estimate(*argv):
    p = argparse.ArgumentParser()
    add_estimate(p.add_subparsers())
    args = p.parse_args(["estimate", *map(str, argv)])
    args.func(args)


@pytest.fixture
def project(tmp_path):
    """A copy of the workflow config (and its schema) with a results/ tree of its own."""
    shutil.copy(ROOT / "config.yaml", tmp_path / "config.yaml")
    (tmp_path / "workflow" / "schemas").mkdir(parents=True)
    shutil.copy(ROOT / "workflow" / "schemas" / "config.schema.yaml", tmp_path / "workflow" / "schemas")
    return tmp_path


def test_estimate_arithmetic_with_given_throughput(project, capsys):
    # tiny preset: figure1 needs plain20 and plain56, 6 iterations of batch 16 each
    r = E.estimate(
        ["reports/figure1.pdf"],
        [project / "config.yaml", TINY_CONFIG],
        None,
        given=["plain20=0.0096", "plain56=0.0048"],
        log=lambda m: None,
    )
    rows = {row["model"]: row for row in r["rows"]}
    assert set(rows) == {"plain20", "plain56"} and rows["plain20"]["images"] == 96
    assert rows["plain20"]["hours"] == pytest.approx(96 / 0.0096 / 3600)
    assert r["total_hours"] == pytest.approx(96 / 0.0096 / 3600 + 96 / 0.0048 / 3600)
    run_estimate(
        "results/table6.csv",
        "--config",
        project / "config.yaml",
        "--preset",
        "paper",
        *[
            f"--images-per-s={m}=1000"
            for m in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202")
        ],
    )
    out = capsys.readouterr().out
    # the paper: 64k iterations of batch 128 each, ResNet-110 five times: 10 trainings
    assert "10 trainings of 6 models" in out
    assert f"total: {10 * 64000 * 128 / 1000 / 3600:.4g} device-hours" in out
    assert out.splitlines()[-1].startswith("total:")


def test_estimate_reads_finished_runs(project):
    run = project / "results" / "runs" / "tiny" / "plain20" / "seed0"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"images_per_s": 12.0, "device": "cuda:0"}))
    r = E.estimate(["figure1"], [project / "config.yaml", TINY_CONFIG], None, given=["plain56=24"], log=lambda m: None)
    rows = {row["model"]: row for row in r["rows"]}
    assert rows["plain20"]["source"] == "finished runs" and rows["plain20"]["device"] == "cuda:0"
    assert rows["plain20"]["hours"] == pytest.approx(96 / 12 / 3600) and rows["plain56"]["source"] == "given"


def test_estimate_measures_the_step(project, capsys):
    run_estimate(
        "results/runs/tiny/resnet20/seed0",
        "--config",
        project / "config.yaml",
        "--configfile",
        TINY_CONFIG,
        "--iters",
        1,
        "--warmup",
        1,
        "--device",
        "cpu",
    )
    out = capsys.readouterr().out
    assert "measured now on cpu" in out and "1 trainings of 1 models" in out
    assert "resnet20" in out and "measured (batch 16) (cpu)" in out and "device-hours" in out


def test_estimate_targets_and_errors(project):
    plan = E.load_plan([project / "config.yaml", TINY_CONFIG])
    assert E.runs_for(plan, ["all"]) == E.runs_for(plan, ["tiny"]) == plan.all_runs()
    assert E.runs_for(plan, ["results/table6.md", "table6"]) == plan.runs("table6")
    with pytest.raises(ReproError, match="unknown target"):
        E.runs_for(plan, ["results/table9.csv"])
    assert E.runs_for(plan, ["results/runs/tiny/resnet20/seed3/eval/single/metrics.json"]) == [("resnet20", 3)]
    with pytest.raises(ReproError, match="preset 'paper'"):
        E.runs_for(plan, ["results/runs/paper/resnet20/seed0"])
    with pytest.raises(ReproError, match="MODEL=N"):
        E.parse_given(["resnet20"])
    with pytest.raises(ReproError, match="not defined"):
        E.load_plan(project / "config.yaml", "nosuch")
    with pytest.raises(ReproError, match="preset 'tiny' is not defined; choose one of paper, demo"):
        E.load_plan(project / "config.yaml", "tiny")  # the tests' preset is not in the user's config
    with pytest.raises(ReproError, match="cannot read workflow config .*nosuch.yaml: No such file"):
        E.load_plan([project / "config.yaml", project / "nosuch.yaml"])
    (project / "list.yaml").write_text("- preset\n")
    with pytest.raises(ReproError, match="list.yaml must be a YAML mapping, got list"):
        E.load_plan([project / "config.yaml", project / "list.yaml"])


def test_estimate_merges_config_files_in_order_as_snakemake(project, capsys):
    """Each --configfile is merged over those before it (mappings key by key, lists replaced), and its
    `preset` selects the preset unless --preset says otherwise."""
    (project / "more.yaml").write_text("presets: {tiny: {training: {cifar: {max_iters: 10}}}}\n")
    plan = E.load_plan([project / "config.yaml", TINY_CONFIG, project / "more.yaml"])
    spec = plan.train_overrides("resnet20", 0)
    assert plan.preset == "tiny" and spec["max_iters"] == 10 and spec["batch_size"] == 16  # tiny.yaml's, kept
    assert E.load_plan([project / "config.yaml", TINY_CONFIG], "paper").preset == "paper"
    run_estimate(
        "table6",
        "--configfile",
        TINY_CONFIG,
        project / "more.yaml",
        "--config",
        project / "config.yaml",
        "--images-per-s=resnet20=1",
        "--images-per-s=resnet56=1",
        "--images-per-s=resnet110=1",
        "--images-per-s=resnet32=1",
        "--images-per-s=resnet44=1",
        "--images-per-s=resnet1202=1",
    )
    assert "(preset tiny)" in capsys.readouterr().out


def test_estimate_from_a_rates_file_prices_every_artifact(project, tmp_path):
    """--rates: each model's images/s from the file (measured or scaled, as it says), before finished runs
    and measuring; with `all`, each artifact's GPU-hours and the wall-clock of its longest training on
    the GPUs the config gives it."""
    from resnet_repro.paper.catalogue import ARTIFACTS

    plan = E.load_plan(project / "config.yaml")
    models = {m for m, _ in plan.all_runs()}
    rates = tmp_path / "rates.json"
    rates.write_text(
        json.dumps(
            {"card": "X", "date": "d", "source": "s", "rates": dict.fromkeys(models, 1000.0), "measured": ["resnet56"]}
        )
    )
    r = E.estimate(["all"], project / "config.yaml", rates=rates, log=lambda m: None)
    rows = {row["model"]: row for row in r["rows"]}
    assert (
        rows["resnet56"]["source"] == "rates file, measured"
        and rows["resnet20"]["source"] == "rates file, scaled by FLOPs"
    )
    assert set(r["artifacts"]) == set(ARTIFACTS)
    t6 = r["artifacts"]["table6"]  # 10 trainings of 64k x 128 at 1,000 images/s, one GPU each
    one = 64000 * 128 / 1000 / 3600
    assert t6["trainings"] == 10 and t6["gpu_hours"] == pytest.approx(10 * one)
    assert t6["wall_hours_1gpu"] == pytest.approx(one) and t6["wall_hours_8gpu"] == pytest.approx(one / 8)
    # its evaluations: 10 runs x 10,000 test images x one forward pass, a third of a training image's cost
    assert t6["eval_hours"] == pytest.approx(10 * 10000 / 3 / 1000 / 3600)
    t2 = r["artifacts"]["table2"]  # 600k x 256: on 8 GPUs an eighth of its hours in wall-clock time at best
    assert t2["wall_hours_8gpu"] == pytest.approx(600000 * 256 / 1000 / 3600 / 8)
    assert t2["eval_hours"] == pytest.approx(4 * 50000 * 10 / 3 / 1000 / 3600)  # 10-crop
    assert r["total_hours"] == pytest.approx(sum(row["hours"] for row in r["rows"]))
    assert r["cost"]["train_hours"] == pytest.approx(r["total_hours"]) and r["cost"]["overhead_hours"] == 0
    # what the rates file measures beyond images/s: DDP efficiency, per-attempt overhead, the packing gain
    extra = {"ddp8_efficiency": 0.8, "attempt_s": 360, "packing": {"2": 1.6}}
    rates.write_text(json.dumps({**json.loads(rates.read_text()), **extra}))
    packed = project / "packed.yaml"
    packed.write_text(yaml.safe_dump({"resources": {"cifar": {"threads": 4, "mem_mb": 16000, "runtime": 720,
                                                               "gpus": 1, "per_gpu": 2}}}))  # fmt: skip
    r2 = E.estimate(["all"], [project / "config.yaml", packed], rates=rates, log=lambda m: None)
    assert r2["artifacts"]["table2"]["wall_hours_8gpu"] == pytest.approx(t2["wall_hours_8gpu"] / 0.8)
    assert r2["artifacts"]["table2"]["gpu_hours"] == pytest.approx(t2["gpu_hours"] / 0.8)  # 8 GPUs at 80%
    # CIFAR packed 2 to a GPU at a gain of 1.6: each training a share of a GPU, beside the other one
    assert r2["artifacts"]["table6"]["gpu_hours"] == pytest.approx(10 * one / 1.6)
    assert r2["artifacts"]["table6"]["wall_hours_1gpu"] == pytest.approx(one * 2 / 1.6)
    # an evaluation two tables show is counted once (Tables 3-5 share their ImageNet runs)
    assert r["cost"]["eval_hours"] < sum(a["eval_hours"] for a in r["artifacts"].values())
    # ImageNet's trainings on 8 GPUs: one attempt each of 6 minutes on 8 GPUs
    assert r2["artifacts"]["table2"]["overhead_hours"] == pytest.approx(4 * 360 * 8 / 3600)
    block = cost_markdown(r2)
    assert "linear scaling" not in block and "no per-attempt overhead" not in block and "gain 1.6x" in block
    assert E.estimate(["table6"], project / "config.yaml", rates=rates, log=lambda m: None)["artifacts"] == {}
    rates.write_text(json.dumps({"rates": {"resnet20": 0}}))
    with pytest.raises(ReproError, match="every rate must be a number of images/s above 0"):
        E.read_rates(rates)
    rates.write_text("[]")
    with pytest.raises(ReproError, match="not a rates file"):
        E.read_rates(rates)
