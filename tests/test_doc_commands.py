"""Every command README.md and docs/ show (their ```sh blocks) is exercised, so none rots: run here as
written, dry-run (Snakemake's or make's -n), run by a named test, run by CI's script, or, for another
tool's command shown for the reader (Slurm's, ssh, the shell's), named as such with why. A command
added to the docs without a line here fails, and so does a line here whose command left the docs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, doc_commands

BIN = Path(sys.executable).parent
SLURM_SITE = {"RESNET_SLURM_PARTITION": "gpu", "RESNET_SLURM_ACCOUNT": "myproject"}  # cluster.md's export

# cli.md's walk through the steps by hand, in order, in an empty directory: run as written
WALK = [
    "resnet-repro models",
    "resnet-repro spec --model resnet110",
    "resnet-repro train --model plain20 --data digits --max-iters 200 --out runs/plain20",
    "resnet-repro train --model resnet20 --data digits --max-iters 200 --out runs/resnet20",
    "resnet-repro train --model resnet20 --data digits --max-iters 200 --out runs/resnet20 --resume",
    "resnet-repro evaluate runs/plain20/model.pt --views single --out runs/plain20/eval/single",
    "resnet-repro evaluate runs/resnet20/model.pt --views single --out runs/resnet20/eval/single",
    "resnet-repro responses runs/plain20/model.pt --out runs/plain20/responses.csv",
    "resnet-repro responses runs/resnet20/model.pt --out runs/resnet20/responses.csv",
    "resnet-repro ensemble runs/plain20/eval/single/scores-single.npz runs/resnet20/eval/single/scores-single.npz "
    "--out results/ensemble.json",
    "resnet-repro figure figure1 --run runs/plain20 --out reports/figure1.pdf",
    "resnet-repro figure figure7 --run runs/plain20 runs/resnet20 --out reports/figure7.pdf",
    "resnet-repro table table6 --run runs/resnet20 --out results/table6.csv",
]
WALK_MAKES = ["runs/resnet20/model.pt", "results/ensemble.json", "reports/figure1.png", "reports/figure7.pdf"]
WALK_MAKES += ["results/table6.csv", "results/table6.md", "runs/plain20/responses.csv"]

# run as written in the repository root (`shell`: this line instead, through bash; with the Slurm profile,
# after cluster.md's export of the site settings); `ok`: the exit statuses that mean it worked
HERE = {
    "resnet-repro estimate reports/figure1.pdf --configfile tests/config/tiny.yaml": {},
    "resnet-repro estimate results/table6.csv --images-per-s resnet20=83341 --images-per-s resnet32=49077 "
    "--images-per-s resnet44=34779 --images-per-s resnet56=26932 --images-per-s resnet110=13364 "
    "--images-per-s resnet1202=1195": {},
    "snakemake --profile slurm -n results/table6.csv": {},
    "snakemake -n results/table6.csv": {},
    "source .venv/bin/activate": {"shell": 'source .venv/bin/activate && test "$VIRTUAL_ENV" -ef .venv'},
    # grep's 1: no such flag on this CPU (lscpu itself must be there)
    "lscpu | grep -o avx512_bf16": {"shell": "command -v lscpu && { lscpu | grep -o avx512_bf16; }", "ok": (0, 1)},
    "python benchmarks/train_throughput.py": {"shell": "python benchmarks/train_throughput.py --help"},
    "bash benchmarks/demo_time.sh": {"shell": "bash -n benchmarks/demo_time.sh"},  # 15 minutes: its syntax
    "bash benchmarks/demo_time.sh --emulate-avx2": {"shell": "bash -n benchmarks/demo_time.sh"},
    "python benchmarks/imagenet_stages.py --tiny --device cpu": {
        "shell": "python benchmarks/imagenet_stages.py --tiny --device cpu --workers 1 --batches 2 --windows 1"
    },
}
# dry-run: Snakemake's -n (the plan, every rule's inputs and the config checked) or make's -n
DRY = {
    "snakemake all": "snakemake -n all",
    "snakemake reports/figure7.pdf": "snakemake -n reports/figure7.pdf",
    "snakemake reports/report.html": "snakemake -n reports/report.html",
    "snakemake all --config preset=demo": "snakemake -n all --config preset=demo",
    "snakemake all --configfile tests/config/tiny.yaml": "snakemake -n all --configfile tests/config/tiny.yaml",
    "snakemake --profile slurm results/table6.csv": "snakemake --profile slurm -n results/table6.csv",
    "make demo": "make -n demo",
    "make test": "make -n test",
    "make test-slurm": "make -n test-slurm",
    "make test-all": "make -n test-all",
    "make mlflow": "make -n mlflow",
    "MLFLOW_PORT=5001 make mlflow": "MLFLOW_PORT=5001 make -n mlflow",
    "MLFLOW_HOST=0.0.0.0 make mlflow-server": "MLFLOW_HOST=0.0.0.0 make -n mlflow-server",
    "srun --gpus=8 make doctor": "make -n doctor",
}
# run by a test of the suite (the same command, or its code path at a smaller size)
TESTS = {
    "resnet-repro estimate all --rates benchmarks/results/rates-h100-doctor.json --markdown": (
        "tests/test_docs.py::test_the_readme_cost_block_is_what_estimate_makes_of_the_committed_rates"
    ),
    "bash benchmarks/gpu_check.sh --tiny --out /tmp/gpu-check": (
        "tests/test_gpu_check.py::test_gpu_check_runs_every_stage_at_small_sizes_on_the_cpu"
    ),
    "snakemake --profile slurm --unlock results/table6.csv": (
        "tests/test_workflow.py::test_same_command_after_sigkill_resumes_the_training"
    ),
    "snakemake --report report.html": "tests/test_workflow.py::test_tiny_run_makes_the_report_and_snakemake_report",
    "srun --gpus=1 resnet-repro estimate all": "tests/training/test_speed.py::test_estimate_measures_the_step",
    "resnet-repro estimate all --configfile tests/config/tiny.yaml": (
        "tests/training/test_speed.py::test_estimate_merges_config_files_in_order_as_snakemake"
    ),
    "srun --gpus=8 resnet-repro doctor": "tests/preflight/test_doctor.py::test_doctor_runs_every_check_on_the_cpu",
    "torchrun --standalone --nproc_per_node=2 --no-python resnet-repro train --model resnet20 --data digits "
    "--max-iters 200 --out /tmp/ddp": "tests/training/test_ddp.py::test_torchrun_trains_stops_on_sigterm_and_resumes_in_one_process",
    "MLFLOW_HOST=0.0.0.0 make mlflow-server": "tests/tracking/test_live.py::test_the_pipeline_logs_to_the_server_with_credentials",
    "export MLFLOW_TRACKING_URI=http://10.1.2.3:5000": (
        "tests/tracking/test_live.py::test_the_pipeline_logs_to_the_server_with_credentials"
    ),
    "python -c \"from mlflow.server.auth.client import AuthServiceClient as A; A('http://10.1.2.3:5000')"
    ".create_user('bob', 'a-password-for-bob')\"": (
        "tests/tracking/test_live.py::test_the_admin_adds_a_person_as_the_docs_say"
    ),
}
# run by CI's script (.ci/run) on a fresh clone
CI = {"bash scripts/install-chromium.sh", "make test", "make test-slurm"}
# another tool's command, shown for the reader: nothing of ours to run
OTHER = {
    "export RESNET_SLURM_PARTITION=gpu RESNET_SLURM_ACCOUNT=myproject": "shell: the site settings SLURM_SITE sets here",
    "export MLFLOW_SERVER_ALLOWED_HOSTS='login1:*,localhost:*'": "shell: MLflow's own setting, read by its server",
    'sinfo -o "%P %l"': "Slurm's: the partitions' time limits",
    'squeue --me -o "%.10i %.9T %.40k"': "Slurm's: test_slurm lists the jobs with squeue",
    "scancel 81234": "Slurm's: test_slurm cancels a training with scancel",
    "rm -rf results/runs/paper/resnet110/seed0": "shell: deletes a run directory to retrain it",
    "ssh -L 5000:127.0.0.1:5000 host": "ssh's: a tunnel to the UI",
}


def test_every_command_in_the_docs_is_exercised_and_every_line_here_is_in_the_docs():
    shown = set(doc_commands())
    covered = set(WALK) | set(HERE) | set(DRY) | set(TESTS) | CI | set(OTHER)
    assert sorted(shown - covered) == [], "a command in the docs that nothing here runs: add it to a table above"
    assert sorted(covered - shown) == [], "a command no longer in the docs: remove it here"


def environment(extra=None):
    """A fresh shell's: the venv on PATH, none of a user's site, tracking or Slurm settings, then `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "RESNET_", "SLURM_"))}
    return dict(env, PATH=f"{BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1", **(extra or {}))


@pytest.mark.parametrize("command", sorted(HERE) + sorted(DRY))
def test_command_runs_here(command):
    how = HERE.get(command, {})
    line = how.get("shell") or DRY.get(command) or command
    r = subprocess.run(
        ["bash", "-c", line],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=environment(SLURM_SITE if "--profile slurm" in line else None),
        timeout=300,
    )
    assert r.returncode in how.get("ok", (0,)), f"{line}: exit {r.returncode}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"


def test_the_walk_through_the_steps_by_hand(tmp_path):
    history = tmp_path / "runs" / "resnet20" / "history.csv"
    for line in WALK:
        before = history.read_text() if "--resume" in line else None
        r = subprocess.run(line, shell=True, cwd=tmp_path, capture_output=True, text=True, env=environment())
        assert r.returncode == 0, f"{line}: exit {r.returncode}\n{r.stderr[-2000:]}"
        if before is not None:  # a finished run resumed: nothing retrained, nothing rewritten
            assert history.read_text() == before
    assert [f for f in WALK_MAKES if not (tmp_path / f).exists()] == []


@pytest.mark.parametrize("command", sorted(TESTS))
def test_the_named_test_exists(command):
    path, name = TESTS[command].split("::")
    assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), re.M), TESTS[command]


def test_ci_runs_its_commands():
    script = (ROOT / ".ci" / "run").read_text().splitlines()
    runs = lambda c: any(re.match(rf"{re.escape(c)}(\s|$)", line) for line in script)  # the whole command
    assert [c for c in CI if not runs(c)] == []
