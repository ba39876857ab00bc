"""The paper's claims (reference.yaml `claims:`) judged on a run: measures with their noise,
comparisons, and a verdict per claim, as plain data (report_html renders them).

Every claim has a rule in RULES (claim id -> function); the table is checked against reference.yaml
when this module loads, so a claim without a rule, or a rule without a claim, fails at once."""

import math
import statistics
from dataclasses import dataclass, field

import yaml

from .errors import ReproError
from .paper import data_names, model_label, reference
from .rundir import run_of_file
from .spec import paper_differences

VERDICTS = ("holds", "does not hold", "not tested in this run", "too little data to say")
Z = 2.0  # a difference is "resolved" when it exceeds Z standard deviations of its noise (~95%)
TRAIN_ERROR_LIMIT = 0.1  # overfit_1202: "training error < 0.1%"


# ---------------------------------------------------------------- measurements and comparisons


@dataclass
class Measure:
    label: str
    value: float
    std: float = None  # noise, same unit as value
    noise: str = ""  # how std was obtained
    runs: list = field(default_factory=list)
    unit: str = "%"


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


def noise(value, n, seed_std, k):
    """(std, description): the sample std over seeds where k >= 2 runs exist (what a rerun would change,
    training included), else the binomial noise of an error rate on n images."""
    if finite(seed_std) and k and k >= 2:
        return float(seed_std), f"seed std over {k} runs: {float(seed_std):.2f}"
    b = binomial_std(value, n) if n else None
    if b is not None:
        return b, f"binomial on n={n}: {b:.2f} (one seed)"
    return None, "noise unknown (no evaluation size, one seed)"


def seeds_of(text):
    """A table's `seeds` cell as a list: '0,1' -> ['0', '1'] (a lone seed read as a number, 0.0, -> ['0'])."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return []
    if isinstance(text, float) and text.is_integer():
        return [str(int(text))]
    return [s.strip() for s in str(text).split(",") if s.strip()]


def table_measure(tables, runs, table, model, col, std_col, view, what):
    """A reproduced cell of a table (the mean over seeds) with its noise; None if the table or value is missing."""
    if table not in tables:
        return None
    df = tables[table][1]
    rows = df[(df["model"] == model) & (df["source"] != "literature")]
    if rows.empty or col not in rows.columns or not finite(rows.iloc[0][col]):
        return None
    row = rows.iloc[0]
    value = float(row[col])
    seeds = seeds_of(row.get("seeds"))
    behind = [runs.get(model, s) for s in seeds]
    ns = [r.evals.get(view, {}).get("n") for r in behind if r is not None]
    n = min((x for x in ns if x), default=None)
    std, how = noise(value, n, row.get(std_col) if std_col else None, len(seeds))
    return Measure(f"{model_label(model)} {what}", value, std, how, [r for r in behind if r is not None])


def final_train_error(runs, model):
    """Final training error (mean over seeds) from history.csv; n = images of the last logging window."""
    rs = [r for r in runs.of_model(model) if r.history]
    if not rs:
        return None
    values, ns = [], []
    for r in rs:
        h = r.history
        values.append(h[-1]["train_error"])
        window = h[-1]["iteration"] - (h[-2]["iteration"] if len(h) > 1 else 0)
        bs = r.spec.get("batch_size")
        ns.append(int(window * bs) if isinstance(bs, int) and window > 0 else None)
    value = statistics.fmean(values)
    n = min((x for x in ns if x), default=None)
    std, how = noise(value, n, statistics.stdev(values) if len(values) > 1 else None, len(values))
    return Measure(f"{model_label(model)} final training error", value, std, how, rs)


def final_test_error(runs, model):
    rs = [r for r in runs.of_model(model) if r.history]
    if not rs:
        return None
    return statistics.fmean(r.history[-1]["test_error"] for r in rs)


def responses_of(runs, model):
    """Per-layer response std of a model, averaged over its runs' responses.csv (layer by layer)."""
    rs = [r for r in runs.of_model(model) if r.responses]
    if not rs:
        return None, []
    length = min(len(r.responses) for r in rs)
    return [statistics.fmean(r.responses[i] for r in rs) for i in range(length)], rs


def response_measure(runs, model):
    layers, rs = responses_of(runs, model)
    if not layers:
        return None
    se = statistics.stdev(layers) / math.sqrt(len(layers)) if len(layers) > 1 else None
    return Measure(
        f"{model_label(model)} mean response std",
        statistics.fmean(layers),
        se,
        f"standard error over {len(layers)} layers",
        rs,
        unit="",
    )


