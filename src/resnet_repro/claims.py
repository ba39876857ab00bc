"""The paper's claims (reference.yaml `claims:`) judged on a run: measures with their noise,
comparisons, and a verdict per claim, as plain data (report_html renders them).

Every claim has a rule in RULES (claim id -> function); the table is checked against reference.yaml
when this module loads, so a claim without a rule, or a rule without a claim, fails at once."""

import math
import re
import statistics
from dataclasses import dataclass, field

import numpy as np
import yaml
from scipy.stats import norm
from scipy.stats import t as t_dist

from .errors import ReproError
from .paper import data_names, model_label, reference
from .rundir import run_of_file
from .spec import built_in_departures, paper_differences, protocol_differences, stated

VERDICTS = ("holds", "does not hold", "not tested in this run", "too little data to say")
Z = 2.0  # a difference is "resolved" when it exceeds Z standard deviations of its noise (normal: ~95.4%)
LEVEL = norm.cdf(Z)  # the same one-sided level for a t-quantile, where the noise is estimated from few values
TRAIN_ERROR_LIMIT = 0.1  # overfit_1202: "training error < 0.1%"
TRAIN_WINDOWS = 5  # training error: its noise is the spread of (at most) the last 5 logging windows at the final lr


# ---------------------------------------------------------------- measurements and their noise
#
# A measure's noise has two parts, kept apart because they combine differently:
#   sampling   which images it was scored on: the binomial std of an error rate on n images (test and
#              val errors), shared by every seed of a model (the seeds saw the same images, so averaging
#              seeds does not shrink it), and paired away where two models were scored on the same images
#   training   what a rerun with another seed changes: the sample variance over k seeds / k, with k-1
#              degrees of freedom (not measured with one seed: the noise text says so)
# They add (independent sources); the threshold is a t-quantile for the Welch-Satterthwaite degrees
# of freedom of the sum (Z where every part is a known variance), so 2-3 seeds are not taken at face value.
# Training error is different: its value is the last logging window of each run, its sampling part
# the spread of the last windows at the final learning rate (not their pooled image count: minibatches of
# one run are not independent draws), and the seeds' spread already contains it, so the larger one is used.


@dataclass
class Measure:
    label: str
    value: float
    std: float = None  # the whole noise of the value, same unit
    noise: str = ""  # how std was obtained, in words
    runs: list = field(default_factory=list)
    unit: str = "%"
    parts: list = field(default_factory=list)  # [(variance, degrees of freedom or None if known, what, kind)]
    errors: object = None  # per image, the error of each image averaged over the runs (for paired comparisons)
    labels: object = None  # the labels of those images, in order: two measures pair only on the same ones


def finite(v):
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def binomial_std(p, n):
    """Std (percentage points) of an error rate p% measured on n images; p is kept at least one image
    away from 0 and 100, so that no error on a few images is not taken for certainty."""
    if not n:
        return None
    p = min(max(p, 100.0 / n), 100.0 - 100.0 / n) if n > 1 else 50.0
    return math.sqrt(p * (100.0 - p) / n)


def satterthwaite(parts):
    """(std, degrees of freedom) of a sum of independent variance estimates [(var, df or None, ...)];
    df None where every part is known (normal), else Welch-Satterthwaite's."""
    total = sum(p[0] for p in parts)
    denom = sum(p[0] ** 2 / p[1] for p in parts if p[1])
    return math.sqrt(total), (total * total / denom if denom > 0 else None)


def critical(df):
    """The multiplier of the noise std a difference must exceed: Z, or the t-quantile of the same level."""
    return Z if df is None else float(t_dist.ppf(LEVEL, df))


def seed_part(values):
    """The training part of the noise of the mean of `values` (one per seed), or None for one seed."""
    k = len(values)
    if k < 2:
        return None
    s = statistics.stdev(values)
    return (s * s / k, k - 1, f"seed std {s:.2f} over {k} runs", "seeds")


