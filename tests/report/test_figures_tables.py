"""Tests for resnet_repro.report.figures and resnet_repro.report.tables on synthetic run directories written by hand
(history.csv, spec.yaml, eval/<view>/metrics.json, responses.csv): no training here."""

import json
import math
import statistics
import subprocess
import sys

import pandas as pd
import pytest
import yaml

from resnet_repro.cli import main
from resnet_repro.errors import ReproError
from resnet_repro.report.figures import _response_columns, _responses, draw_figure, responses_note
from resnet_repro.report.tables import make_table, write_table

PRESET = "demo"


def history(final_train, final_test, iters, milestones):
    """Errors falling from ~90% towards their final values, with drops at the lr milestones."""
    rows = []
    for k in range(1, 41):
        it = iters * k // 40
        drop = 0.5 ** sum(it >= m for m in milestones)
        decay = math.exp(-6 * it / iters)
        train = final_train + (90 - final_train) * decay + 4 * drop * (1 - decay) * (1 - it / iters)
        test = final_test + (90 - final_test) * decay + 5 * drop * (1 - decay) * (1 - it / iters) + 0.3 * (k % 3)
        rows.append(
            f"{it},{it / 390:.3f},0.1,{train / 40:.4f},{train:.3f},{test / 40:.4f},{test:.3f},1000.0,{it / 10:.1f}"
        )
    return (
        "iteration,epoch,lr,train_loss,train_error,test_loss,test_error,images_per_s,elapsed_s\n"
        + "\n".join(rows)
        + "\n"
    )


def make_run(root, model, seed, views=None, final=(5.0, 8.0), responses=None, kind=None, recorded=None):
    """results/runs/<preset>/<model>/seed<k>/ with spec.yaml, history.csv, eval/<view>/metrics.json
    (recorded: {view: extra keys of its entry, e.g. scales, flips, mean})."""
    run = root / "results" / "runs" / PRESET / model / f"seed{seed}"
    run.mkdir(parents=True)
    imagenet = kind == "imagenet"
    spec = {"model": model, "seed": seed, "data": {"kind": "imagefolder" if imagenet else "digits"}, "max_iters": 6000}
    (run / "spec.yaml").write_text(yaml.safe_dump(spec))
    (run / "history.csv").write_text(history(*final, 6000, [3000, 4500]))
    for view, (top1, top5) in (views or {}).items():
        (run / "eval" / view).mkdir(parents=True)
        m = {
            "model": model,
            "iteration": 6000,
            "split": "val" if imagenet else "test",
            "views": {view: {"top1_error": top1, "top5_error": top5, "n": 1000, **(recorded or {}).get(view, {})}},
        }
        (run / "eval" / view / "metrics.json").write_text(json.dumps(m))
    if responses:
        lines = [f"{model},{i + 1},layer{i}.bn,{s}" for i, s in enumerate(responses)]
        (run / "responses.csv").write_text("model,layer,module,std\n" + "\n".join(lines) + "\n")
    return run


def cifar_runs(tmp_path):
    """CIFAR runs: plain20/56, resnet20/56, resnet110 x3 seeds, resnet1202; with responses for Fig. 7."""
    runs = {}
    for model, final, depth in (
        ("plain20", (6, 9), 20),
        ("plain56", (10, 13), 56),
        ("resnet20", (4, 8.5), 20),
        ("resnet56", (2, 7), 56),
        ("resnet1202", (0.1, 8), 1202),
    ):
        resp = [(2.0 if model.startswith("plain") else 1.0) * (1 + 0.3 * math.sin(i)) for i in range(depth - 2)]
        runs[model] = make_run(tmp_path, model, 0, {"single": (final[1], 30.0)}, final, resp if depth <= 110 else None)
    runs["resnet110"] = [
        make_run(tmp_path, "resnet110", s, {"single": (e, 20.0)}, (1, e), [0.8] * 108 if s == 0 else None)
        for s, e in ((0, 6.5), (1, 6.9), (2, 7.4))
    ]
    return runs


