"""The planned jobs of `snakemake -n -p all` (paper, demo, tiny) are those recorded in tests/dag/: a
refactoring that changes a shell string, an input or an output would rerun users' finished trainings.
A deliberate change is recorded with `python benchmarks/dag_lines.py --write` and shows in review."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import dag_lines  # noqa: E402


@pytest.mark.parametrize("preset", dag_lines.PRESETS)
def test_planned_jobs_are_as_recorded(preset):
    recorded = (dag_lines.RECORD / f"{preset}.txt").read_text().splitlines()
    now = dag_lines.lines(preset)
    assert len(now) > 100
    missing, extra = sorted(set(recorded) - set(now)), sorted(set(now) - set(recorded))
    assert not missing and not extra, f"{preset}: jobs no longer planned {missing[:3]}, newly planned {extra[:3]}"


def test_a_changed_job_is_reported(tmp_path):
    text = "\n".join(
        [
            "rule train:",
            "    input: b, a",
            "    output: x",
            "    jobid: 7",
            "    reason: whatever",
            "Shell command: resnet-repro train --out x",
            "localrule all:",
            "    input: x",
            "Shell command: None",
        ]
    )
    assert dag_lines.jobs(text) == [
        "rule: all | input: x | shell: None",
        "rule: train | input: a, b | output: x | shell: resnet-repro train --out x",
    ]
    assert dag_lines.jobs(text.replace("--out x", "--out y")) != dag_lines.jobs(text)


def test_check_exits_non_zero_on_a_change(tmp_path, monkeypatch):
    r = subprocess.run(
        [sys.executable, ROOT / "benchmarks" / "dag_lines.py", "--check", "tiny"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    monkeypatch.setattr(dag_lines, "RECORD", tmp_path)
    (tmp_path / "tiny.txt").write_text("rule: train | shell: resnet-repro train --out elsewhere\n")
    monkeypatch.setattr(sys, "argv", ["dag_lines.py", "--check", "tiny"])
    assert dag_lines.main() == 1