def noise(value, n, values):
    """(std, parts, description) of the mean `value` of a test or val error over the seeds `values`,
    each scored on the same n images: sampling (binomial) and training (seeds) parts added."""
    parts = []
    b = binomial_std(value, n) if n else None
    if b is not None:
        parts.append((b * b, None, f"binomial {b:.2f} on n={n}", "images"))
    seeds = seed_part(values)
    if seeds:
        parts.append(seeds)
    if not parts:
        return None, [], "noise unknown (no evaluation size, one seed)"
    std, _ = satterthwaite(parts)
    how = " + ".join(p[2] for p in parts) + f" -> {std:.2f}"
    return std, parts, how + ("" if seeds else " (one seed: the training variance is not measured)")


def seeds_of(text):
    """A table's `seeds` cell as a list: '0,1' -> ['0', '1'] (a lone seed read as a number, 0.0, -> ['0'])."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    if isinstance(text, float) and text.is_integer():
        return [str(int(text))]
    return [s.strip() for s in str(text).split(",") if s.strip()]


def image_errors(runs, view, col):
    """(per-image error averaged over the runs, labels) from each run's saved scores of `view` (`col`:
    top1 or top5), or (None, None) where a run has none or the runs scored other images."""
    saved = [r.image_errors(view) for r in runs]
    if not saved or any(s is None for s in saved):
        return None, None
    labels = saved[0]["labels"]
    if any(not np.array_equal(labels, s["labels"]) for s in saved):
        return None, None
    return np.mean([s[col] for s in saved], axis=0), labels


def table_measure(tables, runs, table, model, col, view, what):
    """A reproduced cell of a table (the mean over seeds of top-1 errors of `view`) with its noise and its
    runs' per-image errors; None if the table or value is missing."""
    if table not in tables:
        return None
    df = tables[table][1]
    rows = df[(df["model"] == model) & (df["source"] != "literature")]
    if rows.empty or col not in rows.columns or not finite(rows.iloc[0][col]):
        return None
    row = rows.iloc[0]
    value = float(row[col])
    behind = [r for r in (runs.get(model, s) for s in seeds_of(row.get("seeds"))) if r is not None]
    evals = [r.evals.get(view, {}) for r in behind]
    n = min((e["n"] for e in evals if e.get("n")), default=None)
    per_seed = [e["top1"] for e in evals if finite(e.get("top1"))]
    std, parts, how = noise(value, n, per_seed)
    errors, labels = image_errors(behind, view, "top1")
    return Measure(f"{model_label(model)} {what}", value, std, how, behind, parts=parts, errors=errors, labels=labels)


def final_windows(history):
    """The last logging windows of a run at its final learning rate (at most TRAIN_WINDOWS; the last 3
    whatever their rate where fewer than 2 are at it): their training errors."""
    lr = history[-1].get("lr")
    tail = []
    for row in reversed(history):
        if row.get("lr") != lr or len(tail) == TRAIN_WINDOWS:
            break
        tail.append(float(row["train_error"]))
    return tail if len(tail) >= 2 else [float(r["train_error"]) for r in history[-3:]]


def final_train_error(runs, model):
    """Final training error (the last logging window, mean over seeds) from history.csv, its noise the
    larger of the seeds' spread and the spread of each run's last windows (both / sqrt(k))."""
    rs = [r for r in runs.of_model(model) if r.history]
    if not rs:
        return None
    values = [float(r.history[-1]["train_error"]) for r in rs]
    windows = [final_windows(r.history) for r in rs]
    k = len(rs)
    w_var = statistics.fmean(statistics.variance(w) if len(w) > 1 else 0.0 for w in windows) / k
    w_df = sum(len(w) - 1 for w in windows)
    parts = [(w_var, w_df or None, f"spread of the last {min(map(len, windows))}+ logging windows", "windows")]
    seeds = seed_part(values)
    if seeds and seeds[0] > w_var:
        parts = [seeds]
    std, _ = satterthwaite(parts) if w_df or seeds else (None, None)
    how = f"{parts[0][2]} -> {std:.2f}" if std is not None else "noise unknown (fewer than 2 logging windows)"
    return Measure(
        f"{model_label(model)} final training error",
        statistics.fmean(values),
        std,
        how + ("" if k > 1 else " (one seed)"),
        rs,
        parts=parts if std is not None else [],
    )


