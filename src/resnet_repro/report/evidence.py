"""The evidence a claim's rule compares, built from the runs and the tables: each model's error over
its seeds and test images, its training error, its layer responses (noise.Measure each, with the
seeds' pool where a model has one run), and the ensemble's top-5 error with its members' from their
saved scores."""

import math
import re
import statistics

import numpy as np

from resnet_repro.errors import ReproError
from resnet_repro.paper.catalogue import ARTIFACT, ENSEMBLE
from resnet_repro.paper.text import model_label, reference
from resnet_repro.report.noise import Measure, binomial_std, compare, contrast, pool, satterthwaite, slope_weights
from resnet_repro.rundir import run_of_file

TRAIN_WINDOWS = 5  # a run's own training-error noise: the spread of (at most) its last 5 logging windows


def seeds_of(text):
    """A table's `seeds` cell as a list: '0,1' -> ['0', '1'] (a lone seed read as a number, 0.0, -> ['0'])."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    if isinstance(text, float) and text.is_integer():
        return [str(int(text))]
    return [s.strip() for s in str(text).split(",") if s.strip()]


def depth(model):
    return int(re.search(r"\d+", model).group())


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
