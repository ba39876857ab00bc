"""The paper's claims (reference.yaml `claims:`) judged on a run: each claim's rule builds measures from
the runs and compares them (noise.py: the estimand, the noise, the tests and how a claim's comparisons
combine), and a verdict per claim, as plain data (html.py renders them).

Every claim has a rule in RULES (claim id -> function); the table is checked against reference.yaml
when this module loads, so a claim without a rule, or a rule without a claim, fails at once. Every
margin a rule uses (the smallest effect of interest) is declared in reference.yaml with its reason."""

import math
import re
import statistics

import numpy as np
import yaml

from resnet_repro.errors import ReproError
from resnet_repro.paper.catalogue import ARTIFACT, ENSEMBLE
from resnet_repro.paper.text import data_names, model_label, reference
from resnet_repro.report.noise import (
    Measure,
    binomial_std,
    combine,
    compare,
    contrast,
    pool,
    satterthwaite,
    slope_weights,
    threshold,
)
from resnet_repro.rundir import run_of_file
from resnet_repro.spec.build import built_in_departures, paper_differences, protocol_differences, stated

VERDICTS = ("holds", "does not hold", "not tested in this run", "too little data to say")
TRAIN_ERROR_LIMIT = 0.1  # overfit_1202: "training error < 0.1%"
TRAIN_WINDOWS = 5  # a run's own training-error noise: the spread of (at most) its last 5 logging windows
CIFAR_DEPTHS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