def final_test_error(runs, model):
    rs = [r for r in runs.of_model(model) if r.history]
    if not rs:
        return None
    return statistics.fmean(r.history[-1]["test_error"] for r in rs)


def stage_responses(runs, model):
    """{stage: mean response std of its 3x3 layers} of a model, averaged over its runs' responses.csv,
    and the runs. The stage of a layer is the `layerK` of its module (the stem is left out: one layer,
    the same in plain and residual nets)."""
    rs = [r for r in runs.of_model(model) if r.responses]
    per_run = []
    for r in rs:
        stages = {}
        for module, std in r.response_modules:
            m = re.match(r"layer(\d+)\.", module)
            if m:
                stages.setdefault(int(m.group(1)), []).append(std)
        per_run.append({k: statistics.fmean(v) for k, v in stages.items()})
    common = sorted(set.intersection(*(set(s) for s in per_run))) if per_run else []
    return {k: statistics.fmean(s[k] for s in per_run) for k in common}, rs


def response_measure(runs, model):
    stages, rs = stage_responses(runs, model)
    if not stages:
        return None
    return Measure(
        f"{model_label(model)} mean response std",
        statistics.fmean(stages.values()),
        None,
        f"the mean of {len(stages)} stages' mean responses",
        rs,
        unit="",
    )


def compare_responses(e, low, high):
    """`low` has smaller layer responses than `high`, stage by stage: the mean over stages of
    log(response low / response high), its noise the spread over stages (t with stages-1 degrees of
    freedom). The unit is the stage, not the layer: layers of a stage are not independent samples, and
    a rule counting layers would get easier with depth by construction."""
    a = e.need(response_measure(e.runs, low), f"{model_label(low)} responses.csv")
    b = e.need(response_measure(e.runs, high), f"{model_label(high)} responses.csv")
    if not (a and b):
        return
    sa, sb = stage_responses(e.runs, low)[0], stage_responses(e.runs, high)[0]
    logs = [math.log(sa[k] / sb[k]) for k in sorted(set(sa) & set(sb)) if sa[k] > 0 and sb[k] > 0]
    d = statistics.fmean(logs) if logs else math.nan
    sd = statistics.stdev(logs) / math.sqrt(len(logs)) if len(logs) > 1 else None
    df = len(logs) - 1 if sd is not None else None
    e.parts.append(
        outcome_of(a, b, "<", d, sd, df, f"paired over {len(logs)} stages (log ratio of stage means)", "log ratio")
    )


def compare(a, b, op):
    """Claim `a op b` (op '<' or '<='): a dict with the numbers and the outcome agrees/contradicts/within
    noise. Both '<' and '<=' agree only beyond noise: within it, the numbers do not say. Two measures
    scored on the same images are compared paired (each image's error difference: only the images the
    two models disagree on count, as in McNemar's test); else their sampling variances add."""
    d = a.value - b.value
    if a.std is None or b.std is None:
        return outcome_of(a, b, op, d, None, None, "unpaired", a.unit)
    paired = a.errors is not None and b.errors is not None and np.array_equal(a.labels, b.labels)
    others = [p for m in (a, b) for p in m.parts if p[3] != "images"]
    if paired:
        diff = (a.errors - b.errors) * 100.0
        images = [(float(diff.var(ddof=1)) / len(diff), None, "paired", "images")]
        pairing = f"paired over the same {len(diff):,} images"
    else:
        images = [p for m in (a, b) for p in m.parts if p[3] == "images"]
        pairing = "unpaired"
    # measures known by their std alone (a threshold, a hand-made Measure) count as known variances
    bare = [(m.std**2, None, m.noise, "given") for m in (a, b) if not m.parts]
    parts = images + others + bare
    sd, df = satterthwaite(parts)
    return outcome_of(a, b, op, d, sd, df, pairing, a.unit)


