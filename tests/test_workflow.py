"""The Snakemake DAG end to end on the `tiny` preset (every target, real jobs, real MLflow), and
planning checks on the paper preset."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY_CONFIG

BIN = Path(sys.executable).parent
FIGURES = ["figure1", "figure4", "figure6", "figure7"]
TABLES = ["table2", "table3", "table4", "table5", "table6"]
FIGURE7 = ["plain20", "plain56", "resnet20", "resnet56", "resnet110"]  # the tiny preset's (TINY_CONFIG)
TINY_CLAIM_SEEDS = {"plain20": ["0", "1"]}  # the tiny preset's claim_seeds (TINY_CONFIG)
TINY_RUNS = 22  # every (model, seed) of the tiny preset: its artifacts' 21 and plain20's second seed


def snakemake(workdir, *args, tiny=False, check=True):
    """`snakemake ARGS` on config.yaml, with the tests' preset merged over it where `tiny`."""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    # targets first: --configfile and --config take every word after them
    r = subprocess.run(
        [
            str(BIN / "snakemake"),
            *args,
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            str(workdir),
            "--configfile",
            str(ROOT / "config.yaml"),
            *([str(TINY_CONFIG)] if tiny else []),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=workdir,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}")
    return r


def planned_jobs(workdir, target, preset="paper"):
    out = snakemake(workdir, "-n", target, "--config", f"preset={preset}").stdout
    return dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M))


def planned_trainings(workdir, target):
    out = snakemake(workdir, "-n", "-p", target).stdout
    return sorted(set(re.findall(r"--out results/runs/paper/([\w.-]+/seed\d+) --resume", out)))


def test_dry_run_plans_only_what_a_target_needs(tmp_path):
    assert planned_trainings(tmp_path, "reports/figure7.pdf") == sorted(
        f"{m}/seed0" for m in ["plain20", "plain56", "resnet20", "resnet56", "resnet110"]
    )
    table6 = planned_trainings(tmp_path, "results/table6.csv")
    assert len(table6) == 10 and sum(t.startswith("resnet110/") for t in table6) == 5
    assert "resnet1202/seed0" in table6
    jobs = planned_jobs(tmp_path, "all")
    assert jobs["train_cifar"] == 14 and jobs["train_imagenet"] == 10
    # the paper preset asks no seeds for the claims beyond its own: Figure 7's responses and the tables'
    # evaluations only, ResNet-110's seeds the one seed group
    assert jobs["responses"] == 5 and jobs["evaluate_cifar"] == 10 and jobs["evaluate_imagenet"] == 15
    assert jobs["track_seeds"] == 1
    assert jobs["track_shown"] == 6 and jobs["total"] == 110


CLAIM_NETS = ["plain20", "plain56", "resnet20", "resnet56"]  # the demo's claim_seeds (config.yaml)


def test_demo_plans_three_seeds_of_the_claims_nets(tmp_path):
    """The demo's CIFAR claims rest on 3 seeds of each net they compare: each seed trained, evaluated
    (single view, with its per-image scores), its layer responses measured, tracked, and read by the
    report; figures still draw seed 0; ResNet-110 stays at one seed."""
    r = snakemake(tmp_path, "-n", "-p", "all", "--config", "preset=demo")
    out = r.stdout + r.stderr
    jobs = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M))
    assert jobs["train_cifar"] == 13 and jobs["track_seeds"] == 4  # 4 nets x 3 seeds + ResNet-110
    trainings = set(re.findall(r"--out results/runs/demo/([\w.-]+/seed\d+) --resume", out))
    claims = [f"results/runs/demo/{m}/seed{s}" for m in CLAIM_NETS for s in (0, 1, 2)]
    assert {f"results/runs/demo/{t}" for t in trainings} >= set(claims)
    assert {t for t in trainings if t.startswith("resnet110/")} == {"resnet110/seed0"}
    outputs = set(re.findall(r"^\s+output: (.*)$", out, re.M))
    outputs = {f for line in outputs for f in line.split(", ")}
    for run in claims:
        assert {f"{run}/eval/single/scores-single.npz", f"{run}/responses.csv", f"{run}/mlflow.json"} <= outputs, run
    report = out.split("rule reproduction_report:")[1].split("\n\n")[0]
    inputs = set(re.search(r"^\s+input: (.*)$", report, re.M).group(1).split(", "))
    for run in claims:
        want = [
            "history.csv",
            "mlflow.json",
            "eval/single/metrics.json",
            "eval/single/scores-single.npz",
            "responses.csv",
        ]
        assert {f"{run}/{f}" for f in want} <= inputs, run
    assert {"results/mlflow/demo/shown/claims-single.json", "results/mlflow/demo/shown/claims-responses.json"} <= inputs
    cmd = next(l for l in out.splitlines() if "resnet-repro report " in l)
    runs = cmd.split("--runs ")[1].split(" --")[0].split()
    assert set(claims) <= set(runs) and len(runs) == 19  # the 11 runs of the figures and tables, 8 more seeds
    figures = re.findall(r"resnet-repro figure (figure\d) (.*?) --out", out)
    assert len(figures) == 4 and all(set(re.findall(r"/seed(\d+)", args)) == {"0"} for _, args in figures)
    table6 = next(l for l in out.splitlines() if "resnet-repro table table6 " in l)
    assert all(f"--run results/runs/demo/{m}/seed{s} " in table6 for m in ("resnet20", "resnet56") for s in (0, 1, 2))
    track = next(l for l in out.splitlines() if "resnet-repro track train results/runs/demo/plain56/seed2 " in l)
    assert "--uses report " in track  # a run no figure or table draws: the report's claims read it