def seeds_of(text):
    """A table's `seeds` cell as a list: '0,1' -> ['0', '1'] (a lone seed read as a number, 0.0, -> ['0'])."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    if isinstance(text, float) and text.is_integer():
        return [str(int(text))]
    return [s.strip() for s in str(text).split(",") if s.strip()]


def depth(model):
    return int(re.search(r"\d+", model).group())


# ---------------------------------------------------------------- measures, from runs


def error_measure(label, runs, view, col="top1"):
    """The test or validation error (`col`: top1 or top5) of `view` of these runs of one model: a value per
    run, the images they were scored on, and where every run saved its scores of one image set, the runs x
    images matrix of per-image errors (for paired comparisons). None if no run has the view."""
    runs = [r for r in runs if r.evals.get(view, {}).get(col) is not None]
    if not runs:
        return None
    evals = [r.evals[view] for r in runs]
    n = min((e["n"] for e in evals if e.get("n")), default=None)
    m = Measure(label, [float(e[col]) for e in evals], n=n, runs=runs, over_images=True)
    saved = [r.image_errors(view) for r in runs]
    if all(s is not None for s in saved) and len({(s["images"], len(s["labels"])) for s in saved}) == 1:
        if saved[0]["images"] is not None:
            m.errors, m.images = np.stack([s[col] for s in saved]).astype(np.float64), saved[0]["images"]
            m.n = m.errors.shape[1]  # the images the per-image errors are over, recorded or not
    return m


def final_windows(history):
    """The training errors of the last logging windows of a run at its final learning rate (at most
    TRAIN_WINDOWS; the last 3 whatever their rate where fewer than 2 are at it)."""
    lr = history[-1].get("lr")
    tail = []
    for row in reversed(history):
        if row.get("lr") != lr or len(tail) == TRAIN_WINDOWS:
            break
        tail.append(float(row["train_error"]))
    return tail if len(tail) >= 2 else [float(r["train_error"]) for r in history[-3:]]


def train_error_measure(label, histories, window_images=None, runs=()):
    """Final training error: each run's last logging window (history rows), the seeds its unit of noise.
    A run's own noise is a floor under the seeds' variance: the binomial of the last window's images (a
    window is `window_images` training images) and the spread of its last windows at the final learning
    rate (their autocorrelation makes that spread an underestimate, harmless in a floor); never a stand-in
    for the seeds."""
    values = [float(h[-1]["train_error"]) for h in histories]
    floors = []
    for h, v in zip(histories, values):
        w = final_windows(h)
        spread = statistics.variance(w) if len(w) > 1 else 0.0
        binom = binomial_std(v, window_images) ** 2 if window_images else 0.0
        floors.append(max(spread, binom))
    return Measure(label, values, floor=statistics.fmean(floors), n=None, runs=list(runs))


def stage_means(run):
    """{stage: mean response std of its 3x3 layers} of one run (responses.csv); the stage of a layer is the
    `layerK` of its module (the stem is left out: one layer, the same in plain and residual nets)."""
    stages = {}
    for module, std in run.response_modules or []:
        m = re.match(r"layer(\d+)\.", module)
        if m:
            stages.setdefault(int(m.group(1)), []).append(std)
    return {k: statistics.fmean(v) for k, v in stages.items()}


def log_response(stages):
    """One number per run for Figure 7, from its {stage: mean response std}: the mean over stages of the
    log (a difference of two is the mean log ratio of their stages). None without stages or with a
    non-positive one."""
    if not stages or not all(math.isfinite(v) and v > 0 for v in stages.values()):
        return None
    return statistics.fmean(math.log(v) for v in stages.values())


class Evidence:
    """What a rule gathers for one claim: measures (with the pools a one-run model borrows from), the
    comparisons, the inputs it missed, notes."""

    def __init__(self, claim, tables, runs):
        self.claim, self.tables, self.runs = claim, tables, runs
        self.parts, self.missing, self.notes = [], [], []
        self.pools = {}
        # the claim's margins: its own, or (a claim given by id alone) those reference.yaml declares
        declared = claim.get("margins") or next(
            (c.get("margins") for c in reference()["claims"] if c["id"] == claim["id"]), None
        )
        self.margins = declared or {}

    def margin(self, name):
        if name not in self.margins:
            raise ReproError(f"reference.yaml: claim {self.claim['id']} declares no margin {name!r}")
        return float(self.margins[name])

    def need(self, m, what):
        if m is None:
            self.missing.append(what)
        return m

    def borrow(self, m, kind, family, build, binomial):
        """A one-run measure borrows the pooled seed variance of the family's models with several runs."""
        if m is not None and m.k == 1 and not m.fixed:
            key = (kind, family)
            if key not in self.pools:
                models = dict.fromkeys(r.model for r in self.runs.list if r.family == family)
                self.pools[key] = pool([build(model) for model in models], binomial)
            m.pool = self.pools[key]
        return m

    # the measures
    def table_runs(self, table, model):
        """The runs behind a reproduced row of a table (its `seeds` cell), [] if the row is missing."""
        if table not in self.tables:
            return []
        df = self.tables[table][1]
        rows = df[(df["model"] == model) & (df["source"] != "literature")]
        if rows.empty:
            return []
        return [r for r in (self.runs.get(model, s) for s in seeds_of(rows.iloc[0].get("seeds"))) if r is not None]

    def table(self, table, model):
        """A model's reproduced error as `table` shows it: top-1 of the table's view, over the row's seeds."""
        view, family = ARTIFACT[table].view, ARTIFACT[table].family
        what = "test error" if family == "cifar" else "top-1 error"
        m = error_measure(f"{model_label(model)} {what}", self.table_runs(table, model), view)
        build = lambda x: error_measure(x, self.runs.of_model(x), view)
        return self.need(self.borrow(m, f"error:{view}", family, build, True), f"{model_label(model)} in {table}")

    def train_error(self, model):
        m = self.need(self.train_error_of(model), f"{model_label(model)} training history")
        family = m.runs[0].family if m else None
        return self.borrow(m, "train_error", family, self.train_error_of, True)

    def train_error_of(self, model):
        rs = [r for r in self.runs.of_model(model) if r.history]
        if not rs:
            return None
        images = {r.spec.get("log_every", 0) * r.spec.get("batch_size", 0) for r in rs}
        label = f"{model_label(model)} final training error"
        return train_error_measure(label, [r.history for r in rs], min(images) or None, rs)

    def responses(self, model):
        m = self.need(self.responses_of(model), f"{model_label(model)} responses.csv")
        family = m.runs[0].family if m else None
        return self.borrow(m, "responses", family, self.responses_of, False)

    def responses_of(self, model):
        rs = [(r, log_response(stage_means(r))) for r in self.runs.of_model(model)]
        rs = [(r, v) for r, v in rs if v is not None]
        if not rs:
            return None
        label = f"{model_label(model)} log response std"
        return Measure(label, [v for _, v in rs], unit="log", runs=[r for r, _ in rs])

    # the comparisons
    def compare(self, a, b, op, margin, **kw):
        """Claim a op b (a difference a - b), with the named margin of the claim."""
        if a is not None and b is not None:
            self.add(compare([a, b], [1, -1], op, self.margin(margin), **kw), [a, b], [1, -1])

    def trend(self, ms, xs, op, margin, what):
        """Claim: the least-squares slope of the measures on xs is op 0 (three or more measures)."""
        have = [(m, x) for m, x in zip(ms, xs) if m is not None]
        if len(have) >= 3:
            names = ", ".join(m.label.split(" ")[0] for m, _ in have)
            label = f"{what} ({names}) {op} 0"
            ws = slope_weights([x for _, x in have])
            ms = [m for m, _ in have]
            self.add(compare(ms, ws, op, self.margin(margin), label=label), ms, ws)

    def add(self, c, ms, ws):
        c["measures"] = [measure_json(m, w) for m, w in zip(ms, ws)]
        self.parts.append(c)