def imagenet_runs(tmp_path):
    runs = {}
    for model, t, m in (
        ("plain18", (28.0, 9.8), (27.0, 9.0)),
        ("plain34", (29.0, 10.5), (28.0, 9.9)),
        ("resnet18-A", (27.5, 9.1), (26.0, 8.2)),
        ("resnet34-A", (25.5, 8.0), (24.0, 7.1)),
        ("resnet34", (24.8, 7.6), (23.0, 6.9)),
    ):
        runs[model] = make_run(
            tmp_path, model, 0, {"tencrop": t, "multiscale": m, "center": t}, (t[0] - 5, t[0] + 2), kind="imagenet"
        )
    return runs


@pytest.fixture
def cifar(tmp_path):
    return cifar_runs(tmp_path)


@pytest.fixture
def imagenet(tmp_path):
    return imagenet_runs(tmp_path)


def row(df, model):
    r = df[df["model"] == model]
    assert len(r) == 1, f"{model}: {len(r)} rows"
    return r.iloc[0]


def test_table6(cifar, tmp_path):
    runs = [cifar["resnet20"], cifar["plain20"], *cifar["resnet110"]]
    df = make_table("table6", runs)
    paper = df[df["source"] == "paper"]
    assert list(paper["model"]) == ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"]
    lit = df[df["source"] == "literature"]
    assert list(lit["model"]) == ["Maxout", "NIN", "DSN", "FitNet", "Highway", "Highway"]
    for col in ("params_m", "error_best", "error_mean", "error_std", "diff", "split"):
        assert lit[col].isna().all(), col
    assert (lit["n_runs"] == 0).all()

    errs = [6.5, 6.9, 7.4]  # resnet110 seeds 0, 1, 2
    r = row(df, "resnet110")
    assert r["error_best"] == pytest.approx(min(errs))
    assert r["error_mean"] == pytest.approx(statistics.mean(errs))
    assert r["error_std"] == pytest.approx(statistics.stdev(errs))  # sample std, as documented
    assert r["diff"] == pytest.approx(statistics.mean(errs) - 6.61)  # vs the paper's mean, not its best (6.43)
    assert (r["error_paper"], r["mean_paper"], r["std_paper"]) == (6.43, 6.61, 0.16)
    assert (r["n_runs"], r["seeds"], r["split"], r["layers"]) == (3, "0,1,2", "test", 110)
    assert r["params_m"] == pytest.approx(1.7, abs=0.05)

    r = row(df, "resnet20")
    assert (r["error_mean"], r["error_best"], r["n_runs"]) == (8.5, 8.5, 1)
    assert pd.isna(r["error_std"])  # one run: no std
    assert r["diff"] == pytest.approx(8.5 - 8.75)
    assert r["params_m"] == pytest.approx(0.27, abs=0.01)
    assert row(df, "resnet32")[["error_mean", "params_m", "diff"]].isna().all()  # no run: empty
    r = row(df, "plain20")  # ours, not in the paper's table
    assert r["source"] == "ours" and pd.isna(r["error_paper"]) and r["error_mean"] == 9 and r["layers"] == 20

    csv, md = write_table(df, "table6", tmp_path / "results" / "table6.csv", PRESET)
    back = pd.read_csv(csv)
    assert list(back.columns) == list(df.columns) and len(back) == len(df) == 13
    text = md.read_text()
    assert f"`{PRESET}`" in text and "not comparable" in text and "ddof=1" in text and "6.61" in text
    assert "| resnet110 | paper | 110 |" in text