def test_rule_plans_the_report_after_every_figure_and_table(tmp_path):
    r = snakemake(tmp_path, "-n", "-p", "results/mlflow/paper/report.json")
    out = r.stdout + r.stderr
    jobs = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M))
    assert jobs["reproduction_report"] == 1 and jobs["figure"] == 4 and jobs["table"] == 5
    assert jobs["train_cifar"] == 14 and jobs["train_imagenet"] == 10
    assert jobs["track_artifact"] == 10  # 4 figures, 5 tables and the report, each in a rule of its own
    # what each table (its view's evaluations) and Figure 7 (layer responses) shows: one job each, not one per run
    assert jobs["track_shown"] == 6 and "track_eval" not in jobs
    cmd = next(l for l in out.splitlines() if "resnet-repro report " in l)
    assert "--preset paper" in cmd and "--pdf reports/report.pdf" in cmd
    assert cmd.count("results/runs/paper/") == 24  # --runs: 14 CIFAR + 10 ImageNet runs
    track = next(l for l in out.splitlines() if "resnet-repro track report reports/report.html" in l)
    assert "reports/report.pdf reports/report.json --name report" in track and track.count("results/runs/paper/") == 24


def test_multi_gpu_trainings_start_under_torchrun(tmp_path):
    """ImageNet trainings (8 GPUs by default) run one DDP process per GPU; CIFAR ones (1 GPU) run plain."""
    out = snakemake(tmp_path, "-n", "-p", "results/table3.csv", "results/table6.csv").stdout
    trains = [l.split("Shell command:")[-1].strip() for l in out.splitlines() if "resnet-repro train --overrides" in l]
    imagenet = [l for l in trains if "results/runs/paper/resnet34" in l or "results/runs/paper/plain34" in l]
    cifar = [l for l in trains if "results/runs/paper/resnet20/" in l]
    assert imagenet and cifar
    assert all(
        l.startswith("torchrun --standalone --nproc_per_node=8 --no-python resnet-repro train") for l in imagenet
    )
    assert all(l.startswith("resnet-repro train") for l in cifar)


def test_config_error_is_one_line_before_any_job(tmp_path):
    r = snakemake(tmp_path, "-n", "all", "--config", "preset=tinyy", check=False)
    assert r.returncode != 0
    errors = [l for l in (r.stdout + r.stderr).splitlines() if "resnet-repro:" in l]
    assert errors == ["resnet-repro: config: preset 'tinyy' is not defined; choose one of paper, demo"]
    assert not (tmp_path / "results").exists()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    snakemake(work, "all", "--cores", "2", tiny=True)
    return work