def measure_json(m, weight):
    """A measure as the report shows it: its value over its runs, its own noise, and the runs."""
    _, parts, _, unmeasured = contrast([m], [1])
    std = satterthwaite(parts)[0] if parts and not unmeasured else None
    noise = "; ".join(p.what for p in parts) if parts and not unmeasured else "; ".join(r for _, r in unmeasured)
    return {
        "label": m.label,
        "value": m.value,
        "runs": m.k,
        "std": None if m.fixed else std,
        "noise": "a fixed threshold" if m.fixed else noise,
        "weight": weight,
        "run_ids": [r.run_id for r in m.runs],
        "run_dirs": [str(r.dir) for r in m.runs],
    }


# ---------------------------------------------------------------- the rules, one per claim


def lower_training_error(e, low, high):
    """`low` ends with lower training error than `high` (final test errors as a note)."""
    a, b = e.train_error(low), e.train_error(high)
    e.compare(a, b, "<", "training error")
    if a and b:
        test = lambda m: statistics.fmean(float(r.history[-1]["test_error"]) for r in m.runs)
        e.notes.append(
            f"final test error (not used for the verdict): {model_label(low)} {test(a):.2f}%, "
            f"{model_label(high)} {test(b):.2f}%"
        )


def depth_gain_cifar(e):
    """A trend: the slope of test error on log2(depth) over the depths present, and the endpoints."""
    ms = [e.table("table6", d) for d in CIFAR_DEPTHS]
    e.trend(ms, [math.log2(depth(d)) for d in CIFAR_DEPTHS], "<", "slope", "test error per doubling of depth")
    e.compare(ms[-1], ms[0], "<", "endpoints")


def degradation_imagenet(e):
    """Table 2's val top-1 and Figure 4's evidence, the training error: plain-18 below plain-34 in both."""
    e.compare(e.table("table2", "plain18"), e.table("table2", "plain34"), "<", "top-1 error")
    a, b = e.train_error("plain18"), e.train_error("plain34")
    e.compare(a, b, "<", "training error")


def depth_gain_imagenet(e):
    m = {k: e.table("table2", k) for k in ("resnet18-A", "resnet34-A", "plain34")}
    e.compare(m["resnet34-A"], m["resnet18-A"], "<", "top-1 error")
    e.compare(m["resnet34-A"], m["plain34"], "<", "top-1 error")


def shortcut_options(e):
    """C <= B <= A as two non-inferiority steps (no worse by more than the margin: such a chain can hold,
    unlike strict steps; a least-squares slope over three equally spaced options would ignore B), and each
    option below plain-34."""
    m = {k: e.table("table3", k) for k in ("resnet34-A", "resnet34", "resnet34-C", "plain34")}
    e.compare(m["resnet34"], m["resnet34-A"], "<=", "order")
    e.compare(m["resnet34-C"], m["resnet34"], "<=", "order")
    for k in ("resnet34-A", "resnet34", "resnet34-C"):
        e.compare(m[k], m["plain34"], "<", "plain")


def small_responses(e):
    """ResNets below plain nets of the same depth, and falling with depth (a trend over the ResNets'
    log2 depth and its endpoints): one number per run, the seeds its noise."""
    for res, plain in (("resnet20", "plain20"), ("resnet56", "plain56")):
        e.compare(e.responses(res), e.responses(plain), "<", "plain")
    deep = ["resnet20", "resnet56", "resnet110"]
    ms = [e.responses(d) for d in deep]
    e.trend(ms, [math.log2(depth(d)) for d in deep], "<", "slope", "log response std per doubling of depth")
    e.compare(ms[-1], ms[0], "<", "depth")