def test_tables_imagenet(imagenet):
    runs = list(imagenet.values())
    t2 = make_table("table2", runs, preset="paper")
    assert list(t2["model"][:4]) == ["plain18", "plain34", "resnet18-A", "resnet34-A"]  # the paper's use option A
    assert row(t2, "resnet34-A")["top1"] == 25.5 and row(t2, "resnet34-A")["top1_diff"] == pytest.approx(25.5 - 25.03)
    assert row(t2, "plain18")["top1_diff"] == pytest.approx(28.0 - 27.94)
    assert row(t2, "resnet34")["source"] == "ours"  # a B run is not the paper's Table 2 ResNet-34

    t3 = make_table("table3", runs)
    assert row(t3, "resnet34")["top5"] == 7.6  # option B, the paper's 'resnet34, shortcut: B' row
    assert row(t3, "resnet34")["top5_diff"] == pytest.approx(7.6 - 7.46)
    assert row(t3, "resnet34-A")["top1_paper"] == 25.03
    assert pd.isna(row(t3, "resnet34-C")["top1"]) and row(t3, "resnet34-C")["n_runs"] == 0
    assert row(t3, "GoogLeNet")["source"] == "literature" and pd.isna(row(t3, "GoogLeNet")["top1_paper"])
    assert row(t3, "resnet18-A")["source"] == "ours"

    t4 = make_table("table4", runs)
    assert row(t4, "resnet34")["top1"] == 23.0  # multi-scale, not 10-crop
    assert row(t4, "resnet34")["top5_diff"] == pytest.approx(6.9 - 5.71)
    assert row(t4, "VGG (ILSVRC'14)")["paper_split"] == "test"

    with pytest.raises(ReproError, match="not a imagenet model"):
        make_table("table2", [runs[0], make_run(runs[0].parents[3].parent, "resnet20", 0, {"single": (9, 1)})])


def test_table5(imagenet, tmp_path):
    members = {
        str(imagenet["resnet34"] / "eval/tencrop/scores-tencrop.npz"): {
            "top1_error": 24.8,
            "top5_error": 7.6,
            "n": 1000,
        },
        str(imagenet["resnet34-A"] / "eval/tencrop/scores-tencrop.npz"): {
            "top1_error": 25.5,
            "top5_error": 8.0,
            "n": 1000,
        },
    }
    ens = tmp_path / "results" / "ensemble.json"
    ens.write_text(json.dumps({"ensemble": {"top1_error": 23.9, "top5_error": 7.1, "n": 1000}, "members": members}))
    df = make_table("table5", [imagenet["resnet34"], imagenet["resnet34-A"]], ensemble=ens, preset=PRESET)
    r = row(df, "ResNet (ILSVRC'15)")
    assert (r["top5"], r["n_runs"], r["split"], r["paper_split"]) == (7.1, 2, "val", "test")
    assert r["top5_diff"] == pytest.approx(7.1 - 3.57)
    m = df[df["source"] == "ours (ensemble member)"]
    assert sorted(m["model"]) == ["resnet34", "resnet34-A"] and sorted(m["top5"]) == [7.6, 8.0]
    assert (df[df["source"] == "literature"]["top5"].isna()).all()
    _, md = write_table(df, "table5", tmp_path / "results" / "table5.csv", PRESET)
    text = md.read_text()
    assert "**test** set" in text and "gain +0.50" in text

    with pytest.raises(ReproError, match="needs --ensemble"):
        make_table("table5", [])
    ens.write_text('{"ensemble": {}}')
    with pytest.raises(ReproError, match="ensemble.json is malformed"):
        make_table("table5", [], ensemble=ens)


