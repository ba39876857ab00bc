"""MLflow tracking on synthetic run directories and a SQLite store in a temporary directory."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import log_one_data_set_at_once, tag_one_run_at_once

from resnet_repro import digest
from resnet_repro.cli import main
from resnet_repro.files import write_json, write_text
from resnet_repro.models import ResNet, parse_model_name
from resnet_repro.spec.build import build_spec
from resnet_repro.tracking import store as mlflow_store
from resnet_repro.training.history import history_csv

pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

HISTORY_KEYS = ["train_error", "test_error", "train_loss", "test_loss", "lr"]


def make_run(path, seed=0, rows=4, model="resnet20"):
    """A finished-looking training directory: spec.yaml, history.csv, metrics.json, model.pt."""
    path = Path(path)
    spec = build_spec(
        None,
        [
            {
                "model": model,
                "data": {"kind": "digits"},
                "seed": seed,
                "max_iters": 10 * rows,
                "schedule": {"milestones": [5 * rows]},
            }
        ],
    )
    write_text(path / "spec.yaml", yaml.safe_dump(spec, sort_keys=False))
    history = [
        {
            "iteration": 10 * (i + 1),
            "epoch": i,
            "lr": 0.1 if i < rows / 2 else 0.01,
            "train_loss": 2.0 - 0.01 * i,
            "train_error": 90.0 - 0.1 * i,
            "test_loss": 2.1 - 0.01 * i,
            "test_error": 91.0 - 0.1 * i,
            "images_per_s": 100.0 + i,
            "elapsed_s": 1.5 * (i + 1),
        }
        for i in range(rows)
    ]
    write_text(path / "history.csv", history_csv(history))
    write_json(
        path / "metrics.json",
        {
            "model": model,
            "images_per_s": 101.0,
            "s_per_1k_iters": 1.27,
            "elapsed_s": 1.5 * rows,
            "device": "cpu",
            "peak_memory_mb": 12.5,
        },
    )
    torch.manual_seed(seed)
    torch.save(
        {
            "spec": spec,
            "model": ResNet(parse_model_name(model), 10).state_dict(),
            "num_classes": 10,
            "mean": torch.zeros(3, 8, 8),
            "iteration": 10 * rows,
        },
        path / "model.pt",
    )
    return path, history


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One store for the module (creating the schema takes seconds); tests use distinct run dirs."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    assert main(["track", "setup", "--tracking-uri", uri, "--out", str(root / "setup.json")]) == 0
    return uri


def runs_for(uri, run_dir):
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("resnet-repro")
    return c.search_runs([exp.experiment_id], f"tags.run_dir = '{mlflow_store.run_dir_tag(run_dir)}'")


def test_setup_is_idempotent_with_absolute_artifact_location(store, tmp_path):
    root = Path(mlflow_store.sqlite_path(store)).parent
    first = json.loads((root / "setup.json").read_text())
    assert main(["track", "setup", "--tracking-uri", store, "--out", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert first["experiments"] == again["experiments"]
    c = MlflowClient(store)
    for name in ("resnet-repro", "resnet-repro · reports"):
        loc = c.get_experiment_by_name(name).artifact_location
        assert loc == (root / "mlartifacts" / name).as_uri()


def test_train_logs_params_tags_metrics_artifacts(store, tmp_path):
    run_dir, history = make_run(tmp_path / "resnet20" / "seed3", seed=3, rows=6)
    write_json(
        run_dir / "eval" / "single" / "metrics.json",
        {"views": {"single": {"top1_error": 12.5, "top5_error": 1.5, "n": 100}}, "precision": "fp32"},
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    write_json(run_dir / "metrics.json", {**metrics, "precision": "bf16", "eval_precision": "fp32"})
    assert (
        main(
            [
                "track",
                "train",
                str(run_dir),
                "--preset",
                "demo",
                "--uses",
                "figure6,table6",
                "--config-hash",
                "abc123",
                "--tracking-uri",
                store,
            ]
        )
        == 0
    )
    info = json.loads((run_dir / "mlflow.json").read_text())
    assert set(info) == {"run_id", "experiment_id", "tracking_uri"} and info["tracking_uri"] == store
    c = MlflowClient(store)
    run = c.get_run(info["run_id"])
    assert run.info.run_name == "resnet20 · digits · seed 3"
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert p["model"] == "resnet20" and p["family"] == "cifar" and p["depth"] == "20"
    assert p["shortcut"] == "A" and p["residual"] == "True" and p["dataset"] == "digits"
    assert p["seed"] == "3" and p["schedule_kind"] == "multistep" and p["schedule_milestones"] == "30"
    assert p["lr"] == "0.1" and p["batch_size"] == "128" and p["max_iters"] == "60"
    assert p["preset"] == "demo" and p["config_hash"] == "abc123" and p["git_commit"]
    t = run.data.tags
    assert t["model"] == "resnet20" and t["dataset"] == "digits" and t["preset"] == "demo"
    assert t["uses"] == "figure6,table6" and t["run_dir"] == mlflow_store.run_dir_tag(run_dir)
    assert t["checkpoint_sha256"] == digest.sha256(run_dir / "model.pt") and t["git_commit"] == p["git_commit"]
    # the arithmetic the training and its evaluation actually used
    assert t["precision"] == "bf16" and t["eval_precision"] == "fp32" and t["single_precision"] == "fp32"
    for key in HISTORY_KEYS:
        points = sorted(c.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [m.step for m in points] == [row["iteration"] for row in history]
        assert [m.value for m in points] == pytest.approx([row[key] for row in history])
    m = run.data.metrics
    assert m["images_per_s"] == 101.0 and m["s_per_1k_iters"] == 1.27 and m["elapsed_s"] == 9.0
    assert m["peak_memory_mb"] == 12.5
    assert m["single_top1_error"] == 12.5 and m["single_top5_error"] == 1.5
    names = {f.path for f in c.list_artifacts(run.info.run_id)}
    assert {"model.pt", "history.csv", "spec.yaml", "metrics.json", "eval"} <= names


def test_rerun_lost_json_and_changed_checkpoint(store, tmp_path, capsys):
    run_dir, _ = make_run(tmp_path / "run")
    args = ["track", "train", str(run_dir), "--preset", "demo", "--tracking-uri", store]
    assert main(args) == 0
    first = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    MlflowClient(store).set_tag(first, "git_commit", "older-commit")  # as if tracked by older code
    assert main(args) == 0
    assert "nothing to do" in capsys.readouterr().err
    assert MlflowClient(store).get_run(first).data.tags["git_commit"] == "older-commit"  # provenance kept
    (run_dir / "mlflow.json").unlink()  # lost: found again by its tags, not duplicated
    assert main(args) == 0
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == first
    assert len(runs_for(store, run_dir)) == 1
    torch.save({"w": torch.ones(4)}, run_dir / "model.pt")  # retrained: a new run
    assert main(args) == 0
    second = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    assert second != first and len(runs_for(store, run_dir)) == 2


def test_eval_added_later_idempotently(store, tmp_path, capsys):
    run_dir, _ = make_run(tmp_path / "run")
    assert main(["track", "train", str(run_dir), "--preset", "demo", "--tracking-uri", store]) == 0
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    write_json(
        run_dir / "eval" / "center" / "metrics.json",
        {"views": {"center": {"top1_error": 30.0, "top5_error": 10.0, "n": 50}}},
    )
    (run_dir / "responses.csv").write_text("model,layer,module,std\nresnet20,1,conv,0.5\n")
    assert main(["track", "eval", str(run_dir), "--tracking-uri", store]) == 0
    assert main(["track", "eval", str(run_dir), "--tracking-uri", store]) == 0
    assert "already logged" in capsys.readouterr().out
    c = MlflowClient(store)
    assert c.get_run(run_id).data.metrics["center_top1_error"] == 30.0
    assert len(c.get_metric_history(run_id, "center_top5_error")) == 1
    assert {"responses.csv", "eval"} <= {f.path for f in c.list_artifacts(run_id)}


def test_train_run_shows_data_model_user_and_source(store, tmp_path, monkeypatch):
    """What the MLflow UI shows of a training: its data set as inputs (training and test split, with
    sizes), the final model as a LoggedModel that loads and predicts, the user and the source."""
    import getpass

    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    run_dir, _ = make_run(tmp_path / "resnet20" / "seed0")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    write_json(run_dir / "metrics.json", {**metrics, "train_images": 1347, "test_images": 450, "test_split": "test"})
    assert (
        main(
            [
                "track",
                "train",
                str(run_dir),
                "--preset",
                "demo",
                "--tracking-uri",
                store,
                "--source",
                "snakemake rule train_cifar",
            ]
        )
        == 0
    )
    c = MlflowClient(store)
    run = c.get_run(json.loads((run_dir / "mlflow.json").read_text())["run_id"])
    inputs = {i.tags[0].value: i.dataset for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"training", "evaluation"}
    assert (
        inputs["training"].name == "digits (8x8) · train" and json.loads(inputs["training"].profile)["images"] == 1347
    )
    assert (
        inputs["evaluation"].name == "digits (8x8) · test" and json.loads(inputs["evaluation"].profile)["images"] == 450
    )
    assert "archive.ics.uci.edu" in inputs["training"].source and inputs["training"].digest
    t = run.data.tags
    assert t["mlflow.user"] == getpass.getuser() and t["mlflow.source.name"] == "snakemake rule train_cifar"
    model = c.get_logged_model(t["logged_model_id"])
    assert model.source_run_id == run.info.run_id and model.params["model"] == "resnet20"
    assert os.environ.get("MLFLOW_TRACKING_URI") == before  # logging the model left the process's URI alone
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    net = mlflow.pytorch.load_model(f"models:/{t['logged_model_id']}")
    assert net(torch.zeros(3, 3, 8, 8)).shape == (3, 10)
    # the model's code is the whole package (pickled as resnet_repro.models.*), whatever module logs it
    code = Path(mlflow.artifacts.download_artifacts(f"models:/{t['logged_model_id']}", dst_path=str(tmp_path / "m")))
    assert (code / "code" / "resnet_repro" / "models.py").is_file()
    assert (code / "code" / "resnet_repro" / "paper" / "names.py").is_file()
    exp = c.get_experiment(run.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # opens on the runs table
    # completing the run again adds nothing (no second model, no second inputs)
    assert main(["track", "train", str(run_dir), "--preset", "demo", "--tracking-uri", store]) == 0
    again = c.get_run(run.info.run_id)
    assert again.data.tags["logged_model_id"] == t["logged_model_id"] and len(again.inputs.dataset_inputs) == 2


def test_one_view_at_a_time_with_a_stamp(store, tmp_path):
    run_dir, _ = make_run(tmp_path / "run")
    assert main(["track", "train", str(run_dir), "--preset", "demo", "--tracking-uri", store]) == 0
    for view, err in (("center", 30.0), ("tencrop", 28.0)):
        write_json(run_dir / "eval" / view / "metrics.json", {"views": {view: {"top1_error": err, "top5_error": 9.0}}})
    stamp = tmp_path / "center.json"
    assert main(["track", "eval", str(run_dir), "--view", "center", "--tracking-uri", store, "--out", str(stamp)]) == 0
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    metrics = MlflowClient(store).get_run(run_id).data.metrics
    assert metrics["center_top1_error"] == 30.0 and "tencrop_top1_error" not in metrics
    assert json.loads(stamp.read_text()) == {"runs": {str(run_dir): run_id}, "views": ["center"], "responses": False}
    assert main(["track", "eval", str(run_dir), "--view", "multiscale", "--tracking-uri", store]) == 2
    assert main(["track", "eval", str(run_dir), "--responses", "--tracking-uri", store]) == 2  # no responses.csv


def test_one_job_logs_the_view_of_several_runs_or_none_of_them(store, tmp_path):
    """What one table shows, in one `track eval` of all its runs; a run lacking its evaluation (or not yet
    tracked) stops the job before anything is logged for the others."""
    runs = []
    for i, err in enumerate((30.0, 20.0)):
        run_dir, _ = make_run(tmp_path / f"run{i}")
        assert main(["track", "train", str(run_dir), "--preset", "demo", "--tracking-uri", store]) == 0
        write_json(
            run_dir / "eval" / "tencrop" / "metrics.json",
            {"views": {"tencrop": {"top1_error": err, "top5_error": 9.0}}},
        )
        runs.append(run_dir)
    late, _ = make_run(tmp_path / "late")  # trained, not evaluated
    assert main(["track", "train", str(late), "--preset", "demo", "--tracking-uri", store]) == 0
    args = ["--view", "tencrop", "--tracking-uri", store]
    assert main(["track", "eval", *map(str, runs), str(late), *args]) == 2
    ids = [json.loads((r / "mlflow.json").read_text())["run_id"] for r in runs]
    assert all("tencrop_top1_error" not in MlflowClient(store).get_run(i).data.metrics for i in ids)
    stamp = tmp_path / "table4.json"
    assert main(["track", "eval", *map(str, runs), *args, "--out", str(stamp)]) == 0
    assert [MlflowClient(store).get_run(i).data.metrics["tencrop_top1_error"] for i in ids] == [30.0, 20.0]
    assert json.loads(stamp.read_text())["runs"] == {str(r): i for r, i in zip(runs, ids)}


def test_seeds_grouped_under_a_parent_with_best_mean_std(store, tmp_path):
    import statistics

    runs = []
    for seed, err in ((0, 6.4), (1, 6.9), (2, 6.6)):
        run_dir, _ = make_run(tmp_path / "resnet110" / f"seed{seed}", seed=seed, model="resnet110")
        write_json(
            run_dir / "eval" / "single" / "metrics.json", {"views": {"single": {"top1_error": err, "top5_error": 0.5}}}
        )
        assert main(["track", "train", str(run_dir), "--preset", "demo", "--tracking-uri", store]) == 0
        runs.append(run_dir)
    args = [
        "track",
        "seeds",
        *map(str, runs),
        "--model",
        "resnet110",
        "--preset",
        "demo",
        "--tracking-uri",
        store,
        "--out",
        str(tmp_path / "seeds.json"),
    ]
    assert main(args) == 0
    parent = json.loads((tmp_path / "seeds.json").read_text())["run_id"]
    c = MlflowClient(store)
    m = c.get_run(parent).data.metrics
    assert m["single_top1_error_best"] == 6.4 and m["single_top1_error_mean"] == pytest.approx(6.6333, abs=1e-3)
    assert m["single_top1_error_std"] == pytest.approx(statistics.stdev([6.4, 6.9, 6.6]))
    for r in runs:
        child = json.loads((r / "mlflow.json").read_text())["run_id"]
        assert c.get_run(child).data.tags["mlflow.parentRunId"] == parent
    assert main(args) == 0 and json.loads((tmp_path / "seeds.json").read_text())["run_id"] == parent  # idempotent


def test_report_links_both_ways_and_is_idempotent(store, tmp_path):
    sources = [make_run(tmp_path / f"seed{k}", seed=k)[0] for k in range(2)]
    for s in sources:
        assert main(["track", "train", str(s), "--preset", "demo", "--tracking-uri", store]) == 0
    ids = [json.loads((s / "mlflow.json").read_text())["run_id"] for s in sources]
    fig, csv_file = tmp_path / "figure6.pdf", tmp_path / "figure6.csv"
    fig.write_bytes(b"%PDF-1.4 fake")
    csv_file.write_text("a,b\n1,2\n")
    args = [
        "track",
        "report",
        str(fig),
        str(csv_file),
        "--name",
        "figure6",
        "--preset",
        "demo",
        "--sources",
        *map(str, sources),
        "--tracking-uri",
        store,
        "--out",
        str(tmp_path / "stamp.json"),
    ]
    assert main(args) == 0
    stamp = json.loads((tmp_path / "stamp.json").read_text())
    c = MlflowClient(store)
    report = c.get_run(stamp["run_id"])
    assert report.info.run_name == "figure6 · demo · digits (8x8)"  # names the data the runs used
    assert report.data.tags["dataset"] == "digits (8x8)"
    assert report.data.tags["source_run_ids"] == ",".join(ids)
    assert report.data.tags["artifact"] == "figure6" and report.data.tags["preset"] == "demo"
    assert "git_commit" in report.data.tags
    assert {f.path for f in c.list_artifacts(report.info.run_id)} == {"figure6.pdf", "figure6.csv"}
    for i in ids:
        assert c.get_run(i).data.tags["used_by_figure6"] == report.info.run_id
    exp = c.get_experiment_by_name("resnet-repro · reports").experiment_id
    count = len(c.search_runs([exp], "tags.artifact = 'figure6'"))
    assert main(args) == 0
    assert json.loads((tmp_path / "stamp.json").read_text())["run_id"] == report.info.run_id
    assert len(c.search_runs([exp], "tags.artifact = 'figure6'")) == count
    fig.write_bytes(b"%PDF-1.4 changed")
    assert main(args) == 0
    assert len(c.search_runs([exp], "tags.artifact = 'figure6'")) == count + 1


def test_concurrent_jobs_lose_nothing(store, tmp_path):
    """4 processes log at once to one SQLite store: every run and every metric point arrives."""
    rows = 250  # 1250 history points: more than one log_batch each
    dirs = [make_run(tmp_path / f"seed{k}", seed=k, rows=rows)[0] for k in range(4)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "resnet_repro",
                "track",
                "train",
                str(d),
                "--preset",
                "demo",
                "--tracking-uri",
                store,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for d in dirs
    ]
    for p in procs:
        out, err = p.communicate(timeout=100)
        assert p.returncode == 0, err
    c = MlflowClient(store)
    for d in dirs:
        found = runs_for(store, d)
        assert len(found) == 1
        run_id = json.loads((d / "mlflow.json").read_text())["run_id"]
        assert found[0].info.run_id == run_id
        for key in HISTORY_KEYS:
            assert len(c.get_metric_history(run_id, key)) == rows


def test_cli_errors_are_one_line(store, tmp_path):
    def run(*args, env=None):
        return subprocess.run(
            [sys.executable, "-m", "resnet_repro", "track", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env={**os.environ, **(env or {})},
        )

    r = run("train", str(tmp_path / "missing"), "--preset", "demo", "--tracking-uri", store)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing" in r.stderr
    run_dir, _ = make_run(tmp_path / "run")
    r = run("train", str(run_dir), "--preset", "demo", env={"MLFLOW_TRACKING_URI": ""})  # default: ./mlflow.db
    assert r.returncode == 2 and "track setup" in r.stderr and r.stderr.count("\n") == 1
    assert not (tmp_path / "mlflow.db").exists()
    (tmp_path / "fig.pdf").write_bytes(b"x")
    r = run(
        "report", "fig.pdf", "--name", "figure6", "--preset", "demo", "--sources", str(run_dir), "--tracking-uri", store
    )
    assert r.returncode == 2 and "mlflow.json" in r.stderr and r.stderr.count("\n") == 1


def test_retry_outlasts_locked_database(monkeypatch):
    import sqlite3

    from mlflow.exceptions import MlflowException

    monkeypatch.setattr(mlflow_store.time, "sleep", lambda s: None)
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:  # as MLflow reports it: the sqlite3 error wrapped in an MlflowException
            try:
                raise sqlite3.OperationalError("database is locked")
            except sqlite3.OperationalError as e:
                raise MlflowException("(sqlite3.OperationalError) database is locked") from e
        return "ok"

    assert mlflow_store.retry(flaky) == "ok" and len(calls) == 3
    with pytest.raises(mlflow_store.ReproError, match="stayed busy after 10 attempts"):
        mlflow_store.retry(lambda: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked")))
    with pytest.raises(ValueError):  # other errors are not retried
        mlflow_store.retry(lambda: (_ for _ in ()).throw(ValueError("no")))


def test_jobs_logging_one_data_set_at_once_share_it(tmp_path):
    """Trainings that finish together log the same data set at once (CI saw a UNIQUE constraint error
    from this race, which failed 4 of 4 trials before the fix): every run gets its inputs, and the store
    holds each split once. (test_live runs the same race through a tracking server.)"""
    for trial in range(3):
        uri = f"sqlite:///{tmp_path / f'race{trial}.db'}"
        mlflow_store.client(uri, create=True)
        log_one_data_set_at_once(uri)


def test_jobs_setting_one_tag_at_once_all_succeed(tmp_path):
    """Two `track eval` jobs of tables that share a training set the same tags of its run at once (CI saw
    "UNIQUE constraint failed: tags.key, tags.run_uuid" from this race in the tiny workflow; the race
    failed 4 of 4 trials before the fix)."""
    for trial in range(3):
        uri = f"sqlite:///{tmp_path / f'tags{trial}.db'}"
        mlflow_store.client(uri, create=True)
        tag_one_run_at_once(uri)


def test_only_a_lookup_then_insert_conflict_is_retried_besides_a_locked_store():
    races = (
        "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, datasets.name",
        "(sqlite3.IntegrityError) UNIQUE constraint failed: tags.key, tags.run_uuid",
        "(sqlite3.IntegrityError) UNIQUE constraint failed: params.key, params.run_uuid",
        'duplicate key value violates unique constraint "tag_pk"',
        'duplicate key value violates unique constraint "dataset_pk" (table datasets)',
        "(pymysql.err.IntegrityError) (1062, \"Duplicate entry 'a-b' for key 'input_tags.PRIMARY'\")",
    )
    assert all(mlflow_store.is_upsert_race(Exception(text)) for text in races)
    assert not mlflow_store.is_upsert_race(Exception("UNIQUE constraint failed: runs.run_uuid"))
    assert not mlflow_store.is_upsert_race(Exception("UNIQUE constraint failed: experiments.name"))
    assert not mlflow_store.is_upsert_race(Exception("RESOURCE_DOES_NOT_EXIST: dataset"))