def outcome_of(a, b, op, d, sd, df, pairing, unit):
    crit = critical(df) if sd is not None else None
    if sd is None or not math.isfinite(d):
        outcome = "within noise"
    elif d > crit * sd:
        outcome = "contradicts"
    elif d < -crit * sd:
        outcome = "agrees"
    else:
        outcome = "within noise"
    return {
        "claim": f"{a.label} {op} {b.label}",
        "a": measure_json(a),
        "b": measure_json(b),
        "op": op,
        "difference": d,
        "noise_std": sd,
        "df": df,
        "critical": crit,
        "pairing": pairing,
        "unit": unit,
        "outcome": outcome,
    }


def measure_json(m):
    return {
        "label": m.label,
        "value": m.value,
        "std": m.std,
        "noise": m.noise,
        "run_ids": [r.run_id for r in m.runs],
        "run_dirs": [str(r.dir) for r in m.runs],
    }


def threshold(label, value):
    return Measure(label, value, 0.0, "a fixed threshold", [])


def ensemble_measures(tables, runs):
    """(the ensemble's top-5 error, its best member's) from table5, with binomial noise; both with the
    per-image errors recomputed from the members' saved scores where they exist, so that the two are
    compared paired (they were scored on the same images)."""
    if "table5" not in tables:
        return None, None
    df = tables["table5"][1]
    ens_rows = df[df["source"] == "paper"]
    members = df[df["source"] == "ours (ensemble member)"]
    if ens_rows.empty or members.empty or not finite(ens_rows.iloc[0].get("top5")):
        return None, None
    member_runs = [(row, member_run(runs, row)) for _, row in members.iterrows()]
    ns = [r.evals.get("multiscale", {}).get("n") for _, r in member_runs if r is not None]
    n = min((x for x in ns if x), default=None)
    value = float(ens_rows.iloc[0]["top5"])
    std, parts, how = noise(value, n, [])
    ens = Measure("ensemble top-5 error", value, std, how, [r for _, r in member_runs if r is not None], parts=parts)
    row, r = min(member_runs, key=lambda x: float(x[0]["top5"]))
    value = float(row["top5"])
    std, parts, how = noise(value, n, [])
    best = Measure(
        f"best member ({model_label(row['model'])}) top-5 error", value, std, how, [r] if r else [], parts=parts
    )
    saved = [m.scores("multiscale") if m is not None else None for _, m in member_runs]
    if r is not None and saved and all(x is not None for x in saved):
        y = saved[0][1]
        if all(np.array_equal(y, x[1]) for x in saved):
            probs = np.mean([softmax(x[0]) for x in saved], axis=0)
            top = np.argsort(-probs, axis=1)[:, : min(5, probs.shape[1])]
            ens.errors, ens.labels = (~(top == y[:, None]).any(axis=1)).astype(float), y
            best.errors, best.labels = r.image_errors("multiscale")["top5"].astype(float), y
    return ens, best


def softmax(x):
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def member_run(runs, row):
    """The run of an ensemble member row of table5 (its `members` cell is the member's scores file)."""
    run = run_of_file(str(row.get("members", "")))
    return runs.by_dir(run) if run else None


# ---------------------------------------------------------------- the rules, one per claim


class Evidence:
    """What a rule gathers for one claim: comparisons, the inputs it missed, notes."""

    def __init__(self, tables, runs):
        self.tables, self.runs = tables, runs
        self.parts, self.missing, self.notes = [], [], []

    def need(self, m, what):
        if m is None:
            self.missing.append(what)
        return m

    def table(self, table, model):
        """A model's reproduced top-1 (ImageNet tables, 10-crop) or test error (table6) with its noise."""
        if table == "table6":
            m = table_measure(self.tables, self.runs, table, model, "error_mean", "single", "test error")
        else:
            m = table_measure(self.tables, self.runs, table, model, "top1", "tencrop", "top-1 error")
        return self.need(m, f"{model_label(model)} in {table}")

    def compare(self, a, b, op):
        if a and b:
            self.parts.append(compare(a, b, op))


