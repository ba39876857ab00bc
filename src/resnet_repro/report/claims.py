"""The paper's claims (reference.yaml `claims:`) judged on a run: each claim's rule takes measures from
the runs (evidence.py) and compares them (noise.py: the estimand, the noise, the tests and how a
claim's comparisons combine), and a verdict per claim, as plain data (html.py renders them).

Every claim has a rule in RULES (claim id -> function); the table is checked against reference.yaml
when this module loads, so a claim without a rule, or a rule without a claim, fails at once. Every
margin a rule uses (the smallest effect of interest) is declared in reference.yaml with its reason."""

import math
import statistics

import yaml

from resnet_repro.errors import ReproError
from resnet_repro.paper.text import data_names, model_label, reference
from resnet_repro.report.evidence import Evidence, depth, ensemble_measures
from resnet_repro.report.noise import combine, threshold
from resnet_repro.spec.build import built_in_departures, paper_differences, protocol_differences, stated

VERDICTS = ("holds", "does not hold", "not tested in this run", "too little data to say")
TRAIN_ERROR_LIMIT = 0.1  # overfit_1202: "training error < 0.1%"
CIFAR_DEPTHS = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]


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