def overfit_1202(e):
    tr = e.train_error("resnet1202")
    e.compare(tr, threshold("the threshold", TRAIN_ERROR_LIMIT), "<", "threshold")
    e.compare(e.table("table6", "resnet110"), e.table("table6", "resnet1202"), "<", "test error")


def ensemble_gain(e):
    """The ensemble beats every member (an intersection-union test: no member is chosen on the images it
    is compared on), about these trained nets (conditional: the seeds' part left out), paired where the
    members' scores exist, with its difference and its noise from the same arrays."""
    ens, members = ensemble_measures(e.tables, e.runs)
    e.need(ens, "the ensemble row of table5")
    e.need(members or None, "ensemble members in table5")
    if ens and members:
        for m in members:
            e.compare(ens, m, "<", "top-5 error", conditional=True)
        if ens.errors is None:
            e.notes.append(
                "the ensemble and its members are scored on the same images, but their scores were not "
                "found: this unpaired noise estimate is conservative"
            )


def ensemble_measures(tables, runs):
    """(the ensemble's top-5 error, [each member's]) of table5's view: from the members' saved scores (the
    ensemble's errors from their mean softmax, the members' from their own, with one top-5 function), else
    from the table with the binomial noise of its counts."""
    if ENSEMBLE.name not in tables:
        return None, []
    df = tables[ENSEMBLE.name][1]
    ens_rows, rows = df[df["source"] == "paper"], df[df["source"] == "ours (ensemble member)"]
    if ens_rows.empty or rows.empty or not finite(ens_rows.iloc[0].get("top5")):
        return None, []
    view = ENSEMBLE.view
    member_runs = [member_run(runs, row) for _, row in rows.iterrows()]
    labels = [f"{model_label(row['model'])} top-5 error" for _, row in rows.iterrows()]
    ens_runs = [r for r in member_runs if r is not None]
    saved = [r.scores(view) if r is not None else None for r in member_runs]
    identity = {x[2] for x in saved if x is not None}
    if all(s is not None for s in saved) and len(identity) == 1 and None not in identity:
        y = saved[0][1]
        if all(np.array_equal(y, s[1]) for s in saved):
            probs = [softmax(s[0]) for s in saved]
            (images,) = identity
            per_image = lambda p: top5_errors(p, y)[None, :]
            ens_err = per_image(np.mean(probs, axis=0))
            ens = Measure("ensemble top-5 error", [100 * ens_err.mean()], n=len(y), errors=ens_err, images=images)
            ens.runs = ens_runs
            members = []
            for label, r, p in zip(labels, member_runs, probs):
                err = per_image(p)
                members.append(Measure(label, [100 * err.mean()], n=len(y), errors=err, images=images, runs=[r]))
            return ens, members
    n = min((x for x in (r.evals.get(view, {}).get("n") for r in ens_runs) if x), default=None)
    ens = Measure("ensemble top-5 error", [float(ens_rows.iloc[0]["top5"])], n=n, over_images=True, runs=ens_runs)
    members = [
        Measure(label, [float(row["top5"])], n=n, over_images=True, runs=[r] if r else [])
        for label, r, (_, row) in zip(labels, member_runs, rows.iterrows())
        if finite(row.get("top5"))
    ]
    return ens, members


def finite(v):
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def softmax(x):
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def top5_errors(probs, labels):
    """0/1 top-5 error per image: the label is not among the 5 highest (a stable sort: ties go to the
    lower class index, the same for the ensemble and its members)."""
    top = np.argsort(-probs, axis=1, kind="stable")[:, : min(5, probs.shape[1])]
    return (~(top == labels[:, None]).any(axis=1)).astype(np.float64)


def member_run(runs, row):
    """The run of an ensemble member row of table5 (its `members` cell is the member's scores file)."""
    run = run_of_file(str(row.get("members", "")))
    return runs.by_dir(run) if run else None


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


def claim_parts(claim, tables, runs):
    """(comparisons, missing things, notes) for one claim."""
    e = Evidence(claim, tables, runs)
    if claim["id"] in RULES:
        RULES[claim["id"]](e)
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
    "does not hold": "a comparison excludes an effect of the claim's margin beyond noise (Holm-corrected over the claim's comparisons)",
    "too little data to say": "some comparisons are within noise",
}