def compare(a, b, op, paired=None):
    """Claim `a op b` (op '<' or '<='): a dict with the numbers and the outcome agrees/contradicts/within noise."""
    d = a.value - b.value
    if paired is not None:  # (diffs per layer): the std of the mean paired difference
        sd = statistics.stdev(paired) / math.sqrt(len(paired)) if len(paired) > 1 else None
        d = statistics.fmean(paired)
        pairing = f"paired over {len(paired)} layers"
    else:
        sd = math.hypot(a.std, b.std) if a.std is not None and b.std is not None else None
        pairing = "unpaired"
    if sd is None:
        outcome = "within noise"
    elif d > Z * sd:
        outcome = "contradicts"
    elif op == "<=" or d < -Z * sd:
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
        "pairing": pairing,
        "unit": a.unit,
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
    """(the ensemble's top-5 error, its best member's) from table5, with binomial noise."""
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
    std, how = noise(value, n, None, 1)
    ens = Measure("ensemble top-5 error", value, std, how, [r for _, r in member_runs if r is not None])
    row, r = min(member_runs, key=lambda x: float(x[0]["top5"]))
    value = float(row["top5"])
    std, how = noise(value, n, None, 1)
    best = Measure(f"best member ({model_label(row['model'])}) top-5 error", value, std, how, [r] if r else [])
    return ens, best


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
            m = table_measure(self.tables, self.runs, table, model, "error_mean", "error_std", "single", "test error")
        else:
            m = table_measure(self.tables, self.runs, table, model, "top1", "top1_std", "tencrop", "top-1 error")
        return self.need(m, f"{model_label(model)} in {table}")

    def compare(self, a, b, op, paired=None):
        if a and b:
            self.parts.append(compare(a, b, op, paired))


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
    for res, plain in (("resnet20", "plain20"), ("resnet56", "plain56")):
        a = e.need(response_measure(e.runs, res), f"{model_label(res)} responses.csv")
        b = e.need(response_measure(e.runs, plain), f"{model_label(plain)} responses.csv")
        if a and b:
            la, _ = responses_of(e.runs, res)
            lb, _ = responses_of(e.runs, plain)
            e.compare(a, b, "<", [x - y for x, y in zip(la, lb)] if len(la) == len(lb) else None)
    deep = [d for d in ("resnet20", "resnet56", "resnet110") if response_measure(e.runs, d)]
    e.missing += [f"{model_label(d)} responses.csv" for d in ("resnet110",) if d not in deep]
    for a, b in zip(deep, deep[1:]):
        e.compare(response_measure(e.runs, b), response_measure(e.runs, a), "<")


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
        e.notes.append(
            "the ensemble and its members are scored on the same images, so this unpaired noise "
            "estimate is conservative"
        )


RULES = {
    "degradation_cifar": lambda e: lower_training_error(e, "plain20", "plain56"),
    "residual_fix_cifar": lambda e: lower_training_error(e, "resnet56", "plain56"),
    "depth_gain_cifar": depth_gain_cifar,
    "degradation_imagenet": lambda e: e.compare(e.table("table2", "plain18"), e.table("table2", "plain34"), "<"),
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
    the preset, and every departure of a run's spec (and arithmetic) from the paper's protocol, with
    the models it concerns when not all of them."""
    reasons = {}
    if preset != "paper":
        reasons[f"preset '{preset}' is a reduced preset, not the paper's"] = None
    for r in runs_used:
        for key, ours, theirs in paper_differences(r.spec, r.precision):
            reasons.setdefault(difference_text(key, ours, theirs), []).append(model_label(r.model))
    labels = {model_label(r.model) for r in runs_used}
    return [
        text if models is None or set(models) == labels else f"{text} ({', '.join(dict.fromkeys(models))})"
        for text, models in reasons.items()
    ]


def difference_text(key, ours, theirs):
    if key == "data.kind":
        return f"trained on {ours or 'unknown data'}, not {theirs}"
    if key == "max_iters":
        return f"{ours} training iterations, not the paper's {theirs}"
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


WHY = {
    "holds": "every comparison agrees with the claim beyond noise",
    "does not hold": "a comparison contradicts the claim beyond noise",
    "too little data to say": "some comparisons are within noise",
}


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
        scope = scope_of(used) + (" (reduced, not the paper's setting)" if why_reduced else "")
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
        "numbers_say": says,
        "why": why,
        "missing": missing,
        "reduced": why_reduced,
        "notes": notes,
        "comparisons": parts,
    }