def lower_training_error(e, low, high):
    """`low` ends with lower training error than `high` (final test errors as a note)."""
    a = e.need(final_train_error(e.runs, low), f"{model_label(low)} training history")
    b = e.need(final_train_error(e.runs, high), f"{model_label(high)} training history")
    if a and b:
        e.compare(a, b, "<")
        e.notes.append(
            f"final test error (not used for the verdict): {model_label(low)} "
            f"{final_test_error(e.runs, low):.2f}%, {model_label(high)} {final_test_error(e.runs, high):.2f}%"
        )


def depth_gain_cifar(e):
    depths = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
    ms = {d: e.table("table6", d) for d in depths}
    present = [d for d in depths if ms[d] is not None]
    if "resnet20" in present and "resnet110" in present:
        for a, b in zip(present, present[1:]):
            e.compare(ms[b], ms[a], "<=")
        e.compare(ms["resnet110"], ms["resnet20"], "<")


def degradation_imagenet(e):
    """Table 2's val top-1 and Figure 4's evidence, the training error: plain-18 below plain-34 in both."""
    e.compare(e.table("table2", "plain18"), e.table("table2", "plain34"), "<")
    lower_training_error(e, "plain18", "plain34")


def depth_gain_imagenet(e):
    m = {k: e.table("table2", k) for k in ("resnet18-A", "resnet34-A", "plain34")}
    e.compare(m["resnet34-A"], m["resnet18-A"], "<")
    e.compare(m["resnet34-A"], m["plain34"], "<")


def shortcut_options(e):
    m = {k: e.table("table3", k) for k in ("resnet34-C", "resnet34", "resnet34-A", "plain34")}
    e.compare(m["resnet34-C"], m["resnet34"], "<=")
    e.compare(m["resnet34"], m["resnet34-A"], "<=")
    for k in ("resnet34-A", "resnet34", "resnet34-C"):
        e.compare(m[k], m["plain34"], "<")


def small_responses(e):
    """Stage by stage (compare_responses): ResNets below plain nets of the same depth, deeper ResNets
    below shallower ones."""
    for res, plain in (("resnet20", "plain20"), ("resnet56", "plain56")):
        compare_responses(e, res, plain)
    deep = [d for d in ("resnet20", "resnet56", "resnet110") if response_measure(e.runs, d)]
    e.missing += [f"{model_label(d)} responses.csv" for d in ("resnet110",) if d not in deep]
    for a, b in zip(deep, deep[1:]):
        compare_responses(e, b, a)


def overfit_1202(e):
    tr = e.need(final_train_error(e.runs, "resnet1202"), "ResNet-1202 training history")
    e.compare(tr, threshold("the threshold", TRAIN_ERROR_LIMIT), "<")
    e.compare(e.table("table6", "resnet110"), e.table("table6", "resnet1202"), "<")


def ensemble_gain(e):
    ens, best = ensemble_measures(e.tables, e.runs)
    e.need(ens, "the ensemble row of table5")
    e.need(best, "ensemble members in table5")
    if ens and best:
        e.compare(ens, best, "<")
        if e.parts[-1]["pairing"] == "unpaired":
            e.notes.append(
                "the ensemble and its members are scored on the same images, but their scores were not "
                "found: this unpaired noise estimate is conservative"
            )


RULES = {
    "degradation_cifar": lambda e: lower_training_error(e, "plain20", "plain56"),
    "residual_fix_cifar": lambda e: lower_training_error(e, "resnet56", "plain56"),
    "depth_gain_cifar": depth_gain_cifar,
    "degradation_imagenet": degradation_imagenet,
    "depth_gain_imagenet": depth_gain_imagenet,
    "shortcut_options": shortcut_options,
    "small_responses": small_responses,
    "overfit_1202": overfit_1202,
    "ensemble_gain": ensemble_gain,
}


