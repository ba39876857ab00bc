"""resnet_repro.files: atomic writes with the user's file mode, and .pt files read as data only."""

import os
import stat
import subprocess
import sys

import pytest
import torch

from resnet_repro.errors import ReproError
from resnet_repro.files import load_torch, save_torch, write_json, write_text

CLI = [sys.executable, "-m", "resnet_repro"]


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask,want", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_written_files_have_the_mode_of_a_plain_open(tmp_path, umask, mask, want):
    umask(mask)
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as f:
        f.write("x")
    assert mode(plain) == want
    write_text(tmp_path / "results" / "table6.csv", "a,b\n")
    write_json(tmp_path / "metrics.json", {"a": 1})
    save_torch({"w": torch.zeros(2)}, tmp_path / "model.pt")
    for name in ("results/table6.csv", "metrics.json", "model.pt"):
        assert mode(tmp_path / name) == want, name
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temporary file left beside them


def test_rewrite_keeps_the_content_whole(tmp_path):
    write_text(tmp_path / "a.txt", "one\n")
    write_text(tmp_path / "a.txt", "two\n")
    assert (tmp_path / "a.txt").read_text() == "two\n"


class RunsCode:
    """What a crafted checkpoint holds: unpickling it calls os.system."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path):
    """A .pt shaped like a checkpoint whose unpickling would write a marker file."""
    marker = tmp_path / "code-ran"
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    torch.save({"spec": RunsCode(marker), "model": {}, "num_classes": 10, "mean": torch.zeros(3, 8, 8)}, path)
    return path, marker


def test_load_torch_refuses_code(crafted):
    path, marker = crafted
    with pytest.raises(ReproError, match="refused to load checkpoint .*holds code") as e:
        load_torch(path)
    assert "\n" not in str(e.value) and "posix.system" in str(e.value)
    assert not marker.exists()


def test_load_torch_reads_what_the_project_writes(tmp_path):
    obj = {
        "spec": {"model": "resnet20", "data": {"kind": "digits"}},
        "model": {"w": torch.ones(2)},
        "history": [{"iteration": 10, "lr": 0.1}],
        "best": float("inf"),
        "classes": ["0", "1"],
        "rng": torch.get_rng_state(),
    }
    save_torch(obj, tmp_path / "c.pt")
    got = load_torch(tmp_path / "c.pt")
    assert (
        got["spec"] == obj["spec"]
        and got["history"] == obj["history"]
        and torch.equal(got["model"]["w"], obj["model"]["w"])
    )


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "{ckpt}", "--out", "{out}"],
        ["responses", "{ckpt}", "--out", "{out}/r.csv"],
        ["train", "--model", "resnet8", "--data", "digits", "--max-iters", "2", "--out", "{run}", "--resume"],
    ],
)
def test_commands_refuse_a_crafted_checkpoint_in_one_line(crafted, tmp_path, command):
    path, marker = crafted
    args = [a.format(ckpt=path, out=tmp_path / "out", run=path.parent) for a in command]
    proc = subprocess.run(
        CLI + args, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1")
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("resnet-repro: error: refused to load checkpoint"), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert not marker.exists()  # the code in the file never ran
    assert not (tmp_path / "out").exists() and not (path.parent / "model.pt").exists()
