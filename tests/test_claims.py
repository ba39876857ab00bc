"""The noise model and rules of the claim verdicts (claims.py) on hand-made runs: what counts as
beyond noise, where the noise comes from (images, seeds, logging windows), paired comparisons of two
models scored on the same images, layer responses judged by stage, and ImageNet's degradation judged
on training error too."""

import dataclasses
import math
import statistics

import numpy as np
import pytest
from test_report import N_CIFAR, make_run

from resnet_repro.claims import (
    Evidence,
    Measure,
    binomial_std,
    compare,
    critical,
    final_train_error,
    judge,
    noise,
)
from resnet_repro.files import write_text
from resnet_repro.rundir import Runs
from resnet_repro.tables import make_table


def table(name, dirs):
    """{name: (path, DataFrame)} as the report reads its tables, made from the runs."""
    return {name: (None, make_table(name, [str(d) for d in dirs], None, "paper"))}


def write_scores(run, view, labels, wrong):
    """Scores of `view` whose top-1 is wrong exactly on the images `wrong` (10 classes)."""
    scores = np.zeros((len(labels), 10), dtype=np.float32)
    guess = np.where(wrong, (labels + 1) % 10, labels)
    scores[np.arange(len(labels)), guess] = 1.0
    path = run / "eval" / view / f"scores-{view}.npz"
    np.savez_compressed(path, scores=scores, labels=labels)


def test_a_comparison_within_noise_does_not_agree_even_for_less_or_equal(tmp_path):
    """Table 3's C <= B: C 0.5 points worse than B on 50,000 images is within noise (2 sigma ~0.55),
    and the claim is then 'too little data to say', not 'holds'."""
    c, b = Measure("C", 24.69, binomial_std(24.69, 50000)), Measure("B", 24.19, binomial_std(24.19, 50000))
    assert compare(c, b, "<=")["outcome"] == "within noise"
    assert compare(Measure("C", 24.19, 0.19), Measure("B", 24.69, 0.19), "<=")["outcome"] == "within noise"
    assert compare(Measure("C", 23.5, 0.19), Measure("B", 24.69, 0.19), "<=")["outcome"] == "agrees"
    runs = [
        make_run(tmp_path, m, 0, final_train=20, final_test=e, views={"tencrop": (e, 7.0)})
        for m, e in (("resnet34-A", 25.5), ("resnet34-B", 24.19), ("resnet34-C", 24.69), ("plain34", 28.5))
    ]
    v = judge({"id": "shortcut_options"}, table("table3", runs), Runs(runs), "paper")
    outcomes = [p["outcome"] for p in v["comparisons"]]
    assert outcomes[0] == "within noise" and "contradicts" not in outcomes
    assert v["verdict"] == "too little data to say"


def test_two_seeds_with_identical_errors_do_not_make_the_noise_zero():
    std, parts, how = noise(6.5, N_CIFAR, [6.5, 6.5])
    assert std == pytest.approx(binomial_std(6.5, N_CIFAR)) and std > 0.2  # the images' noise stays
    assert "binomial" in how and "seed std 0.00 over 2 runs" in how
    # seeds that differ add their variance / k, and with 1 degree of freedom the threshold is a t-quantile
    std, parts, how = noise(10.0, 900, [7.0, 13.0])
    assert std == pytest.approx(math.sqrt(1.0 + 18.0 / 2))
    a = Measure("a", 10.0, std, parts=parts)
    cmp = compare(a, Measure("b", 30.0, 1.0), "<")
    assert cmp["df"] < 3 and cmp["critical"] > 4  # Satterthwaite: dominated by the two seeds
    assert cmp["outcome"] == "within noise"  # 20 points, 6.3 sigma, is not beyond t(1.5) (Z alone: agrees)
    assert 20.0 / cmp["noise_std"] > 2 * critical(None)
    assert compare(a, Measure("b", 50.0, 1.0), "<")["outcome"] == "agrees"  # 40 points is beyond even that
    assert critical(None) == 2.0 and critical(1000) == pytest.approx(2.0, abs=0.01)
    # one seed: the images' noise only, and the text says the training variance is not measured
    std, _, how = noise(10.0, 900, [10.0])
    assert std == pytest.approx(1.0) and "training variance is not measured" in how


