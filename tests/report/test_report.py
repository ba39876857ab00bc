"""The reproduction report (`resnet-repro report`, rule reproduction_report) on synthetic runs written by
hand: paper-sized specs (CIFAR-10 / ImageNet, the paper's iterations) with numbers chosen so that each
kind of verdict occurs, real tables and figures made from them, and a real MLflow store. No training."""

import base64
import json
import math
import re
import sys
from pathlib import Path

import pytest
import yaml

from resnet_repro.cli import main
from resnet_repro.errors import ReproError
from resnet_repro.files import write_json, write_text
from resnet_repro.paper.text import reference
from resnet_repro.report import build as report
from resnet_repro.report import pdf as report_pdf
from resnet_repro.report.claims import RULES, VERDICTS, check_rules, judge, protocol_notes
from resnet_repro.report.figures import draw_figure
from resnet_repro.report.noise import binomial_std
from resnet_repro.report.tables import make_table, write_table
from resnet_repro.rundir import Runs
from resnet_repro.spec.build import build_spec, paper_differences
from resnet_repro.tracking import record as tracking
from resnet_repro.tracking import store as mlflow_store
from resnet_repro.tracking.runs import track_report
from resnet_repro.training.history import history_csv

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = report_pdf.find_chromium()
N_CIFAR, N_IMAGENET = 10000, 50000  # evaluation split sizes: binomial noise ~0.25 and ~0.2 points


