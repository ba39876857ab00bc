"""`resnet-repro doctor` on the CPU: every check runs (the CPU twins of the CUDA paths) and reports
one line; a failing check is one line with its error, the others still run, the exit status says so."""

import dataclasses
from pathlib import Path

import pytest

from resnet_repro import cli
from resnet_repro.preflight import checks
from resnet_repro.preflight import doctor as doc
from resnet_repro.preflight.fixtures import sizes

NAMES = [c.name for c in checks.CHECKS]

ROOT = Path(__file__).resolve().parents[2]


def check_lines(lines):
    """{check: (status, detail)} from doctor's output lines."""
    found = {}
    for line in lines:
        parts = line.split(None, 2)
        if len(parts) >= 2 and parts[0] in ("ok", "failed", "skipped") and parts[1] in NAMES:
            found[parts[1]] = (parts[0], parts[2] if len(parts) > 2 else "")
    return found


def test_doctor_runs_every_check_on_the_cpu(tmp_path):
    lines = []
    results = doc.doctor("cpu", out=lines.append, config=ROOT / "config.yaml", work=tmp_path)
    found = check_lines(lines)
    assert list(found) == NAMES == list(results)
    assert not [n for n, (s, _) in found.items() if s == "failed"], "\n".join(lines)
    for name, (status, detail) in found.items():
        assert status == "ok" or detail.startswith(": ") and len(detail) > 10, (name, detail)  # a skip says why
    assert "torchcodec" in found["jpeg-decode"][1]
    assert "resumed there" in found["checkpoint-resume"][1]
    assert "gloo over 2 CPU processes" in found["ddp"][1]
    assert any(line.startswith("measured: resnet56") for line in lines)
    assert any(line.startswith("measured: resnet50") for line in lines)
    assert any("| total:" in line for line in lines)  # the estimate's table
    assert lines[-1].startswith(f"doctor: {len(NAMES)} ok, 0 failed")


def test_a_failed_check_is_one_line_and_the_exit_status_says_so(monkeypatch, capsys):
    def boom():
        raise RuntimeError("nvjpeg: something broke\nsecond line of the message")

    def skip():
        raise checks.Skip("not in this test")

    def stand_in(check):
        if check.name == "jpeg-decode":
            return lambda ctx: boom()
        return (lambda ctx: skip()) if check.name.startswith("eval-") else (lambda ctx: "fine")

    monkeypatch.setattr(checks, "CHECKS", tuple(dataclasses.replace(c, function=stand_in(c)) for c in checks.CHECKS))
    assert cli.main(["doctor", "--device", "cpu"]) == 2
    captured = capsys.readouterr()
    found = check_lines(captured.out.splitlines())
    assert list(found) == NAMES
    assert found["jpeg-decode"][0] == "failed"
    assert found["jpeg-decode"][1].startswith(": RuntimeError: nvjpeg: something broke [")
    assert (
        found["eval-center"] == ("skipped", found["eval-center"][1]) and "not in this test" in found["eval-center"][1]
    )
    assert found["device"][0] == found["ddp"][0] == "ok"
    assert "Traceback" not in captured.out + captured.err and "second line" not in captured.out
    assert "some checks failed" in captured.err


@pytest.mark.parametrize("device,batch", [("cpu", 16), ("cuda", 128)])
def test_sizes_scale_with_the_device(device, batch):
    import torch

    s = sizes(torch.device(device))
    assert s["cifar_batch"] == batch
    assert (s["crop"], s["imagenet_batch"]) == ((224, 256) if device == "cuda" else (56, 8))


def test_a_check_waits_for_what_it_needs(tmp_path):
    """A check whose prerequisite did not pass is skipped, naming it, without running."""
    ran = []
    ctx = checks.Context(None, "auto", "config.yaml", tmp_path, {}, out=ran.append)
    results = {"cifar-train": "failed"}
    doc.run_check(ctx, checks.Check("after", lambda c: ran.append("ran") or "done", needs=("cifar-train",)), results)
    assert results["after"] == "skipped" and "ran" not in ran
    assert ran[0].startswith("skipped  after             : needs cifar-train, which failed")
    needs = {c.name: c.needs for c in checks.CHECKS}
    assert needs["eval-center"] == ("imagenet-train",) and needs["checkpoint-resume"] == ("cifar-train",)