def check_rules(rules, claims):
    """Every claim has a rule and every rule a claim; else ReproError naming them."""
    ids = [c["id"] for c in claims]
    no_rule = [i for i in ids if i not in rules]
    no_claim = [i for i in rules if i not in ids]
    if no_rule or no_claim:
        raise ReproError(
            "claims.RULES does not match the claims of reference.yaml: "
            + "; ".join(
                [f"no rule for claim(s) {', '.join(no_rule)}"] * bool(no_rule)
                + [f"rule(s) for no claim: {', '.join(no_claim)}"] * bool(no_claim)
            )
        )


check_rules(RULES, reference()["claims"])


def claim_parts(cid, tables, runs):
    """(comparisons, missing things, notes) for one claim."""
    e = Evidence(tables, runs)
    if cid in RULES:
        RULES[cid](e)
    else:
        e.missing.append("a rule for this claim (unknown claim id)")
    return e.parts, e.missing, e.notes


# ---------------------------------------------------------------- verdicts


def reduced(runs_used, preset):
    """Why these runs cannot test a claim about the paper's fully trained networks ([] if they can):
    the preset, and every departure of a run's spec from the paper's protocol that the package's paper
    preset does not itself make (spec.paper_differences), with the models it concerns when not all."""
    reasons = {}
    if preset != "paper":
        reasons[f"preset '{preset}' is a reduced preset, not the paper's"] = None
    for r in runs_used:
        for key, ours, theirs in paper_differences(r.spec, r.metrics.get("processes")):
            reasons.setdefault(difference_text(key, ours, theirs), []).append(model_label(r.model))
    return with_models(reasons, {model_label(r.model) for r in runs_used})


def with_models(reasons, labels):
    """Each reason once, with the models it concerns when not all of `labels`."""
    return [
        text if models is None or set(models) == labels else f"{text} ({', '.join(dict.fromkeys(models))})"
        for text, models in reasons.items()
    ]


def protocol_notes(runs):
    """What every run of the report shares with the package's paper preset but not with the paper, named
    once (the report's method section) rather than in each verdict: the preset's built-in departures from
    the paper as written, its choices where the paper states nothing (with the values the runs used), and
    the arithmetic they trained in (spec.PRECISION_POLICY)."""
    notes = {}
    for r in runs.list:
        built_in = built_in_departures(r.spec["model"])
        for key, ours, theirs in protocol_differences(r.spec, r.metrics.get("processes")):
            if key == "bn_batch" and not stated(theirs):
                text = f"BatchNorm statistics over {ours} images (the paper: {theirs['says']})"
            elif (key, ours, theirs) in built_in:
                text = "built in: " + difference_text(key, ours, theirs)
            else:
                continue  # a reduction: named in the verdicts that rest on the run
            notes.setdefault(text, []).append(model_label(r.model))
        if r.precision == "bf16":
            notes.setdefault("trained in bf16 autocast, not the paper's fp32 (not a reduction: see below)", []).append(
                model_label(r.model)
            )
        if r.metrics.get("tf32"):
            notes.setdefault("fp32 operations may round to TF32 (metrics.json tf32)", []).append(model_label(r.model))
    return with_models(notes, {model_label(r.model) for r in runs.list})


def difference_text(key, ours, theirs):
    if key == "data.kind":
        return f"trained on {ours or 'unknown data'}, not {theirs}"
    if key == "max_iters":
        return f"{ours} training iterations, not the paper's {theirs}"
    if isinstance(theirs, dict) and "says" in theirs:
        return f"{key} {setting_text(ours)}, where the paper says: {theirs['says']}"
    return f"{key} {setting_text(ours)}, not the paper's {setting_text(theirs)}"