def make_run(
    root,
    model,
    seed,
    *,
    final_train,
    final_test,
    views=(),
    responses=None,
    preset="paper",
    data=None,
    iters=None,
    spec=None,
    precision="fp32",
):
    """A finished, evaluated training directory, paper-sized unless told otherwise."""
    imagenet = model.endswith(("18", "34", "-A", "-B", "-C", "50", "101", "152"))
    data = data or ("imagenet" if imagenet else "cifar10")
    iters = iters or (600000 if imagenet else 64000)
    run = Path(root) / "results" / "runs" / preset / model / f"seed{seed}"
    spec = build_spec(
        None,
        [
            {"model": model, "seed": seed, "data": {"kind": data}, "max_iters": iters, "log_every": iters // 10},
            spec or {},
        ],
    )
    write_text(run / "spec.yaml", yaml.safe_dump(spec))
    history = []
    for k in range(1, 11):
        # falling at lr 0.1, then flat within +-2% of the final value for the last three windows (lr 0.01)
        decay = math.exp(-5 * k / 10) if k < 8 else 0.02 * (k % 2) * (k < 10) / 90
        history.append(
            {
                "iteration": k * iters // 10,
                "epoch": k,
                "lr": 0.1 if k < 8 else 0.01,
                "train_loss": 1.0,
                "train_error": final_train + (90 - final_train) * decay * (k < 10),
                "test_loss": 1.0,
                "test_error": final_test + (90 - final_test) * decay * (k < 10),
                "images_per_s": 1000.0,
                "elapsed_s": 10.0 * k,
            }
        )
    write_text(run / "history.csv", history_csv(history))
    write_json(
        run / "metrics.json",
        {
            "model": model,
            "images_per_s": 1000.0,
            "s_per_1k_iters": 128.0,
            "elapsed_s": 100.0,
            "device": "cpu",
            "precision": precision,
        },
    )
    (run / "model.pt").write_bytes(f"{model} {seed}".encode())
    for view, (top1, top5) in dict(views).items():
        write_json(
            run / "eval" / view / "metrics.json",
            {
                "model": model,
                "split": "val" if imagenet else "test",
                "views": {view: {"top1_error": top1, "top5_error": top5, "n": N_IMAGENET if imagenet else N_CIFAR}},
            },
        )
    if responses:
        write_text(
            run / "responses.csv",
            "model,layer,module,std\n"
            + f"{model},1,bn1,1.0\n"  # the stem: not in any stage
            + "".join(
                f"{model},{i + 2},layer{1 + 3 * i // len(responses)}.{i}.bn1,{s}\n" for i, s in enumerate(responses)
            ),
        )
    return run


def responses(scale, layers):
    return [scale * (1 + 0.2 * math.sin(i)) for i in range(layers)]


def build(root, preset="paper"):
    """Runs, tables, figures and a store for one synthetic pipeline run. The numbers are chosen so that:
    degradation_cifar, residual_fix_cifar and depth_gain_cifar hold (ResNet-110's two seeds give the pooled
    seed variance the others borrow); small_responses, overfit_1202 and the ImageNet claims rest on one seed
    without a usable pool (too little data to say); ensemble_gain does not hold; shortcut_options is not
    tested (table3 is left out)."""
    root = Path(root)
    runs = {}
    cifar = {
        "plain20": (5.0, 9.0, 2.0),
        "plain56": (9.0, 12.0, 2.5),
        "resnet20": (3.0, 11.0, 1.0),  # steps of 1.2 points or more: each beyond noise on 10,000 images
        "resnet32": (2.0, 9.5, None),
        "resnet44": (1.5, 8.3, None),
        "resnet56": (1.0, 7.0, 0.8),
        "resnet1202": (0.02, 7.9, None),
    }
    for model, (train, test, resp) in cifar.items():
        depth = int(re.sub(r"\D", "", model))
        runs[(model, 0)] = make_run(
            root,
            model,
            0,
            final_train=train,
            final_test=test,
            views={"single": (test, 1.0)},
            responses=responses(resp, depth - 1) if resp else None,
            preset=preset,
        )
    for seed, test in ((0, 5.5), (1, 5.7)):
        runs[("resnet110", seed)] = make_run(
            root,
            "resnet110",
            seed,
            final_train=0.5,
            final_test=test,
            views={"single": (test, 1.0)},
            preset=preset,
            responses=responses(0.6, 109) if seed == 0 else None,
        )
    imagenet = {
        "plain18": (28.3, 10.0),
        "plain34": (28.5, 10.2),
        "resnet18-A": (27.9, 9.5),
        "resnet34-A": (25.0, 7.8),
        "resnet34-B": (24.5, 7.0),
        "resnet34-C": (24.2, 7.2),
        "resnet50": (23.0, 6.9),
    }
    for model, (top1, top5) in imagenet.items():
        runs[(model, 0)] = make_run(
            root,
            model,
            0,
            final_train=top1 - 3,
            final_test=top1,
            preset=preset,
            views={"tencrop": (top1, top5), "multiscale": (top1 - 2, top5)},
        )
    dirs = {k: str(v) for k, v in runs.items()}

    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow_store.setup(uri)
    for d in dirs.values():
        tracking.track_train(d, preset, config_hash="cafe12345678", uri=uri)

    def table(name, models, ensemble=None):
        sel = [d for (m, _), d in dirs.items() if m in models]
        csv, md = write_table(make_table(name, sel, ensemble, preset), name, root / "results" / f"{name}.csv", preset)
        track_report([csv, md], name, sel, preset, uri)
        return csv

    def figure(name, models):
        sel = [d for (m, s), d in dirs.items() if m in models and s == 0]
        pdf, png = draw_figure(name, sel, out=root / "reports" / f"{name}.pdf", preset=preset)
        track_report([pdf, png], name, sel, preset, uri)
        return png

    members = ["resnet34-B", "resnet34-C", "resnet50"]
    ens = {
        "ensemble": {"n": N_IMAGENET, "top1_error": 25.0, "top5_error": 9.0},  # worse than its best member
        "members": {
            f"{dirs[(m, 0)]}/eval/multiscale/scores-multiscale.npz": {
                "n": N_IMAGENET,
                "top1_error": imagenet[m][0] - 2,
                "top5_error": imagenet[m][1],
            }
            for m in members
        },
    }
    write_json(root / "ensemble.json", ens)
    tables = [
        table("table2", ["plain18", "plain34", "resnet18-A", "resnet34-A"]),
        table("table5", members, root / "ensemble.json"),
        table("table6", ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202"]),
    ]
    figures = [
        figure("figure1", ["plain20", "plain56"]),
        figure("figure7", ["plain20", "plain56", "resnet20", "resnet56", "resnet110"]),
    ]
    return {
        "root": root,
        "uri": uri,
        "runs": dirs,
        "tables": [str(t) for t in tables],
        "figures": [str(f) for f in figures],
    }


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    return build(tmp_path_factory.mktemp("paper"))


@pytest.fixture(scope="module")
def paper_report(paper):
    out = paper["root"] / "reports" / "report.html"
    summary = report.make_report(
        out,
        "paper",
        paper["tables"],
        paper["figures"],
        paper["runs"].values(),
        pdf=out.with_suffix(".pdf"),
        config_hash="cafe12345678",
        uri=paper["uri"],
        pdf_engine="matplotlib",
    )
    return out, summary


def verdicts(summary):
    return {c["id"]: c["verdict"] for c in summary["claims"]}


def test_every_claim_gets_a_verdict_computed_from_the_numbers(paper_report):
    _, summary = paper_report
    ids = [c["id"] for c in yaml.safe_load((ROOT / "src/resnet_repro/paper/reference.yaml").read_text())["claims"]]
    assert [c["id"] for c in summary["claims"]] == ids
    assert verdicts(summary) == {
        "degradation_cifar": "holds",
        "residual_fix_cifar": "holds",
        "depth_gain_cifar": "holds",
        "small_responses": "too little data to say",
        "overfit_1202": "too little data to say",
        "depth_gain_imagenet": "too little data to say",
        "degradation_imagenet": "too little data to say",
        "ensemble_gain": "does not hold",
        "shortcut_options": "not tested in this run",
    }
    assert all(c["verdict"] in VERDICTS for c in summary["claims"])
    claims = {c["id"]: c for c in summary["claims"]}
    # one seed of every ImageNet net and no ImageNet model with several: no seed variance to borrow, so no
    # comparison is decisive, and the verdict says why
    val, train = claims["degradation_imagenet"]["comparisons"]
    assert val["outcome"] == "within noise" and val["difference"] == pytest.approx(-0.2)
    assert val["noise_std"] is None and "one seed" in val["unmeasured"] and val["measures"][0]["run_ids"]
    assert "one seed" in claims["depth_gain_imagenet"]["why"]
    assert "training error" in train["claim"] and train["outcome"] == "within noise"
    # CIFAR: ResNet-110 has two seeds; the one-seed ResNet-20 borrows their pooled variance (binomial scale)
    trend, ends = claims["depth_gain_cifar"]["comparisons"]
    assert "per doubling of depth" in trend["claim"] and len(trend["measures"]) == 5
    a, b = ends["measures"]
    assert a["label"].startswith("ResNet-110") and len(a["run_ids"]) == 2 and a["runs"] == 2
    assert a["value"] == pytest.approx(5.6) and "seed sd 0.141 over 2 runs" in a["noise"]
    assert a["std"] == pytest.approx(math.hypot(binomial_std(5.6, N_CIFAR), 0.1))
    assert any("pooled seed variance" in p[0] for p in ends["parts"]) and ends["df"] > 1 and ends["critical"] > 2.0
    # ResNet-1202's training error: the pool is ResNet-110's two identical training errors (zero, 1 df), so
    # its floor with t(1): not below 0.1% beyond noise
    threshold = claims["overfit_1202"]["comparisons"][0]
    assert threshold["df"] == pytest.approx(1) and threshold["outcome"] == "within noise"
    # responses: one number per run, one run of each net with responses: no seeds to judge by
    assert all("one seed" in c["unmeasured"] for c in claims["small_responses"]["comparisons"])
    assert "table3" in " ".join(claims["shortcut_options"]["missing"])
    assert claims["ensemble_gain"]["comparisons"][0]["outcome"] == "contradicts"


def test_html_has_every_table_figure_and_the_provenance_of_every_number(paper, paper_report):
    out, summary = paper_report
    text = out.read_text()
    assert "Preset paper" in text and "not comparable" not in text
    for name in ("Table 2", "Table 5", "Table 6", "Figure 1", "Figure 7"):
        assert name in text
    assert text.count('src="data:image/png;base64,') == 2  # self-contained: the figures are embedded
    for png in paper["figures"]:  # ... as the PNG files themselves
        assert f'src="data:image/png;base64,{base64.b64encode(Path(png).read_bytes()).decode()}"' in text
    for d in paper["runs"].values():  # every training run, with its MLflow run id and config hash
        run_id = json.loads((Path(d) / "mlflow.json").read_text())["run_id"]
        assert run_id in text and f'href="#run-{run_id}"' in text
    assert "cafe12345678" in text and summary["git_commit"] in text
    for name in (
        "table2",
        "table5",
        "table6",
        "figure1",
        "figure7",
    ):  # the report run of each artifact, found by its files
        assert summary["tables" if name.startswith("table") else "figures"][name]["report_run"]["run_id"] in text
    # paper vs reproduced vs difference, per row
    assert '<td class="paper num">27.94</td><td class="ours num">28.30</td>' in text  # table2, plain-18
    assert '<td class="diff num">+0.36</td>' in text
    for v in VERDICTS:
        assert f"v-{v.replace(' ', '-')}" in text
    assert "How verdicts are decided" in text and "binomial" in text
    assert summary["pdf"]["engine"] == "matplotlib" and out.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"
    assert "matplotlib fallback" in text


def test_the_paper_preset_trained_in_bf16_is_comparable_and_the_flag_agrees_with_every_verdict(tmp_path):
    """The precision policy (spec.PRECISION_POLICY): the paper's spec with `precision: auto` trains in
    bf16 autocast on bf16 hardware (any CUDA GPU of compute capability 8.0+); that is named in the report,
    reduces no verdict, and the report's one flag agrees with the verdicts. A run reduced in a stated term
    (lr) makes its verdict reduced and the flag false, and the banner says why."""
    dirs = [  # three seeds each: the seeds are the unit of evidence
        make_run(tmp_path, model, s, final_train=train + 0.2 * s, final_test=test, precision="bf16")
        for model, train, test in (("plain20", 5, 9), ("plain56", 9, 12))
        for s in range(3)
    ]
    out = tmp_path / "reports" / "report.html"
    summary = report.make_report(out, "paper", run_dirs=[str(d) for d in dirs], uri=f"sqlite:///{tmp_path / 'm.db'}")
    claims = {c["id"]: c for c in summary["claims"]}
    assert claims["degradation_cifar"]["verdict"] == "holds" and claims["degradation_cifar"]["reduced"] == []
    assert summary["comparable_with_paper"] is True
    assert not any(c["reduced"] for c in summary["claims"]) and summary["protocol"]["reduced"] == []
    assert "trained in bf16 autocast, not the paper's fp32 (not a reduction: see below)" in summary["protocol"]["notes"]
    assert "bf16 autocast" in summary["protocol"]["precision_policy"]
    text = out.read_text()
    assert "Preset paper: the paper" in text and "not comparable" not in text
    # one run with another lr: its verdict is reduced, the flag false, the banner says so
    lr = make_run(tmp_path / "b", "plain56", 0, final_train=9, final_test=12, precision="bf16", spec={"lr": 0.05})
    summary = report.make_report(out, "paper", run_dirs=[str(dirs[0]), str(lr)], uri=f"sqlite:///{tmp_path / 'm.db'}")
    claims = {c["id"]: c for c in summary["claims"]}
    assert claims["degradation_cifar"]["reduced"] == ["lr 0.05, not the paper's 0.1 (plain-56)"]
    assert summary["comparable_with_paper"] is False and summary["protocol"]["reduced"] == [
        "lr 0.05, not the paper's 0.1 (plain-56)"
    ]
    assert "Paper preset, but 1 setting(s) of its runs depart from the paper&#x27;s protocol" in out.read_text()


def test_reduced_runs_get_the_verdict_of_their_numbers_with_their_scope(paper):
    """A reduced preset's verdict is what its numbers say, and it says on what data and scale it rests
    and that this is not the paper's setting."""
    out = paper["root"] / "demo" / "report.html"
    summary = report.make_report(
        out, "demo", paper["tables"], paper["figures"], paper["runs"].values(), uri=paper["uri"]
    )
    full = verdicts(
        report.make_report(
            paper["root"] / "full" / "report.html",
            "paper",
            paper["tables"],
            paper["figures"],
            paper["runs"].values(),
            uri=paper["uri"],
        )
    )
    assert verdicts(summary) == full  # the same numbers, the same verdicts
    for c in summary["claims"]:
        if c["verdict"] == "not tested in this run":
            assert c["scope"] == "" and c["verdict_text"] == c["verdict"]
            continue
        assert c["scope"].startswith("on ") and c["scope"].endswith("(reduced, not the paper's setting)"), c
        assert c["verdict_text"] == f"{c['verdict']}: {c['scope']}"
        assert "preset 'demo'" in c["why"]
    claims = {c["id"]: c for c in summary["claims"]}
    assert claims["degradation_cifar"]["scope"].startswith("on CIFAR-10, 64,000 iterations, one seed")
    assert "2 seeds" in claims["depth_gain_cifar"]["scope"]  # ResNet-110's two seeds
    text = out.read_text()
    assert "numbers are not comparable with the paper" in text and "<a href='#protocol'>reduced</a>" in text
    assert "Preset demo: 1 reduction(s) from the paper's protocol" in text
    assert summary["comparable_with_paper"] is False and summary["pdf"] is None


def test_every_departure_from_the_papers_spec_is_named(tmp_path):
    """Runs of the paper's spec are not reduced; any stated protocol term other than the paper's (lr,
    warm-up, augmentation, schedule, ...) makes them so, and the verdict names it. BatchNorm's batch (the
    paper does not state it) and bf16 autocast (spec.PRECISION_POLICY) are named once, in the report's
    protocol notes, with the preset's built-in departures, and reduce nothing."""
    plain = make_run(tmp_path, "plain20", 0, final_train=9, final_test=12)
    resnet = make_run(tmp_path, "plain56", 0, final_train=5, final_test=9)
    assert judge({"id": "degradation_cifar"}, {}, Runs([plain, resnet]), "paper")["reduced"] == []
    other = make_run(
        tmp_path / "b",
        "plain56",
        0,
        final_train=5,
        final_test=9,
        precision="bf16",
        spec={
            "lr": 0.05,
            "bn_batch": None,
            "augment": {"flip": False},
            "weight_decay": 0.0005,
            "warmup": {"models": ["plain56"], "lr": 0.02, "check_every": 10, "max_iters": 100},
            "schedule": {"milestones": [30000, 48000]},
            "data": {"val_split": 5000},
        },
    )
    v = judge({"id": "degradation_cifar"}, {}, Runs([plain, other]), "paper")
    assert v["reduced"] == [
        "data.val_split 5000, not the paper's 0 (plain-56)",
        "augment {flip: false, pad: 4}, not the paper's {flip: true, pad: 4} (plain-56)",
        "lr 0.05, not the paper's 0.1 (plain-56)",
        "weight_decay 0.0005, not the paper's 0.0001 (plain-56)",
        "schedule {gamma: 0.1, kind: multistep, milestones: [30000, 48000]}, not the paper's "
        "{gamma: 0.1, kind: multistep, milestones: [32000, 48000]} (plain-56)",
        "warmup {lr: 0.02, max_iters: 100, until_train_error: 80}, not the paper's none (plain-56)",
    ]
    assert v["scope"].endswith("(reduced, not the paper's setting)") and "lr 0.05" in v["why"]
    notes = protocol_notes(Runs([plain, other]))
    assert "BatchNorm statistics over 128 images (the paper: mini-batch 128 on two GPUs" in notes[1]
    assert notes[0].startswith("BatchNorm statistics over 64 images") and notes[0].endswith("(plain-20)")
    assert notes[2] == "trained in bf16 autocast, not the paper's fp32 (not a reduction: see below) (plain-56)"
    # bf16 alone reduces nothing
    bf16 = make_run(tmp_path / "c", "plain56", 0, final_train=5, final_test=9, precision="bf16")
    assert judge({"id": "degradation_cifar"}, {}, Runs([plain, bf16]), "paper")["reduced"] == []


def test_the_presets_built_in_departures_from_the_paper_are_named_once(tmp_path):
    """ImageNet's fixed milestones (the paper: 'when the error plateaus'), the warm-up's cap and the BN
    batch per process (which depends on the processes a run trained in) are the package's, not the
    paper's: named in the protocol notes, not in the verdicts; a plateau schedule is the paper's."""
    r18 = make_run(tmp_path, "resnet18", 0, final_train=30, final_test=31)
    metrics = json.loads((r18 / "metrics.json").read_text())
    write_json(r18 / "metrics.json", dict(metrics, processes=8))
    r110 = make_run(tmp_path, "resnet110", 0, final_train=1, final_test=6)
    notes = protocol_notes(Runs([r18, r110]))
    assert any(
        n.startswith(
            "built in: schedule {gamma: 0.1, kind: multistep, milestones: [150000, 300000]}, where "
            "the paper says: divided by 10 when the error plateaus"
        )
        for n in notes
    )
    assert (
        "built in: warmup {lr: 0.01, max_iters: 2000, until_train_error: 80}, not the paper's "
        "{lr: 0.01, max_iters: null, until_train_error: 80} (ResNet-110)" in notes
    )
    assert any(n.startswith("BatchNorm statistics over 32 images") and n.endswith("(ResNet-18-B)") for n in notes)
    assert judge({"id": "depth_gain_cifar"}, {}, Runs([r110]), "paper")["reduced"] == []
    plateau = make_run(
        tmp_path / "p", "resnet18", 0, final_train=30, final_test=31, spec={"schedule": {"kind": "plateau"}}
    )
    assert paper_differences(Runs([plateau]).list[0].spec) == []
    assert not any("schedule" in n for n in protocol_notes(Runs([plateau])))


def test_runs_shorter_or_on_other_data_than_the_papers_are_judged_and_marked_reduced(tmp_path):
    def seeds(root, model, train, test, step=0.2, **kw):  # three seeds, the training errors `step` apart
        return [make_run(root, model, s, final_train=train + step * s, final_test=test, **kw) for s in range(3)]

    short = seeds(tmp_path, "plain20", 5, 9, iters=6400)
    other = seeds(tmp_path, "plain56", 9, 12, data="digits")
    v = judge({"id": "degradation_cifar"}, {}, Runs(short + other), "paper")
    assert v["numbers_say"] == "holds" and v["verdict"] == "holds"
    assert any("6400 training iterations" in r for r in v["reduced"]) and any("digits" in r for r in v["reduced"])
    assert (
        v["scope"] == "on CIFAR-10, digits (8x8), 6,400-64,000 iterations, 3 seeds (reduced, not the paper's setting)"
    )
    # equal within 0.1 points, measured precisely: the runs exclude a degradation of the claim's margin
    close = seeds(tmp_path / "b", "plain56", 5.1, 9, data="digits")
    v = judge({"id": "degradation_cifar"}, {}, Runs(short + close), "paper")
    assert v["verdict"] == "does not hold" and "excludes an improvement of 1 or more" in v["summary"]
    # where the numbers are within noise, that is what the verdict says, reduced or not
    noisy = seeds(tmp_path / "c", "plain56", 3.0, 9, step=3.0, data="digits")
    v = judge({"id": "degradation_cifar"}, {}, Runs(short + noisy), "paper")
    assert v["verdict"] == "too little data to say" and "within noise" in v["why"]


def test_every_claim_of_reference_yaml_has_a_rule_and_every_rule_a_claim():
    """claims.RULES is checked against reference.yaml when claims.py loads: a claim without a rule, or a
    rule without a claim, fails at import with the ids named."""
    ids = [c["id"] for c in reference()["claims"]]
    assert sorted(RULES) == sorted(ids)  # the module loaded, so the check passed on the real file
    check_rules(RULES, reference()["claims"])
    with pytest.raises(ReproError, match="no rule for claim\\(s\\) new_claim"):
        check_rules(RULES, reference()["claims"] + [{"id": "new_claim"}])
    with pytest.raises(ReproError, match="rule\\(s\\) for no claim: ensemble_gain"):
        check_rules(RULES, [c for c in reference()["claims"] if c["id"] != "ensemble_gain"])


def test_pdf_falls_back_to_matplotlib_without_chromium(paper, tmp_path):
    out = tmp_path / "report.html"
    s = report.make_report(
        out,
        "paper",
        paper["tables"][:1],
        paper["figures"][:1],
        paper["runs"].values(),
        pdf=tmp_path / "report.pdf",
        uri=paper["uri"],
        chromium=str(tmp_path / "no-chromium"),
    )
    assert s["pdf"]["engine"] == "matplotlib" and "Chromium not found" in s["pdf"]["detail"]
    assert (tmp_path / "report.pdf").read_bytes()[:4] == b"%PDF"
    assert json.loads((tmp_path / "report.json").read_text())["pdf"]["engine"] == "matplotlib"


@pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium: run scripts/install-chromium.sh (the fallback is tested above)"
)
def test_pdf_with_headless_chromium(paper, tmp_path):
    out = tmp_path / "report.html"
    s = report.make_report(
        out,
        "paper",
        paper["tables"],
        paper["figures"],
        paper["runs"].values(),
        pdf=tmp_path / "report.pdf",
        uri=paper["uri"],
        pdf_engine="chromium",
    )
    assert s["pdf"]["engine"] == "chromium" and "hromium" in s["pdf"]["detail"]
    data = (tmp_path / "report.pdf").read_bytes()
    assert data[:4] == b"%PDF" and len(data) > 50000  # text and both embedded figures
    assert "printed from this HTML by headless" in out.read_text()


def test_cli_and_one_line_errors(paper, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert (
        main(
            [
                "report",
                "--out",
                str(out),
                "--preset",
                "paper",
                "--tables",
                *paper["tables"],
                "--figures",
                *paper["figures"],
                "--runs",
                *paper["runs"].values(),
                "--tracking-uri",
                paper["uri"],
                "--config-hash",
                "cafe12345678",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert str(out) in printed and "ensemble_gain" in printed and "does not hold" in printed
    assert (tmp_path / "r.json").is_file()

    def fails(*args):
        assert main(["report", "--out", str(tmp_path / "x.html"), "--preset", "paper", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        return err

    assert "does not exist" in fails("--figures", str(tmp_path / "figure9.png"))
    assert ".png" in fails("--figures", paper["figures"][0].replace(".png", ".pdf"))
    assert "does not exist" in fails("--runs", str(tmp_path / "nothing"))
    assert "does not exist" in fails("--tables", str(tmp_path / "table9.csv"))
    # no store: the report is still made, from mlflow.json alone, and says so
    s = report.make_report(
        tmp_path / "nostore.html",
        "paper",
        paper["tables"],
        [],
        paper["runs"].values(),
        uri=f"sqlite:///{tmp_path / 'none.db'}",
    )
    assert not s["store_reachable"] and "not reachable" in (tmp_path / "nostore.html").read_text()
    assert not (tmp_path / "none.db").exists()


def test_run_directory_layout_is_written_and_read_in_one_place(tmp_path):
    from resnet_repro.rundir import parse_run_path, preset_of, run_path

    path = run_path("demo", "resnet20-B", 3)
    assert path == "results/runs/demo/resnet20-B/seed3"
    assert parse_run_path(path) == parse_run_path(f"{path}/eval/single/metrics.json") == ("demo", "resnet20-B", 3)
    assert parse_run_path("results/table6.csv") is None and parse_run_path("seed1") is None
    assert preset_of([tmp_path / path, tmp_path / run_path("demo", "plain20", 0) / "history.csv"]) == "demo"
    assert preset_of([tmp_path / path, tmp_path / run_path("tiny", "plain20", 0)]) is None


def test_a_table_named_outside_the_catalogue_is_read_as_one_model_per_row():
    """A table file the catalogue does not name (results/table6-fp32.csv) is not an ensemble: its rows
    link to their runs (none here) instead of failing on the name."""
    from resnet_repro.report.html import row_run_ids

    row = {"source": "ours", "model": "resnet20", "seeds": "0,1"}
    assert row_run_ids("table6-fp32", row, Runs([])) == [None, None]
    assert row_run_ids("table5", {"source": "ours (ensemble member)", "model": "resnet50"}, Runs([])) == [None]