def test_notes_say_which_views_were_averaged(tmp_path):
    """Tables 2-5 say which test views our numbers averaged (scales, mirrors, crops, mean), from each
    evaluation's metrics.json: never typed in, and 'not recorded' where an older evaluation left a key out."""
    ms = lambda flips: {
        "multiscale": {"scales": [200, 300], "flips": flips, "mean": "per-channel"},
        "tencrop": {"flips": flips},
    }
    runs = [
        make_run(
            tmp_path,
            "resnet34",
            0,
            {"multiscale": (23.0, 6.9), "tencrop": (24.0, 7.5)},
            kind="imagenet",
            recorded=ms(False),
        ),
        make_run(
            tmp_path,
            "resnet34",
            1,
            {"multiscale": (23.2, 7.0), "tencrop": (24.2, 7.6)},
            kind="imagenet",
            recorded=ms(True),
        ),
        make_run(tmp_path, "resnet50", 0, {"multiscale": (22.0, 6.0)}, kind="imagenet"),
    ]  # an older evaluation
    t4 = make_table("table4", runs, preset=PRESET)
    no_mirror = "multi-scale 200/300, whole image, no mirror, per-channel mean"
    mirror = "multi-scale 200/300, whole image + mirror, per-channel mean"
    old = "multi-scale scales not recorded, mirrors not recorded, per-pixel mean stretched to the image"
    assert row(t4, "resnet34")["views"] == f"{mirror}; {no_mirror}"  # one per seed's evaluation, each once
    assert row(t4, "resnet50")["views"] == old
    md = write_table(t4, "table4", tmp_path / "t4.csv", PRESET)[1].read_text()
    assert f"Views averaged in our runs (from their metrics.json): {mirror}; {no_mirror}; {old}." in md
    assert pd.read_csv(tmp_path / "t4.csv")["views"].dropna().tolist() == [f"{mirror}; {no_mirror}", old]

    t3 = make_table("table3", runs[:1], preset=PRESET)
    assert row(t3, "resnet34")["views"] == "5 crops (4 corners + centre, no mirrors)"

    members = {
        str(r / "eval/multiscale/scores-multiscale.npz"): {"top1_error": 23.0, "top5_error": 7.0, "n": 1000}
        for r in runs[1:]
    }
    ens = tmp_path / "ensemble.json"
    ens.write_text(json.dumps({"ensemble": {"top1_error": 21.0, "top5_error": 5.9, "n": 1000}, "members": members}))
    t5 = make_table("table5", ensemble=ens, preset=PRESET)
    assert row(t5, "ResNet (ILSVRC'15)")["views"] == f"{mirror}; {old}"
    assert row(t5, "resnet34")["views"] == mirror and row(t5, "resnet50")["views"] == old
    md = write_table(t5, "table5", tmp_path / "t5.csv", PRESET)[1].read_text()
    assert f"Views averaged in our runs (from their metrics.json): {mirror}; {old}." in md


def test_inputs_missing_or_malformed(cifar, tmp_path):
    run = cifar["resnet20"]
    (run / "eval" / "single" / "metrics.json").write_text("{not json")
    with pytest.raises(ReproError, match="single/metrics.json is malformed"):
        make_table("table6", [run])
    (run / "history.csv").write_text("iteration,train_error\n1,2\n")
    with pytest.raises(ReproError, match="history.csv is malformed: missing column"):
        draw_figure("figure6", [run], out=tmp_path / "f.pdf")
    (run / "spec.yaml").unlink()
    with pytest.raises(ReproError, match="spec.yaml does not exist"):
        make_table("table6", [run])
    with pytest.raises(ReproError, match="unknown table"):
        make_table("table7", [])


@pytest.mark.parametrize("name", ["figure1", "figure6", "figure4", "figure7"])
def test_figures(name, cifar, imagenet, tmp_path):
    runs = {
        "figure1": [cifar["plain20"], cifar["plain56"]],
        "figure6": [cifar[m] for m in ("plain20", "plain56", "resnet20", "resnet56", "resnet1202")]
        + cifar["resnet110"],
        "figure4": [imagenet[m] for m in ("plain18", "plain34", "resnet18-A", "resnet34-A")],
        "figure7": [cifar[m] for m in ("plain20", "plain56", "resnet20", "resnet56")] + cifar["resnet110"][:1],
    }[name]
    pdf, png = draw_figure(name, runs, out=tmp_path / "reports" / f"{name}.pdf")
    assert pdf.read_bytes().startswith(b"%PDF") and pdf.stat().st_size > 5000
    assert png == pdf.with_suffix(".png") and png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 20000
    assert sorted(p.name for p in pdf.parent.iterdir()) == [f"{name}.pdf", f"{name}.png"]  # no temp files left