def test_two_models_scored_on_the_same_images_are_compared_paired(tmp_path):
    """ResNet-110 and ResNet-1202 scored on the same 10,000 test images, disagreeing on only 60 of them:
    the paired noise (McNemar-like: only the images they disagree on count) resolves the 0.6 point
    difference that the unpaired one cannot, and the rule uses it."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, N_CIFAR)
    wrong_a = np.zeros(N_CIFAR, bool)
    wrong_a[rng.choice(N_CIFAR, 1000, replace=False)] = True
    wrong_b = wrong_a.copy()
    wrong_b[np.flatnonzero(~wrong_a)[:60]] = True
    dirs = []
    for model, wrong in (("resnet110", wrong_a), ("resnet1202", wrong_b)):
        err = 100.0 * wrong.mean()
        d = make_run(tmp_path, model, 0, final_train=0.01, final_test=err, views={"single": (err, 1.0)})
        write_scores(d, "single", labels, wrong)
        dirs.append(d)
    e = Evidence(table("table6", dirs), Runs(dirs))
    a, b = e.table("table6", "resnet110"), e.table("table6", "resnet1202")
    paired = compare(a, b, "<")
    unpaired = compare(dataclasses.replace(a, errors=None), dataclasses.replace(b, errors=None), "<")
    assert paired["difference"] == pytest.approx(-0.6) == unpaired["difference"]
    assert paired["pairing"] == "paired over the same 10,000 images" and unpaired["pairing"] == "unpaired"
    assert paired["noise_std"] == pytest.approx(100 * math.sqrt(0.006 * 0.994 / (N_CIFAR - 1)), rel=0.01)
    assert paired["noise_std"] < unpaired["noise_std"] / 4
    assert (paired["outcome"], unpaired["outcome"]) == ("agrees", "within noise")
    v = judge({"id": "overfit_1202"}, e.tables, e.runs, "paper")
    assert v["comparisons"][-1]["pairing"].startswith("paired") and v["verdict"] == "holds"
    # other images (another test split): no pairing
    write_scores(dirs[1], "single", (labels + 1) % 10, wrong_b)
    b2 = Evidence(e.tables, Runs(dirs)).table("table6", "resnet1202")
    assert compare(a, b2, "<")["pairing"] == "unpaired"


def responses_csv(run, model, stage_scales, per_stage, rng):
    """responses.csv of a CIFAR net: the stem, then `per_stage` layers in each of 3 stages, each
    layer's response the stage's scale times a little layer-to-layer noise."""
    rows = [f"{model},1,bn1,1.0"]
    for s, scale in enumerate(stage_scales, 1):
        for i in range(per_stage):
            rows.append(f"{model},{len(rows) + 1},layer{s}.{i}.bn1,{scale * (1 + 0.05 * rng.standard_normal())}")
    write_text(run / "responses.csv", "model,layer,module,std\n" + "\n".join(rows) + "\n")


def test_small_responses_is_not_resolved_by_adding_layers(tmp_path):
    """A ResNet whose responses are smaller in two stages and larger in the third: within noise stage
    by stage, however many layers a stage has (by layers, 190 of them would make it look resolved)."""
    outcomes = {}
    for per_stage in (3, 60):
        rng = np.random.default_rng(per_stage)
        root = tmp_path / str(per_stage)
        dirs = []
        for model, scales in (("resnet20", (0.6, 0.7, 1.1)), ("plain20", (1.0, 1.0, 1.0))):
            d = make_run(root, model, 0, final_train=1, final_test=8)
            responses_csv(d, model, scales, per_stage, rng)
            dirs.append(d)
        v = judge({"id": "small_responses"}, {}, Runs(dirs), "paper")
        (cmp,) = v["comparisons"]
        assert cmp["pairing"].startswith("paired over 3 stages") and cmp["df"] == 2
        outcomes[per_stage] = cmp["outcome"]
        # the layer-by-layer test (main's rule) would call the 180-layer case resolved
        res, plain = (Runs(dirs).of_model(m)[0].responses[1:] for m in ("resnet20", "plain20"))
        diffs = [x - y for x, y in zip(res, plain)]
        layer_z = -statistics.fmean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs)))
        if per_stage == 60:
            assert layer_z > 2
    assert outcomes == {3: "within noise", 60: "within noise"}
    # smaller in every stage: resolved
    rng = np.random.default_rng(1)
    dirs = []
    for model, scales in (("resnet56", (0.5, 0.55, 0.6)), ("plain56", (1.0, 1.1, 1.2))):
        d = make_run(tmp_path / "all", model, 0, final_train=1, final_test=8)
        responses_csv(d, model, scales, 9, rng)
        dirs.append(d)
    (cmp,) = judge({"id": "small_responses"}, {}, Runs(dirs), "paper")["comparisons"]
    assert cmp["outcome"] == "agrees" and cmp["unit"] == "log ratio"


def test_degradation_imagenet_uses_the_training_error_too(tmp_path):
    """Figure 4's evidence is the training error: plain-18 lower on val top-1 but higher in training
    error does not make the claim hold."""
    dirs = [
        make_run(tmp_path, "plain18", 0, final_train=26.0, final_test=27.0, views={"tencrop": (27.0, 9.0)}),
        make_run(tmp_path, "plain34", 0, final_train=24.0, final_test=29.0, views={"tencrop": (29.0, 10.0)}),
    ]
    v = judge({"id": "degradation_imagenet"}, table("table2", dirs), Runs(dirs), "paper")
    val, train = v["comparisons"]
    assert val["outcome"] == "agrees" and "top-1" in val["claim"]
    assert "training error" in train["claim"] and train["outcome"] == "contradicts"
    assert v["verdict"] == "does not hold"


def test_training_error_noise_is_the_spread_of_the_last_windows(tmp_path):
    """Not the binomial on the last window's images (3,200 images: ~0.4 points at 5%), but how much the
    last windows at the final learning rate move (here +-1 point)."""
    d = make_run(tmp_path, "plain20", 0, final_train=5.0, final_test=8.0)
    rows = [
        {"iteration": i * 100, "lr": 0.1 if i < 6 else 0.01, "train_error": e, "test_error": 8.0}
        for i, e in enumerate([60, 40, 20, 12, 10, 9, 4.0, 6.0, 4.0, 6.0, 5.0], 1)
    ]
    write_text(
        d / "history.csv",
        "iteration,lr,train_error,test_error\n"
        + "".join(f"{r['iteration']},{r['lr']},{r['train_error']},{r['test_error']}\n" for r in rows),
    )
    m = final_train_error(Runs([d]), "plain20")
    assert m.value == 5.0 and m.std == pytest.approx(statistics.stdev([4.0, 6.0, 4.0, 6.0, 5.0]))
    assert "last 5" in m.noise and m.parts[0][1] == 4  # 4 degrees of freedom: a t-quantile