def test_tiny_run_makes_every_table(tiny_run):
    for name in TABLES:
        csv = tiny_run / "results" / f"{name}.csv"
        df = pd.read_csv(csv)
        assert len(df) > 0
        md = (tiny_run / "results" / f"{name}.md").read_text()
        assert "tiny" in md
    t6 = pd.read_csv(tiny_run / "results" / "table6.csv")
    ours = t6[t6["source"] == "paper"].set_index("model")
    assert set(ours.index) == {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"}
    assert ours["error_mean"].between(0, 100).all()
    assert ours.loc["resnet110", "n_runs"] == 2
    assert (t6[t6["source"] == "literature"]["error_mean"].isna()).all()


def test_tiny_run_makes_every_figure(tiny_run):
    for name in FIGURES:
        pdf = tiny_run / "reports" / f"{name}.pdf"
        assert pdf.read_bytes()[:4] == b"%PDF" and pdf.stat().st_size > 5000
        assert (tiny_run / "reports" / f"{name}.png").stat().st_size > 5000


TINY_EXPERIMENT = "resnet-repro · tiny · ImageFolder 'digits-imagefolder' (20 px crops), digits (8x8)"


def training_runs(client, exp):
    return [r for r in client.search_runs([exp.experiment_id], max_results=1000) if "seed_group" not in r.data.tags]


def test_tiny_run_is_in_mlflow(tiny_run):
    """Every training with its curves, its evaluations (each view the tables show), its data set and
    its model; ResNet-110's seeds under a parent; every figure and table as a reports run."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tiny_run / 'mlflow.db'}")
    train_exp = client.get_experiment_by_name(TINY_EXPERIMENT)  # one experiment per preset and data
    assert train_exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = training_runs(client, train_exp)
    assert len(runs) == TINY_RUNS  # every (model, seed) of the tiny preset, once
    run = next(r for r in runs if r.data.params["model"] == "resnet20")
    history = client.get_metric_history(run.info.run_id, "train_error")
    assert [m.step for m in history] == [3, 6]
    assert run.data.params["preset"] == "tiny"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"history.csv", "spec.yaml"} <= artifacts
    for r in runs:
        model, family = r.data.params["model"], r.data.params["family"]
        assert len(r.inputs.dataset_inputs) == 2 and r.data.tags.get("logged_model_id"), model
        claims = r.data.params["seed"] in TINY_CLAIM_SEEDS.get(model, [])  # a run the claims read (claim_seeds)
        if family == "cifar" and (model.startswith("resnet") or claims):  # Table 6's and the claims' nets
            assert "single_top1_error" in r.data.metrics, (model, sorted(r.data.metrics))
        if family == "imagenet":  # Tables 2-5: 10-crop or multi-scale errors
            assert {"tencrop_top1_error", "multiscale_top1_error"} & set(r.data.metrics), (
                model,
                sorted(r.data.metrics),
            )
        if model in FIGURE7 and (r.data.params["seed"] == "0" or claims):  # Figure 7's layer responses
            assert "responses.csv" in {a.path for a in client.list_artifacts(r.info.run_id)}, model
    (parent,) = [r for r in client.search_runs([train_exp.experiment_id], "tags.seed_group = 'resnet110'")]
    assert "single_top1_error_mean" in parent.data.metrics and "single_top1_error_std" in parent.data.metrics
    assert sum(r.data.tags.get("mlflow.parentRunId") == parent.info.run_id for r in runs) == 2
    (plain20,) = [r for r in client.search_runs([train_exp.experiment_id], "tags.seed_group = 'plain20'")]
    assert "single_top1_error_mean" in plain20.data.metrics  # the claims' seeds of plain-20, grouped too
    assert sum(r.data.tags.get("mlflow.parentRunId") == plain20.info.run_id for r in runs) == 2
    reports = client.search_runs([client.get_experiment_by_name(f"{TINY_EXPERIMENT} · reports").experiment_id])
    assert len(reports) == 10  # 4 figures, 5 tables and the report
    fig7 = next(r for r in reports if r.data.tags.get("artifact", "").startswith("figure7"))
    sources = fig7.data.tags["source_run_ids"].split(",")
    assert len(sources) == 5 and all(client.get_run(s).info.run_id == s for s in sources)


def test_tiny_run_makes_the_report_and_snakemake_report(tiny_run):
    """`all` includes the reproduction report (and its MLflow run); Snakemake's own report explains
    each artifact with the paper's caption (workflow/report/*.rst)."""
    import html

    from mlflow import MlflowClient

    from resnet_repro.report.claims import VERDICTS

    summary = json.loads((tiny_run / "reports" / "report.json").read_text())
    assert summary["preset"] == "tiny" and not summary["comparable_with_paper"]
    # each claim judged on the tiny runs' numbers, saying on what data (digits) and that it is reduced
    tested = [c for c in summary["claims"] if c["verdict"] != "not tested in this run"]
    assert tested and all(c["verdict"] in VERDICTS for c in summary["claims"])
    for c in tested:
        assert c["scope"].endswith("(reduced, not the paper's setting)") and "preset 'tiny'" in c["why"], c
    # the precision policy, with the paper spec's `precision: auto` (bf16 on an AVX512-BF16 CPU, fp32 on
    # AVX2): no verdict is reduced for it, bf16 is named once, and the one flag agrees with every verdict
    assert not any("precision" in r or "bf16" in r for c in summary["claims"] for r in c["reduced"])
    bf16 = any(r["precision"] == "bf16" for r in summary["runs"])
    assert bf16 == any("bf16 autocast" in n for n in summary["protocol"]["notes"])
    assert {r["precision"] for r in summary["runs"]} <= {"bf16", "fp32"}
    assert summary["protocol"]["reduced"][0] == "preset 'tiny' is a reduced preset, not the paper's"
    assert all(c["reduced"] for c in tested) and summary["comparable_with_paper"] is False
    cifar = {c["id"]: c for c in tested}["degradation_cifar"]
    assert cifar["scope"].startswith("on digits (8x8), 6 iterations")
    assert len(summary["runs"]) == TINY_RUNS and all(r["run_id"] for r in summary["runs"])
    assert {str(r["seed"]) for r in summary["runs"] if r["model"] == "plain20"} == {"0", "1"}
    text = html.unescape((tiny_run / "reports" / "report.html").read_text())
    assert "Reduced preset 'tiny': numbers are not comparable with the paper" in text
    assert (tiny_run / "reports" / "report.pdf").read_bytes()[:4] == b"%PDF"
    c = MlflowClient(f"sqlite:///{tiny_run / 'mlflow.db'}")
    exp = c.get_experiment_by_name(f"{TINY_EXPERIMENT} · reports")
    (run,) = c.search_runs([exp.experiment_id], "tags.artifact = 'report'")
    assert len(run.data.tags["source_run_ids"].split(",")) == TINY_RUNS
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == {"report.html", "report.pdf", "report.json"}
    r = snakemake(tiny_run, "all", "--report", str(tiny_run / "smk.html"), tiny=True)
    log = r.stdout + r.stderr
    assert "Adding report.html" in log and all(f"Adding {n}" in log for n in ("figure1.pdf", "table6.csv"))
    page = html.unescape((tiny_run / "smk.html").read_text())
    assert "Classification error on the CIFAR-10 test set" in page  # Table 6's caption
    assert "training error (left) and test error (right) of plain-20 and plain-56" in page  # Figure 1's


def test_workflow_lint_is_clean(tmp_path):
    r = snakemake(tmp_path, "--lint", "--config", "preset=demo")
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


def test_rerun_does_no_work_and_adds_no_runs(tiny_run):
    from mlflow import MlflowClient

    r = snakemake(tiny_run, "all", "--cores", "2", tiny=True)
    assert "Nothing to be done" in r.stdout + r.stderr
    client = MlflowClient(f"sqlite:///{tiny_run / 'mlflow.db'}")
    assert len(training_runs(client, client.get_experiment_by_name(TINY_EXPERIMENT))) == TINY_RUNS


def test_order_only_stamps_make_nothing_stale_and_models_are_protected(tiny_run):
    """A rerun of a data check or of the MLflow set-up (their stamps newer than everything) plans no
    training, tracking, figure or table; a finished model.pt is write-protected."""
    for stamp in ["results/data/tiny/cifar.json", "results/data/tiny/imagenet.json", "results/mlflow/tiny.json"]:
        (tiny_run / stamp).touch()
    r = snakemake(tiny_run, "-n", "all", tiny=True)
    assert "Nothing to be done" in r.stdout + r.stderr, r.stdout[-3000:]
    model = tiny_run / "results/runs/tiny/resnet20/seed0/model.pt"
    assert model.stat().st_mode & 0o222 == 0


SLOW_RUN = "results/runs/tiny/resnet20/seed0"
SLOW_ITERS = 1000


def slow_training(work):
    """The tiny preset with ResNet-20 trained for SLOW_ITERS iterations, checkpointing every 50."""
    extra = work / "slow.yaml"
    extra.write_text(
        yaml.safe_dump(
            {
                "presets": {
                    "tiny": {
                        "model_training": {
                            "resnet20": {
                                "max_iters": SLOW_ITERS,
                                "log_every": 50,
                                "checkpoint_every": 50,
                                "checkpoint_minutes": 0,
                            }
                        }
                    }
                }
            }
        )
    )
    return [f"{SLOW_RUN}/model.pt", "--configfile", str(ROOT / "config.yaml"), str(TINY_CONFIG), str(extra)]


def user_command(work, args, **env_extra):
    """`snakemake ARGS` as a user types it (the configfiles are in ARGS), and its environment."""
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", OMP_NUM_THREADS="1", **env_extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    return [str(BIN / "snakemake"), *args, "-s", str(ROOT / "Snakefile"), "--directory", str(work)], env


def run_user_command(work, *args):
    cmd, env = user_command(work, args)
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def start_and_wait_for_iteration(work, args, iteration, **env_extra):
    """Start Snakemake in its own process group; return it once the training has logged `iteration`."""
    cmd, env = user_command(work, args, **env_extra)
    log = work / "logs/tiny/train/resnet20-seed0.log"
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        done = [int(i) for i in re.findall(rf"\bit (\d+)/{SLOW_ITERS}\b", log.read_text())] if log.exists() else []
        if done and max(done) >= iteration:
            return proc, max(done)
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError(f"the training did not reach iteration {iteration}:\n{proc.communicate()[0][-3000:]}")


def test_same_command_after_sigkill_resumes_the_training(tmp_path):
    """Snakemake and its training killed with SIGKILL (a reboot); then docs/cluster.md's recovery: `snakemake
    --unlock` with the same arguments, then the same command. The training resumes from its last
    checkpoint, and its log of all attempts holds both (Snakemake itself deletes a job's `log:`
    before rerunning it)."""
    args = slow_training(tmp_path)
    proc, seen = start_and_wait_for_iteration(tmp_path, args, 300)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # without the unlock, Snakemake refuses (its lock outlived it): hence docs/cluster.md's order
    r = run_user_command(tmp_path, *args)
    assert r.returncode != 0 and "cannot be locked" in r.stdout + r.stderr, r.stdout[-3000:] + r.stderr[-3000:]
    r = run_user_command(tmp_path, "--unlock", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_user_command(tmp_path, *args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = (tmp_path / "logs/tiny/train/resnet20-seed0.attempts.log").read_text()
    assert len(re.findall(r"^=== resnet-repro train: attempt 1, no Slurm job on ", log, re.M)) == 2, log[-3000:]
    first, second = log.split("=== resnet-repro train: attempt 1")[1:]
    assert f"it {seen}/{SLOW_ITERS}" in first
    m = re.search(r"resumed from \S+checkpoint\.pt at iteration (\d+)", second)
    assert m and seen - 50 <= int(m.group(1)) <= seen + 50, second[:2000]
    assert f"it 50/{SLOW_ITERS}" not in second  # not started again from scratch
    history = pd.read_csv(tmp_path / SLOW_RUN / "history.csv")
    assert list(history["iteration"]) == list(range(50, SLOW_ITERS + 1, 50))
    assert not (tmp_path / SLOW_RUN / "train.lock").exists()


def test_early_warning_signal_reaches_the_trainer_through_snakemake(tmp_path):
    """Slurm's early warning (SIGUSR1, which slurmstepd sends to every process of the job step) sent to
    Snakemake's whole process group, as inside a Slurm job (SLURM_JOB_ID set): Snakemake and the shell
    survive it, the trainer checkpoints and exits with status 3, and Snakemake reports a failed job
    (which a cluster profile retries) instead of dying of the signal."""
    args = slow_training(tmp_path)
    proc, seen = start_and_wait_for_iteration(tmp_path, args, 200, SLURM_JOB_ID="4242")
    os.killpg(proc.pid, signal.SIGUSR1)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out[-3000:]  # a failed job, not -SIGUSR1
    log = (tmp_path / "logs/tiny/train/resnet20-seed0.log").read_text()
    assert "=== resnet-repro train: attempt 1, Slurm job 4242 on " in log
    m = re.search(r"stopped at iteration (\d+) by signal SIGUSR1; checkpoint written", log)
    assert m and int(m.group(1)) >= seen, log[-2000:]
    from resnet_repro.files import load_torch

    assert load_torch(tmp_path / SLOW_RUN / "checkpoint.pt")["iteration"] == int(m.group(1))