def test_figure7_reads_each_response_file_once(cifar):
    """The workflow passes a run both as --run and as --responses RUN/responses.csv."""
    runs = [cifar["plain20"], cifar["resnet110"][0]]
    std = _responses(runs, [runs[0] / "responses.csv", runs[0] / ".." / "seed0" / "responses.csv"])
    assert list(std) == ["plain20", "resnet110"]  # plain first, then by depth, as the paper's legend
    assert len(std["plain20"]) == 18 and len(std["resnet110"]) == 108


def test_figure7_note_defines_std_and_compares_per_channel(tmp_path, monkeypatch):
    """Figure 7's note says what `std` is, and the per-channel measure's agreement read from the CSVs."""

    def csv(model, std, per_channel, name=None):
        path = tmp_path / f"{name or model}.csv"
        path.write_text(
            "model,layer,module,std,std_per_channel,precision\n"
            + "".join(f"{model},{i + 1},l{i}.bn,{a},{b},fp32\n" for i, (a, b) in enumerate(zip(std, per_channel)))
        )
        return path

    files = [csv("plain20", [2.0, 3.0], [1.0, 1.5]), csv("resnet20", [1.0, 1.5], [0.75, 0.75])]
    cols = _response_columns([], files)
    assert cols["resnet20"] == {"std": [1.0, 1.5], "std_per_channel": [0.75, 0.75]}
    note = responses_note(cols)
    assert "all N*H*W*C values" in note and "stem's 3x3 layer included" in note
    assert "plain-20 2.50 / 1.25, ResNet-20 1.25 / 0.75" in note and "in the same order" in note
    # the per-channel measure reversing the models' order is said, not hidden
    swapped = _response_columns([], [csv("plain20", [2.0, 3.0], [0.5, 0.5], "swapped"), files[1]])
    assert "in a different order" in responses_note(swapped)
    # an older responses.csv (std only): no comparison claimed
    old = tmp_path / "old.csv"
    old.write_text("model,layer,module,std\nresnet56,1,bn1,0.9\n")
    assert "not compared" in responses_note(_response_columns([], [files[0], old]))
    from matplotlib.figure import Figure

    texts, text = [], Figure.text
    monkeypatch.setattr(
        Figure, "text", lambda self, x, y, t, *a, **k: (texts.append(t), text(self, x, y, t, *a, **k))[1]
    )
    draw_figure("figure7", responses=files, out=tmp_path / "f7.pdf")
    assert note in " ".join(" ".join(texts).split("\n"))  # the drawn caption carries the note


def test_figure_needs_every_panel(cifar, tmp_path):
    with pytest.raises(ReproError, match="no run for the 'ResNet' panel"):
        draw_figure("figure6", [cifar["plain20"]], out=tmp_path / "f.pdf")
    with pytest.raises(ReproError, match="figure7 needs layer responses"):
        draw_figure("figure7", [], out=tmp_path / "f.pdf")


def test_cli(cifar, tmp_path, capsys):
    out = tmp_path / "reports" / "figure1.pdf"
    assert main(["figure", "figure1", "--run", str(cifar["plain20"]), str(cifar["plain56"]), "--out", str(out)]) == 0
    assert out.exists() and out.with_suffix(".png").exists()
    csv = tmp_path / "results" / "table6.csv"
    assert (
        main(["table", "table6", "--run", *map(str, cifar["resnet110"]), "--out", str(csv), "--preset", "paper"]) == 0
    )
    assert "Preset: `paper`." in csv.with_suffix(".md").read_text()
    assert "not comparable" not in csv.with_suffix(".md").read_text()
    capsys.readouterr()
    for argv, says in (
        (["figure", "figure1", "--run", str(tmp_path / "nope"), "--out", str(out)], "nope does not exist"),
        (["figure", "figure9", "--run", str(cifar["plain20"]), "--out", str(out)], "unknown figure 'figure9'"),
        (["table", "table9", "--out", str(csv)], "unknown table 'table9'"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("resnet-repro: error: ") and says in err


def test_cli_process_exit_code(tmp_path):
    """The installed entry point: exit status 2 and one line on stderr for a missing run directory."""
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "resnet_repro",
            "table",
            "table6",
            "--run",
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "t.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "missing does not exist" in p.stderr