def deciding(parts, says):
    """The comparison a verdict turns on: the strongest contradiction, the first within noise, or (holds)
    the agreement nearest its threshold."""
    if says == "does not hold":
        return min((p for p in parts if p["outcome"] == "contradicts"), key=lambda p: p["p_contradicts"])
    if says == "too little data to say":
        return next((p for p in parts if p["outcome"] == "within noise"), None)
    return max(parts, key=lambda p: p["p_agrees"])


def value_format(unit):
    """How a measured value is written: error rates as 1.53%, other units (log responses) to 3 digits."""
    return (lambda v: f"{v:.2f}%") if unit == "%" else (lambda v: f"{v:.3g}")


def compared_text(c):
    """What a comparison compares, with the values: 'ResNet-56 final training error 1.30% < plain-56 final
    training error 45.10%', or a trend's own label."""
    ms = c.get("measures") or []
    if len(ms) != 2 or [m["weight"] for m in ms] != [1, -1]:
        return c["claim"]
    fmt = lambda m: value_format(c["unit"])(m["value"]) + (f" ({m['runs']} runs)" if m["runs"] > 1 else "")
    return f"{ms[0]['label']} {fmt(ms[0])} {c['op']} {ms[1]['label']} {fmt(ms[1])}"


def summary_line(c):
    """One comparison in one line: 'ResNet-56 final training error 1.30% < plain-56 ... 45.10%: difference
    -43.8, beyond 2 sigma = 1.8'; a contradiction says which effect it excludes."""
    text = compared_text(c) + f": difference {c['difference']:+.3g}"
    if c["noise_std"] is None or not c["noise_std"] > 0:
        return text + f", {c['unmeasured'] or 'noise unknown'}"
    band = f"{c['critical']:.3g} sigma = {c['critical'] * c['noise_std']:.3g}"
    if c["outcome"] == "contradicts":
        effect = (
            f"an improvement of {c['margin']:g} or more"
            if c["op"] == "<"
            else f"being worse by at most {c['margin']:g}"
        )
        return text + f", excludes {effect} beyond {band}"
    text += (", within " if c["outcome"] == "within noise" else ", beyond ") + band
    return text + (f" (smaller than the margin {c['margin']:g})" if c.get("below_margin") else "")


def judge(claim, tables, runs, preset):
    """The verdict on one claim of reference.yaml, with the comparisons and runs behind it."""
    parts, missing, notes = claim_parts(claim, tables, runs)
    says = combine(parts) if parts else "too little data to say"
    if says == "holds" and missing:
        says = "too little data to say"
    # the runs behind the comparisons, each once, in the order the comparisons name them
    sides = [set(m["run_dirs"]) for p in parts for m in p["measures"]]
    used = list({id(r): r for dirs in sides for r in runs.list if str(r.dir) in dirs}.values())
    why_reduced = reduced(used, preset) if parts else []
    if not parts:
        verdict, why, scope = "not tested in this run", "missing: " + ", ".join(missing), ""
    else:
        verdict, why = says, WHY[says]
        one_seed = [p["unmeasured"] for p in parts if p["unmeasured"] and p["outcome"] == "within noise"]
        if says == "too little data to say" and one_seed:
            why += f" ({one_seed[0]})"
        scope = scope_of(used) + (REDUCED_MARK if why_reduced else "")
        if why_reduced:
            why += "; reduced runs: " + "; ".join(why_reduced)
    if parts and missing:
        why += "; partly untested (missing: " + ", ".join(missing) + ")"
    turn = deciding(parts, says) if parts else None
    return {
        "id": claim["id"],
        "source": claim.get("source", ""),
        "text": claim.get("text", ""),
        "verdict": verdict,
        "scope": scope,
        "verdict_text": f"{verdict}: {scope}" if scope else verdict,
        # the verdict in one line: the comparison it turns on (all of them: `comparisons`)
        "summary": summary_line(turn) if turn else ("missing: " + ", ".join(missing) if missing else ""),
        "numbers_say": says,
        "why": why,
        "missing": missing,
        "reduced": why_reduced,
        "notes": notes,
        "comparisons": parts,
    }