def setting_text(v):
    if isinstance(v, (dict, list)):
        return yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def scope_of(runs_used):
    """What a verdict rests on, in words: 'digits (8x8, upsampled to 16 px), 1,000 iterations, 2 seeds'."""
    iters = sorted({r.spec.get("max_iters") for r in runs_used if isinstance(r.spec.get("max_iters"), int)})
    seeds = sorted({str(r.seed) for r in runs_used})
    text = "on " + data_names(r.spec.get("data") for r in runs_used)
    if iters:
        text += f", {iters[0]:,}" + (f"-{iters[-1]:,}" if len(iters) > 1 else "") + " iterations"
    return text + (f", {len(seeds)} seeds" if len(seeds) > 1 else ", one seed")


REDUCED_MARK = " (reduced, not the paper's setting)"  # ends the scope of a verdict resting on a reduced run
WHY = {
    "holds": "every comparison agrees with the claim beyond noise",
    "does not hold": "a comparison contradicts the claim beyond noise",
    "too little data to say": "some comparisons are within noise",
}


def deciding(parts, says):
    """The comparison a verdict turns on: the first contradiction, the first within noise, or (holds) the
    agreement nearest its threshold."""
    if says == "does not hold":
        return next(p for p in parts if p["outcome"] == "contradicts")
    if says == "too little data to say":
        return next((p for p in parts if p["outcome"] == "within noise"), None)
    return min(parts, key=lambda p: abs(p["difference"]) / (p["critical"] * p["noise_std"] or 1e-12))


def value_format(unit):
    """How a measured value is written: error rates as 1.53%, other units (log ratios) to 3 digits."""
    return (lambda v: f"{v:.2f}%") if unit == "%" else (lambda v: f"{v:.3g}")


def summary_line(c):
    """One comparison in one line: 'ResNet-56 final training error 1.3% < plain-56 ... 45.1%: difference
    -43.8, beyond 2 sigma = 1.8'."""
    fmt = value_format(c["unit"])
    text = f"{c['a']['label']} {fmt(c['a']['value'])} {c['op']} {c['b']['label']} {fmt(c['b']['value'])}"
    if c["noise_std"] is None:
        return text + f": difference {c['difference']:+.3g}, noise unknown"
    where = "within" if c["outcome"] == "within noise" else "beyond"
    return (
        text
        + f": difference {c['difference']:+.3g}, {where} {c['critical']:.3g} sigma = {c['critical'] * c['noise_std']:.3g}"
    )


def judge(claim, tables, runs, preset):
    """The verdict on one claim of reference.yaml, with the comparisons and runs behind it."""
    parts, missing, notes = claim_parts(claim["id"], tables, runs)
    outcomes = [p["outcome"] for p in parts]
    if "contradicts" in outcomes:
        says = "does not hold"
    elif parts and all(o == "agrees" for o in outcomes) and not missing:
        says = "holds"
    else:
        says = "too little data to say"
    # the runs behind the comparisons, each once, in the order the comparisons name them
    sides = [set(p[side]["run_dirs"]) for p in parts for side in ("a", "b")]
    used = list({id(r): r for dirs in sides for r in runs.list if str(r.dir) in dirs}.values())
    why_reduced = reduced(used, preset) if parts else []
    if not parts:
        verdict, why, scope = "not tested in this run", "missing: " + ", ".join(missing), ""
    else:
        verdict, why = says, WHY[says]
        scope = scope_of(used) + (REDUCED_MARK if why_reduced else "")
        if why_reduced:
            why += "; reduced runs: " + "; ".join(why_reduced)
    if parts and missing:
        why += "; partly untested (missing: " + ", ".join(missing) + ")"
    return {
        "id": claim["id"],
        "source": claim.get("source", ""),
        "text": claim.get("text", ""),
        "verdict": verdict,
        "scope": scope,
        "verdict_text": f"{verdict}: {scope}" if scope else verdict,
        # the verdict in one line: the comparison it turns on (all of them: `comparisons`)
        "summary": summary_line(deciding(parts, says)) if parts and deciding(parts, says) else "",
        "numbers_say": says,
        "why": why,
        "missing": missing,
        "reduced": why_reduced,
        "notes": notes,
        "comparisons": parts,
    }
