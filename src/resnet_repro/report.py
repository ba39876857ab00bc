"""The reproduction report: every figure and table, the provenance of every number, and a verdict
on each claim of the paper (reference.yaml `claims:`), as one self-contained HTML file, a PDF, and
a JSON file with the same verdicts and provenance for machines.

Inputs are the workflow's own products: results/table*.csv (paper vs reproduced, from `table`),
reports/figure*.png (from `figure`), and the training run directories (spec.yaml, history.csv,
eval/<view>/metrics.json, responses.csv, mlflow.json). The MLflow store, when reachable, adds each
run's git commit, config hash and status, and the report run of each figure and table.

Verdicts (holds / does not hold / not tested in this run / too little data to say) follow one rule,
written out in the report itself (METHOD below): a claim is a set of comparisons; a difference counts
only when it exceeds Z times its noise; a verdict names the data and scale of the runs it rests on
and says when they are reduced (not the paper's setting).

pandas, matplotlib and mlflow are imported inside functions only: the CLI imports this module for
every command."""

import base64
import datetime
import html
import json
import math
import numbers
import os
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .errors import ReproError
from .figures import FIGURE_FAMILY, data_names, read_csv, read_spec, reference
from .figures import caption as figure_caption
from .names import parse_model_name
from .spec import paper_differences

VERDICTS = ("holds", "does not hold", "not tested in this run", "too little data to say")
Z = 2.0  # a difference is "resolved" when it exceeds Z standard deviations of its noise (~95%)
TRAIN_ERROR_LIMIT = 0.1  # overfit_1202: "training error < 0.1%"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-quic",
    "--no-pdf-header-footer",
]

METHOD = f"""
<p>Each claim of the paper is broken into comparisons between two measured numbers (or a number and a
threshold). Every number carries a noise estimate &sigma;:</p>
<ul>
<li><b>seed noise</b> where a model was trained with two or more seeds: the sample standard deviation over
the seeds (the per-run std, not the smaller std of the mean: conservative), since a rerun changes the
training as well as the evaluation;</li>
<li>otherwise the <b>binomial noise of an error rate</b>: an error of <i>p</i>% measured on <i>n</i> images has
standard deviation &radic;(<i>p</i>(100&minus;<i>p</i>)/<i>n</i>) percentage points (test/validation errors: <i>n</i> = size
of the evaluation split, from <code>eval/&lt;view&gt;/metrics.json</code>; final training errors: <i>n</i> = the images
seen in the last logging window of <code>history.csv</code>; <i>p</i> is taken as at least one image in <i>n</i>, so
that no error on a few images does not count as certainty).</li>
</ul>
<p>Layer responses (Figure 7) are compared by the mean response std over layers, with the standard error over
layers as &sigma; (paired layer by layer when both nets have the same number of layers).</p>
<p>A difference <i>d</i> = <i>a</i> &minus; <i>b</i> has &sigma;<sub>d</sub> = &radic;(&sigma;<sub>a</sub>&sup2; + &sigma;<sub>b</sub>&sup2;); it is
<b>resolved</b> when |<i>d</i>| &gt; {Z:g}&sigma;<sub>d</sub>. A strict claim (<i>a</i> &lt; <i>b</i>) <i>agrees</i> when resolved in its
direction and <i>contradicts</i> when resolved against it; a non-strict claim (<i>a</i> &le; <i>b</i>) agrees unless
contradicted. Unresolved comparisons are <i>within noise</i>.</p>
<p>The verdict: <b>not tested in this run</b> when the runs or tables a claim needs are not part of this run;
else <b>does not hold</b> if any comparison contradicts the claim, <b>holds</b> if every comparison agrees, and
<b>too little data to say</b> when some are within noise. A verdict is about the runs it rests on, on
whatever data and at whatever scale they were trained, and it says which: the data set, image size and
iterations, marked <b>reduced</b> when they differ from the paper's setting in anything: a preset other than
<code>paper</code>, or any protocol setting of a run's spec other than the paper's for its model (data set,
image size, augmentation, batch, learning rate and schedule, weight decay, warm-up, BatchNorm batch,
iterations, arithmetic), each named in the verdict. A reduced verdict says what happens at that scale;
it neither confirms nor refutes the paper's numbers for its fully trained networks.</p>
"""


# ---------------------------------------------------------------- inputs


@dataclass
class Run:
    dir: Path
    model: str  # canonical name (tables use the same)
    seed: object
    spec: dict
    history: list = field(default_factory=list)
    evals: dict = field(default_factory=dict)  # view -> {top1, top5, n}
    responses: list = None  # std per layer, in layer order
    mlflow: dict = None  # RUN/mlflow.json
    store: dict = None  # tags/params of the run in the MLflow store
    precision: str = None  # what training computed in (metrics.json)

    @property
    def run_id(self):
        return (self.mlflow or {}).get("run_id")

    @property
    def family(self):
        return parse_model_name(self.model).family


def _canonical(name):
    return parse_model_name(name).name


def read_run(run_dir):
    run_dir = Path(run_dir)
    spec = read_spec(run_dir)
    run = Run(run_dir, _canonical(spec["model"]), spec.get("seed"), spec)
    if (run_dir / "history.csv").is_file():
        run.history = read_csv(run_dir / "history.csv", ["iteration", "train_error", "test_error"])
    for path in sorted(run_dir.glob("eval/*/metrics.json")):
        try:
            views = json.loads(path.read_text())["views"]
            for view, v in views.items():
                run.evals[view] = {
                    "top1": float(v["top1_error"]),
                    "top5": float(v["top5_error"]),
                    "n": int(v["n"]) if v.get("n") else None,
                }
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ReproError(f"{path} is malformed: {e.__class__.__name__}: {e}") from None
    if (run_dir / "metrics.json").is_file():
        try:
            run.precision = json.loads((run_dir / "metrics.json").read_text()).get("precision")
        except (OSError, ValueError, AttributeError) as e:
            raise ReproError(f"{run_dir / 'metrics.json'} is malformed: {e}") from None
    if (run_dir / "responses.csv").is_file():
        rows = read_csv(run_dir / "responses.csv", ["layer", "std"])
        run.responses = [r["std"] for r in sorted(rows, key=lambda r: r["layer"])]
    if (run_dir / "mlflow.json").is_file():
        try:
            run.mlflow = json.loads((run_dir / "mlflow.json").read_text())
        except (OSError, ValueError) as e:
            raise ReproError(f"{run_dir / 'mlflow.json'} is malformed: {e}") from None
    return run


class Runs:
    """The run directories given, by (model, seed) and by directory."""

    def __init__(self, run_dirs):
        self.list, self.by_key = [], {}
        for d in dict.fromkeys(str(Path(r)) for r in run_dirs):
            r = read_run(d)
            key = (r.model, str(r.seed))
            if key in self.by_key:
                raise ReproError(f"runs {self.by_key[key].dir} and {r.dir} are both {r.model} seed {r.seed}")
            self.by_key[key] = r
            self.list.append(r)

    def get(self, model, seed):
        return self.by_key.get((model, str(seed)))

    def of_model(self, model):
        return [r for r in self.list if r.model == model]

    def by_dir(self, path):
        path = Path(path).resolve()
        return next((r for r in self.list if r.dir.resolve() == path), None)


def read_tables(paths):
    import pandas as pd

    tables = {}
    for p in map(Path, paths):
        try:
            tables[p.stem] = (p, pd.read_csv(p, dtype={"seeds": str, "members": str}))
        except FileNotFoundError:
            raise ReproError(f"table {p} does not exist") from None
        except (OSError, ValueError) as e:
            raise ReproError(f"cannot read table {p}: {e}") from None
        if "model" not in tables[p.stem][1].columns or "source" not in tables[p.stem][1].columns:
            raise ReproError(f"{p} is not a table from `resnet-repro table` (no model/source columns)")
    return dict(sorted(tables.items()))


# ---------------------------------------------------------------- provenance


def code_commit():
    """The git commit of the code making the report: the repository holding this package (an editable
    install), else the working directory's; '+dirty' when it has uncommitted changes."""
    for where in (Path(__file__).resolve().parent, Path.cwd()):
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, cwd=where)
            if out.returncode == 0 and out.stdout.strip():
                dirty = subprocess.run(
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    capture_output=True,
                    text=True,
                    timeout=10,
                    cwd=where,
                ).stdout.strip()
                return out.stdout.strip() + ("+dirty" if dirty else "")
        except (OSError, subprocess.TimeoutExpired):
            pass
    return "unknown"


def _files_digest(files):
    """The digest `track report` tags a report run with (artifacts_sha256)."""
    import hashlib

    from .tracking import sha256

    return hashlib.sha256("".join(f"{f.name}:{sha256(f)}\n" for f in files).encode()).hexdigest()


def read_store(uri, runs, artifacts):
    """Look the runs and the figure/table report runs up in the MLflow store (read only).
    `artifacts`: {name: [files as `track report` logged them]}. Returns (reachable, note, {name: report
    run info}); fills run.store."""
    from .tracking import _quote, client, experiment_arg, reports_experiment

    try:
        c = client(uri)
    except ReproError as e:
        return False, str(e), {}
    try:
        from mlflow.exceptions import MlflowException

        for r in runs.list:
            if r.run_id:
                try:
                    got = c.get_run(r.run_id)
                    r.store = {
                        "tags": dict(got.data.tags),
                        "params": dict(got.data.params),
                        "status": got.info.status,
                        "experiment_id": got.info.experiment_id,
                        "name": got.info.run_name,
                    }
                except MlflowException:
                    r.store = {"missing": True}
        reports = {}
        # the reports experiment beside the trainings' (one per preset and data)
        train_exp = next((r.store["experiment_id"] for r in runs.list if r.store and "experiment_id" in r.store), None)
        name = c.get_experiment(train_exp).name if train_exp else experiment_arg()
        exp = c.get_experiment_by_name(reports_experiment(name))
        for name, files in artifacts.items():
            if exp is None or not all(f.is_file() for f in files):
                continue
            digest = _files_digest(files)
            found = c.search_runs(
                [exp.experiment_id],
                f"tags.artifact = {_quote(name)} and "
                f"tags.artifacts_sha256 = '{digest}' and attributes.status = 'FINISHED'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if found:
                t = found[0].data.tags
                reports[name] = {
                    "run_id": found[0].info.run_id,
                    "experiment_id": exp.experiment_id,
                    "source_run_ids": [s for s in t.get("source_run_ids", "").split(",") if s],
                    "git_commit": t.get("git_commit", "unknown"),
                    "preset": t.get("preset"),
                }
            else:
                reports[name] = {"run_id": None}
        return True, None, reports
    except MlflowException as e:
        return False, f"MLflow: {str(e.message).splitlines()[0]}", {}


# ---------------------------------------------------------------- measurements and comparisons


@dataclass
class Measure:
    label: str
    value: float
    std: float = None  # noise, same unit as value
    noise: str = ""  # how std was obtained
    runs: list = field(default_factory=list)
    unit: str = "%"


def _finite(v):
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


def _noise(value, n, seed_std, k):
    """(std, description): the sample std over seeds where k >= 2 runs exist (what a rerun would change,
    training included), else the binomial noise of an error rate on n images."""
    if _finite(seed_std) and k and k >= 2:
        return float(seed_std), f"seed std over {k} runs: {float(seed_std):.2f}"
    b = binomial_std(value, n) if n else None
    if b is not None:
        return b, f"binomial on n={n}: {b:.2f} (one seed)"
    return None, "noise unknown (no evaluation size, one seed)"


def _label(model):
    m = parse_model_name(model)
    kind = "ResNet" if m.residual else "plain"
    shortcut = m.residual and m.family == "imagenet" and m.depth < 50  # the paper's 50/101/152 are all option B
    return f"{kind}-{m.depth}" + (f"-{m.shortcut}" if shortcut else "")


def _seeds(text):
    """'0,1' -> ['0', '1'] (a lone seed read as a number, 0.0, -> ['0'])."""
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
    if rows.empty or col not in rows.columns or not _finite(rows.iloc[0][col]):
        return None
    row = rows.iloc[0]
    value = float(row[col])
    seeds = _seeds(row.get("seeds"))
    behind = [runs.get(model, s) for s in seeds]
    ns = [r.evals.get(view, {}).get("n") for r in behind if r is not None]
    n = min((x for x in ns if x), default=None)
    std, how = _noise(value, n, row.get(std_col) if std_col else None, len(seeds))
    return Measure(f"{_label(model)} {what}", value, std, how, [r for r in behind if r is not None])


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
    std, how = _noise(value, n, statistics.stdev(values) if len(values) > 1 else None, len(values))
    return Measure(f"{_label(model)} final training error", value, std, how, rs)


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
        f"{_label(model)} mean response std",
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
        how = f"paired over {len(paired)} layers"
    else:
        sd = math.hypot(a.std, b.std) if a.std is not None and b.std is not None else None
        how = "unpaired"
    if sd is None:
        outcome = "within noise"
    elif d > Z * sd:
        outcome = "contradicts"
    elif op == "<=" or d < -Z * sd:
        outcome = "agrees"
    else:
        outcome = "within noise"
    u = a.unit
    fmt = (lambda v: f"{v:.2f}{u}") if u == "%" else (lambda v: f"{v:.3g}")
    sd_txt = "unknown" if sd is None else fmt(Z * sd).rstrip("%")
    text = (
        f"{a.label} {fmt(a.value)} (&sigma; {_fmt_std(a)}) {html.escape(op)} {b.label} {fmt(b.value)} "
        f"(&sigma; {_fmt_std(b)}): difference {d:+.3g}, {Z:g}&sigma;<sub>d</sub> = {sd_txt} ({how}) &rarr; "
        f"<b>{outcome}</b>"
    )
    return {
        "claim": f"{a.label} {op} {b.label}",
        "a": _measure_json(a),
        "b": _measure_json(b),
        "op": op,
        "difference": d,
        "noise_std": sd,
        "outcome": outcome,
        "html": text,
    }


def _fmt_std(m):
    return "unknown" if m.std is None else f"{m.std:.3g}"


def _measure_json(m):
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


# ---------------------------------------------------------------- claims


def _reduced(runs_used, preset):
    """Why these runs cannot test a claim about the paper's fully trained networks ([] if they can):
    the preset, and every departure of a run's spec (and arithmetic) from the paper's protocol, with
    the models it concerns when not all of them."""
    reasons = {}
    if preset != "paper":
        reasons[f"preset '{preset}' is a reduced preset, not the paper's"] = None
    for r in runs_used:
        for key, ours, theirs in paper_differences(r.spec, r.precision):
            reasons.setdefault(_difference_text(key, ours, theirs), []).append(_label(r.model))
    labels = {_label(r.model) for r in runs_used}
    return [
        text if models is None or set(models) == labels else f"{text} ({', '.join(dict.fromkeys(models))})"
        for text, models in reasons.items()
    ]


def _difference_text(key, ours, theirs):
    if key == "data.kind":
        return f"trained on {ours or 'unknown data'}, not {theirs}"
    if key == "max_iters":
        return f"{ours} training iterations, not the paper's {theirs}"
    return f"{key} {_setting_text(ours)}, not the paper's {_setting_text(theirs)}"


def _setting_text(v):
    if isinstance(v, (dict, list)):
        return yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
    return "none" if v is None else str(v).lower() if isinstance(v, bool) else str(v)


def _claim_parts(cid, tables, runs):
    """(comparisons, missing things, notes) for one claim."""
    parts, missing, notes = [], [], []

    def need(m, what):
        if m is None:
            missing.append(what)
        return m

    def lower_training_error(low, high):
        """Claim: `low` ends with lower training error than `high` (final test errors as a note)."""
        a = need(final_train_error(runs, low), f"{_label(low)} training history")
        b = need(final_train_error(runs, high), f"{_label(high)} training history")
        if a and b:
            parts.append(compare(a, b, "<"))
            notes.append(
                f"final test error (not used for the verdict): {_label(low)} "
                f"{final_test_error(runs, low):.2f}%, {_label(high)} {final_test_error(runs, high):.2f}%"
            )

    if cid == "degradation_cifar":
        lower_training_error("plain20", "plain56")
    elif cid == "residual_fix_cifar":
        lower_training_error("resnet56", "plain56")
    elif cid == "depth_gain_cifar":
        depths = ["resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]
        ms = {
            d: table_measure(tables, runs, "table6", d, "error_mean", "error_std", "single", "test error")
            for d in depths
        }
        present = [d for d in depths if ms[d] is not None]
        missing += [f"{_label(d)} in table6" for d in depths if ms[d] is None]
        if "resnet20" in present and "resnet110" in present:
            for a, b in zip(present, present[1:]):
                parts.append(compare(ms[b], ms[a], "<="))
            parts.append(compare(ms["resnet110"], ms["resnet20"], "<"))
    elif cid == "degradation_imagenet":
        p18 = need(
            table_measure(tables, runs, "table2", "plain18", "top1", "top1_std", "tencrop", "top-1 error"),
            "plain-18 in table2",
        )
        p34 = need(
            table_measure(tables, runs, "table2", "plain34", "top1", "top1_std", "tencrop", "top-1 error"),
            "plain-34 in table2",
        )
        if p18 and p34:
            parts.append(compare(p18, p34, "<"))
    elif cid == "depth_gain_imagenet":
        m = {
            k: need(
                table_measure(tables, runs, "table2", k, "top1", "top1_std", "tencrop", "top-1 error"),
                f"{_label(k)} in table2",
            )
            for k in ("resnet18-A", "resnet34-A", "plain34")
        }
        if m["resnet34-A"] and m["resnet18-A"]:
            parts.append(compare(m["resnet34-A"], m["resnet18-A"], "<"))
        if m["resnet34-A"] and m["plain34"]:
            parts.append(compare(m["resnet34-A"], m["plain34"], "<"))
    elif cid == "shortcut_options":
        m = {
            k: need(
                table_measure(tables, runs, "table3", k, "top1", "top1_std", "tencrop", "top-1 error"),
                f"{_label(k)} in table3",
            )
            for k in ("resnet34-C", "resnet34", "resnet34-A", "plain34")
        }
        if m["resnet34-C"] and m["resnet34"]:
            parts.append(compare(m["resnet34-C"], m["resnet34"], "<="))
        if m["resnet34"] and m["resnet34-A"]:
            parts.append(compare(m["resnet34"], m["resnet34-A"], "<="))
        for k in ("resnet34-A", "resnet34", "resnet34-C"):
            if m[k] and m["plain34"]:
                parts.append(compare(m[k], m["plain34"], "<"))
    elif cid == "small_responses":
        for res, plain in (("resnet20", "plain20"), ("resnet56", "plain56")):
            a, b = response_measure(runs, res), response_measure(runs, plain)
            need(a, f"{_label(res)} responses.csv")
            need(b, f"{_label(plain)} responses.csv")
            if a and b:
                la, _ = responses_of(runs, res)
                lb, _ = responses_of(runs, plain)
                paired = [x - y for x, y in zip(la, lb)] if len(la) == len(lb) else None
                parts.append(compare(a, b, "<", paired))
        deep = [d for d in ("resnet20", "resnet56", "resnet110") if response_measure(runs, d)]
        missing += [f"{_label(d)} responses.csv" for d in ("resnet110",) if d not in deep]
        for a, b in zip(deep, deep[1:]):
            parts.append(compare(response_measure(runs, b), response_measure(runs, a), "<"))
    elif cid == "overfit_1202":
        tr = need(final_train_error(runs, "resnet1202"), "ResNet-1202 training history")
        if tr:
            parts.append(compare(tr, threshold("the threshold", TRAIN_ERROR_LIMIT), "<"))
        e110 = need(
            table_measure(tables, runs, "table6", "resnet110", "error_mean", "error_std", "single", "test error"),
            "ResNet-110 in table6",
        )
        e1202 = need(
            table_measure(tables, runs, "table6", "resnet1202", "error_mean", "error_std", "single", "test error"),
            "ResNet-1202 in table6",
        )
        if e110 and e1202:
            parts.append(compare(e110, e1202, "<"))
    elif cid == "ensemble_gain":
        ens, best = _ensemble_measures(tables, runs)
        need(ens, "the ensemble row of table5")
        need(best, "ensemble members in table5")
        if ens and best:
            parts.append(compare(ens, best, "<"))
            notes.append(
                "the ensemble and its members are scored on the same images, so this unpaired noise "
                "estimate is conservative"
            )
    else:
        missing.append("a rule for this claim (unknown claim id)")
    return parts, missing, notes


def _ensemble_measures(tables, runs):
    if "table5" not in tables:
        return None, None
    df = tables["table5"][1]
    ens_rows = df[df["source"] == "paper"]
    members = df[df["source"] == "ours (ensemble member)"]
    if ens_rows.empty or members.empty or not _finite(ens_rows.iloc[0].get("top5")):
        return None, None
    member_runs = []
    for _, row in members.iterrows():
        path = Path(str(row.get("members", "")))
        r = runs.by_dir(path.parents[2]) if len(path.parents) > 2 else None
        member_runs.append((row, r))
    ns = [r.evals.get("multiscale", {}).get("n") for _, r in member_runs if r is not None]
    n = min((x for x in ns if x), default=None)
    value = float(ens_rows.iloc[0]["top5"])
    std, how = _noise(value, n, None, 1)
    ens = Measure("ensemble top-5 error", value, std, how, [r for _, r in member_runs if r is not None])
    row, r = min(member_runs, key=lambda x: float(x[0]["top5"]))
    value = float(row["top5"])
    std, how = _noise(value, n, None, 1)
    best = Measure(f"best member ({_label(row['model'])}) top-5 error", value, std, how, [r] if r else [])
    return ens, best


def scope_of(runs_used):
    """What a verdict rests on, in words: 'digits (8x8, upsampled to 16 px), 1,000 iterations, 2 seeds'."""
    iters = sorted({r.spec.get("max_iters") for r in runs_used if isinstance(r.spec.get("max_iters"), int)})
    seeds = sorted({str(r.seed) for r in runs_used})
    text = "on " + data_names(r.spec.get("data") for r in runs_used)
    if iters:
        text += f", {iters[0]:,}" + (f"-{iters[-1]:,}" if len(iters) > 1 else "") + " iterations"
    return text + (f", {len(seeds)} seeds" if len(seeds) > 1 else ", one seed")


def judge(claim, tables, runs, preset):
    parts, missing, notes = _claim_parts(claim["id"], tables, runs)
    outcomes = [p["outcome"] for p in parts]
    if "contradicts" in outcomes:
        says = "does not hold"
    elif parts and all(o == "agrees" for o in outcomes) and not missing:
        says = "holds"
    else:
        says = "too little data to say"
    used = list({id(r): r for p in parts for side in ("a", "b") for r in _runs_of(p[side], runs)}.values())
    reduced = _reduced(used, preset) if parts else []
    if not parts:
        verdict, why, scope = "not tested in this run", "missing: " + ", ".join(missing), ""
    else:
        verdict = says
        why = {
            "holds": "every comparison agrees with the claim beyond noise",
            "does not hold": "a comparison contradicts the claim beyond noise",
            "too little data to say": "some comparisons are within noise",
        }[says]
        scope = scope_of(used) + (" (reduced, not the paper's setting)" if reduced else "")
        if reduced:
            why += "; reduced runs: " + "; ".join(reduced)
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
        "reduced": reduced,
        "notes": notes,
        "comparisons": parts,
    }


def _runs_of(measure_json, runs):
    dirs = set(measure_json["run_dirs"])
    return [r for r in runs.list if str(r.dir) in dirs]


# ---------------------------------------------------------------- HTML

CSS = """
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 13px; margin: 1.5em auto; max-width: 1250px;
       color: #222; line-height: 1.35; }
h1 { font-size: 22px; margin-bottom: 0.2em; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; margin-top: 1.6em; }
h3 { font-size: 15px; margin-bottom: 0.3em; }
.banner { background: #fde8e8; border: 1px solid #e0a0a0; color: #8a1010; padding: 0.6em 0.9em; margin: 0.8em 0;
          font-weight: bold; }
.banner.ok { background: #e8f4e8; border-color: #9c9; color: #155015; }
table { border-collapse: collapse; margin: 0.4em 0 0.8em 0; font-size: 11px; }
th, td { border: 1px solid #ccc; padding: 2px 5px; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th.paper, td.paper { background: #eef3fb; } th.ours, td.ours { background: #eefaee; }
th.diff, td.diff { background: #fff6e0; font-weight: bold; }
tr.literature td { color: #777; }
code { font-size: 11px; } .ids code { font-size: 10px; }
.verdict { display: inline-block; padding: 1px 7px; border-radius: 9px; font-weight: bold; white-space: nowrap; }
.v-holds { background: #cdebcd; color: #105010; } .v-does-not-hold { background: #f6c9c9; color: #801010; }
.v-too-little-data-to-say { background: #fbe7b5; color: #6b4a00; } .v-not-tested-in-this-run { background: #ddd; color: #444; }
.claims td { font-size: 12px; } .small { font-size: 11px; color: #555; }
figure { margin: 0.5em 0 1.2em 0; break-inside: avoid; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 12px; }
section.table { break-inside: avoid-page; }
@page { size: A4 landscape; margin: 10mm; }
@media print { body { max-width: none; margin: 0; font-size: 11px; } h2 { break-before: auto; } }
"""


def _e(v):
    return html.escape(str(v))


def _slug(text):
    return text.replace(" ", "-")


def _badge(verdict):
    return f'<span class="verdict v-{_slug(verdict)}">{_e(verdict)}</span>'


def _short(run_id):
    return run_id[:8] if run_id else "untracked"


def _id_link(run_id):
    if not run_id:
        return "<code>untracked</code>"
    return f'<a href="#run-{_e(run_id)}"><code title="{_e(run_id)}">{_e(run_id[:8])}</code></a>'


def _column_class(col):
    if col.endswith("_paper") or col in ("paper_split",):
        return "paper"
    if col.endswith("_diff") or col == "diff":
        return "diff"
    if (
        col in ("top1", "top5", "error", "error_best", "error_mean", "params_m")
        or col.endswith("_std")
        and not col.startswith("std_")
    ):
        return "ours"
    return ""


def _cell(v, col):
    import pandas as pd

    if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA:
        return ""
    if isinstance(v, float):
        if col in ("layers", "n_runs") and v.is_integer():
            return str(int(v))
        if col.startswith("params_m"):
            return f"{v:.3f}"
        return f"{v:+.2f}" if _column_class(col) == "diff" else f"{v:.2f}"
    return _e(v)


def _row_run_ids(name, row, runs):
    """The MLflow run ids behind one table row."""
    if row["source"] == "literature":
        return None
    if name == "table5":
        if row["source"] == "ours (ensemble member)":
            path = Path(str(row.get("members", "")))
            r = runs.by_dir(path.parents[2]) if len(path.parents) > 2 else None
            return [r.run_id if r else None]
        models = [m.strip() for m in str(row.get("members", "")).split(" + ") if m.strip()]
        return [getattr(runs.get(m, s), "run_id", None) for m, s in zip(models, _seeds(row.get("seeds")))]
    return [getattr(runs.get(row["model"], s), "run_id", None) for s in _seeds(row.get("seeds"))]


def table_html(name, path, df, runs, report_run):
    from .tables import DIFF_NOTE, NOTES, table_data

    cols = list(df.columns)
    head = "".join(f'<th class="{_column_class(c)}">{_e(c)}</th>' for c in cols) + "<th>MLflow runs</th>"
    body = []
    for _, row in df.iterrows():
        ids = _row_run_ids(name, row, runs)
        ids_html = "" if ids is None else " ".join(_id_link(i) for i in ids) or "not run"
        cells = "".join(
            f'<td class="{_column_class(c)}{" num" if isinstance(row[c], numbers.Number) else ""}">'
            f"{_cell(row[c], c)}</td>"
            for c in cols
        )
        body.append(f'<tr class="{_e(row["source"])}">{cells}<td class="ids">{ids_html}</td></tr>')
    title = f"Table {name[5:]}" if name.startswith("table") else name
    import re

    notes = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", _e(NOTES.get(name, "")))
    notes = re.sub(r"`(.+?)`", r"<code>\1</code>", notes)
    notes = re.sub(r"\*(\w[^*]*?)\*", r"<i>\1</i>", notes)
    diff = (
        _e(DIFF_NOTE[name])
        if name in DIFF_NOTE
        else "Differences (<code>*_diff</code>) are reproduced (mean over seeds) minus paper."
    )
    rep = _report_run_html(report_run)
    data = table_data(df)
    data = f"<b>Data: {_e(data)}.</b> " if data else ""
    return (
        f'<section class="table" id="{_e(name)}"><h3>{_e(title)} <span class="small">({_e(path)})</span></h3>'
        f'<p class="small">{data}{notes} {diff} Blue: the paper; green: reproduced; amber: difference '
        f"(reproduced &minus; paper, percentage points). {rep}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


def _report_run_html(info):
    if info is None:
        return "MLflow report run: store not consulted."
    if not info.get("run_id"):
        return "MLflow report run: <b>none with these exact files</b> (made or changed after tracking?)."
    n = len(info.get("source_run_ids", []))
    return (
        f"MLflow report run <code>{_e(info['run_id'])}</code> (experiment {_e(info['experiment_id'])}), "
        f"made from {n} training runs, git commit <code>{_e(info.get('git_commit'))}</code>."
    )


def figure_html(name, png, out_dir, report_run, runs):
    image = base64.b64encode(Path(png).read_bytes()).decode()
    family = FIGURE_FAMILY.get(name)
    data = data_names(r.spec.get("data") for r in runs.list if r.family == family)
    caption = figure_caption(name, data or None) if name in FIGURE_FAMILY else ""
    pdf = Path(png).with_suffix(".pdf")
    link = f' <a href="{_e(os.path.relpath(pdf, out_dir))}">PDF</a>' if pdf.is_file() else ""
    sources = ""
    if report_run and report_run.get("source_run_ids"):
        known = {r.run_id: r for r in runs.list}
        sources = (
            "Training runs: "
            + ", ".join(
                f"{_e(known[s].model) + ' seed ' + _e(known[s].seed) if s in known else 'run'} {_id_link(s)}"
                for s in report_run["source_run_ids"]
            )
            + "."
        )
    title = f"Figure {name[6:]}" if name.startswith("figure") else name
    return (
        f'<figure id="{_e(name)}"><h3>{_e(title)}</h3><img alt="{_e(title)}" src="data:image/png;base64,{image}">'
        f"<figcaption>{_e(caption)}{link}<br><span class='small'>{_report_run_html(report_run)} {sources}"
        f"</span></figcaption></figure>"
    )


def claims_html(verdicts):
    rows = []
    for v in verdicts:
        comps = "".join(f"<li>{c['html']}</li>" for c in v["comparisons"])
        extra = "".join(f"<li class='small'>{_e(n)}</li>" for n in v["notes"])
        scope = f"<br><span class='small'><b>{_e(v['scope'])}</b></span>" if v["scope"] else ""
        rows.append(
            f"<tr><td><b>{_e(v['id'])}</b><br><span class='small'>{_e(v['source'])}</span></td>"
            f"<td>{_e(v['text'])}</td><td>{_badge(v['verdict'])}{scope}<br>"
            f"<span class='small'>{_e(v['why'])}</span></td><td><ul>{comps}{extra}</ul></td></tr>"
        )
    return (
        "<table class='claims'><thead><tr><th>claim</th><th>the paper says</th><th>verdict</th>"
        f"<th>numbers behind the verdict</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def runs_html(runs, config_hash):
    rows = []
    for r in runs.list:
        st = r.store or {}
        params, tags = st.get("params", {}), st.get("tags", {})
        ch = params.get("config_hash", "")
        flag = " &#9888; differs" if config_hash and ch and ch != config_hash else ""
        status = "not in store" if st.get("missing") else st.get("status", "store not consulted" if not st else "")
        data = (r.spec.get("data") or {}).get("kind", "") if isinstance(r.spec.get("data"), dict) else ""
        rows.append(
            f'<tr id="run-{_e(r.run_id or r.dir)}"><td>{_e(r.model)}</td><td>{_e(r.seed)}</td>'
            f"<td><code>{_e(r.dir)}</code></td><td><code>{_e(r.run_id or 'untracked')}</code></td>"
            f"<td>{_e((r.mlflow or {}).get('experiment_id', ''))}</td><td>{_e(status)}</td>"
            f"<td>{_e(params.get('preset', ''))}</td><td><code>{_e(ch)}</code>{flag}</td>"
            f"<td><code>{_e(tags.get('git_commit', ''))}</code></td><td>{_e(data)}</td>"
            f"<td class='num'>{_e(r.spec.get('max_iters', ''))}</td>"
            f"<td><code>{_e(tags.get('checkpoint_sha256', '')[:12])}</code></td>"
            f"<td>{_e(tags.get('uses', ''))}</td></tr>"
        )
    return (
        "<table><thead><tr><th>model</th><th>seed</th><th>run directory</th><th>MLflow run id</th><th>exp.</th>"
        "<th>status</th><th>preset</th><th>config hash</th><th>git commit</th><th>data</th><th>iterations</th>"
        f"<th>checkpoint sha256</th><th>used by</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def render_html(ctx, pdf_note):
    from .figures import preset_note

    preset = ctx["preset"]
    note = preset_note(preset)
    banner = (
        f'<div class="banner">{_e(note[0].upper() + note[1:])}. The figures and tables below show what the '
        "pipeline produces on it; no claim of the paper can be confirmed or refuted from them.</div>"
        if note
        else '<div class="banner ok">Preset paper: the paper\'s settings.</div>'
    )
    counts = {v: sum(x["verdict"] == v for x in ctx["verdicts"]) for v in VERDICTS}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    commits = sorted({(r.store or {}).get("tags", {}).get("git_commit", "?") for r in ctx["runs"].list if r.store})
    hashes = sorted({(r.store or {}).get("params", {}).get("config_hash", "?") for r in ctx["runs"].list if r.store})
    store = (
        "reachable"
        if ctx["store_ok"]
        else f"not reachable ({_e(ctx['store_note'])}): run ids from mlflow.json files only"
    )
    prov = [
        ("preset", f"<b>{_e(preset)}</b>"),
        ("config hash (pipeline)", f"<code>{_e(ctx['config_hash'] or 'not given')}</code>"),
        ("config hash (training runs)", ", ".join(f"<code>{_e(h)}</code>" for h in hashes) or "unknown"),
        ("git commit (report code)", f"<code>{_e(ctx['commit'])}</code>"),
        ("git commit (training runs)", ", ".join(f"<code>{_e(c)}</code>" for c in commits) or "unknown"),
        ("MLflow store", f"<code>{_e(ctx['uri'])}</code>, {store}"),
        ("training runs", str(len(ctx["runs"].list))),
        ("generated", _e(ctx["generated"])),
        ("PDF", pdf_note),
    ]
    prov_html = (
        "<table>" + "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in prov) + "</table>"
    )
    tables = (
        "".join(
            table_html(n, p, df, ctx["runs"], ctx["reports"].get(n) if ctx["store_ok"] else None)
            for n, (p, df) in ctx["tables"].items()
        )
        or "<p>No tables were given.</p>"
    )
    figures = (
        "".join(
            figure_html(n, p, ctx["out_dir"], ctx["reports"].get(n) if ctx["store_ok"] else None, ctx["runs"])
            for n, p in ctx["figures"].items()
        )
        or "<p>No figures were given.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Reproduction report: He et al. 2016 ({_e(preset)})</title>
<meta name="preset" content="{_e(preset)}"><style>{CSS}</style></head><body>
<h1>Reproduction report: He et al. (2016), <i>Deep Residual Learning for Image Recognition</i></h1>
<p class="small">Made by <code>resnet-repro report</code> from the figures, tables and training runs of one pipeline run.</p>
{banner}
<h2 id="provenance-summary">Provenance</h2>{prov_html}
<h2 id="claims">The paper's claims</h2><p>Verdicts: {summary}. The rule is under <a href="#method">How verdicts are
decided</a>.</p>{claims_html(ctx["verdicts"])}
<h2 id="tables">Tables: paper vs reproduced</h2>{tables}
<h2 id="figures">Figures</h2>{figures}
<h2 id="runs">Training runs</h2><p class="small">Every reproduced number above comes from these runs; each
is one MLflow run in experiment <code>resnet-repro</code> (params, metric curves, model and history as artifacts).</p>
{runs_html(ctx["runs"], ctx["config_hash"])}
<h2 id="method">How verdicts are decided</h2>{METHOD}
</body></html>
"""


# ---------------------------------------------------------------- PDF


def find_chromium(explicit=None):
    """The path of a Chromium/Chrome executable, or None."""
    for cand in (explicit, os.environ.get("RESNET_REPRO_CHROMIUM")):
        if cand:
            return shutil.which(cand) or (cand if os.access(cand, os.X_OK) else None)
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def chromium_version(exe):
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else "Chromium (version unknown)"
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "Chromium (version unknown)"


def pdf_with_chromium(exe, html_text, pdf, timeout=180):
    """Print html_text to pdf with headless Chromium; raises ReproError on failure."""
    from .files import write_with

    pdf = Path(pdf)
    with tempfile.TemporaryDirectory(prefix="resnet-repro-chromium-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(html_text)
        out = Path(tmp) / "report.pdf"
        cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile", f"--print-to-pdf={out}", page.as_uri()]
        env = dict(os.environ, HOME=tmp)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise ReproError(f"chromium did not finish printing within {timeout} s") from None
        except OSError as e:
            raise ReproError(f"cannot run {exe}: {e}") from None
        if not out.is_file() or out.read_bytes()[:4] != b"%PDF":
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise ReproError(f"chromium exited {r.returncode} without a PDF: {' | '.join(tail)}")
        data = out.read_bytes()
    write_with(pdf, lambda f: f.write(data))


def _strip_tags(text):
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", text))


def pdf_with_matplotlib(ctx, pdf, reason):
    """The fallback PDF: a summary page (provenance, verdicts), one page per table, one per figure."""
    import textwrap

    import matplotlib
    import matplotlib.image as mpimg
    from matplotlib.backends.backend_pdf import PdfPages
    from matplotlib.figure import Figure

    from .figures import preset_note
    from .files import write_with

    def text_page(lines, title):
        fig = Figure(figsize=(11.69, 8.27))
        fig.text(0.04, 0.95, title, fontsize=14, weight="bold", va="top")
        fig.text(0.04, 0.90, "\n".join(lines), fontsize=7.5, va="top", family="DejaVu Sans")
        return fig

    def wrap(text, width=190):
        return textwrap.wrap(text, width) or [""]

    note = preset_note(ctx["preset"])
    head = [
        f"Preset: {ctx['preset']}" + (f" -- {note.upper()}." if note else ""),
        f"Config hash: {ctx['config_hash'] or 'not given'}    Git commit (report code): {ctx['commit']}",
        f"MLflow store: {ctx['uri']} ({'reachable' if ctx['store_ok'] else 'not reachable'})    "
        f"Generated: {ctx['generated']}",
        f"PDF rendered with matplotlib (fallback; {reason}). The HTML report has every note and the full run list.",
        "",
    ]
    pages = []
    lines = list(head)
    for v in ctx["verdicts"]:
        lines += wrap(f"[{v['verdict'].upper()}] {v['id']} ({v['source']}): {v['text']}")
        lines += ["    " + s for s in wrap(v["why"], 180)]
        for c in v["comparisons"]:
            lines += ["    - " + s for s in wrap(_strip_tags(c["html"]), 176)]
        lines.append("")
    per_page = 62
    for i in range(0, len(lines), per_page):
        pages.append(
            text_page(lines[i : i + per_page], "Reproduction report: He et al. (2016)" + (" (continued)" if i else ""))
        )

    for name, (path, df) in ctx["tables"].items():
        shown = df.copy()
        ids = [_row_run_ids(name, row, ctx["runs"]) for _, row in df.iterrows()]
        shown["mlflow_runs"] = [" ".join(_short(i) for i in x) if x else "" for x in ids]
        cells = [
            [_strip_tags(_cell(v, c)) for c, v in zip(shown.columns, row)] for row in shown.itertuples(index=False)
        ]
        cells = [[c if len(c) <= 40 else c[:37] + "..." for c in row] for row in cells]
        fig = Figure(figsize=(11.69, 8.27))
        fig.text(
            0.02,
            0.97,
            f"Table {name[5:]} ({path}), preset {ctx['preset']}" + (f" -- {note}" if note else ""),
            fontsize=11,
            weight="bold",
            va="top",
        )
        ax = fig.add_axes((0.01, 0.02, 0.98, 0.9))
        ax.axis("off")
        t = ax.table(cellText=cells, colLabels=list(shown.columns), loc="upper center", cellLoc="right")
        t.auto_set_font_size(False)
        t.set_fontsize(5.5 if len(shown.columns) > 12 else 6.5)
        t.auto_set_column_width(list(range(len(shown.columns))))
        pages.append(fig)

    for name, png in ctx["figures"].items():
        fig = Figure(figsize=(11.69, 8.27))
        fig.text(0.02, 0.97, f"Figure {name[6:]} ({png})", fontsize=11, weight="bold", va="top")
        ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
        ax.imshow(mpimg.imread(png))
        ax.axis("off")
        pages.append(fig)

    def write(f):
        with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(f, metadata={"CreationDate": None}) as doc:
            for fig in pages:
                doc.savefig(fig)

    write_with(pdf, write)


# ---------------------------------------------------------------- the report


def make_report(
    out,
    preset,
    tables=(),
    figures=(),
    run_dirs=(),
    pdf=None,
    json_out=None,
    config_hash=None,
    uri=None,
    pdf_engine="auto",
    chromium=None,
):
    """Write the HTML report (and PDF, JSON); return the JSON summary as a dict."""
    from .files import write_json, write_text
    from .tracking import tracking_uri

    out = Path(out)
    if out.suffix not in (".html", ".htm"):
        raise ReproError(f"--out must be an .html file, got {out}")
    if pdf is not None and Path(pdf).suffix != ".pdf":
        raise ReproError(f"--pdf must be a .pdf file, got {pdf}")
    if pdf_engine not in ("auto", "chromium", "matplotlib"):
        raise ReproError(f"--pdf-engine must be auto, chromium or matplotlib, not {pdf_engine!r}")
    json_out = Path(json_out) if json_out else out.with_suffix(".json")
    runs = Runs(run_dirs)
    table_data = read_tables(tables)
    fig_paths = {}
    for p in map(Path, figures):
        if p.suffix != ".png":
            raise ReproError(f"--figures takes the .png of each figure (the .pdf beside it is linked), got {p}")
        if not p.is_file():
            raise ReproError(f"figure {p} does not exist")
        fig_paths[p.stem] = p
    fig_paths = dict(sorted(fig_paths.items()))
    uri = tracking_uri(uri)

    artifacts = {n: [p.with_suffix(".pdf"), p] for n, p in fig_paths.items()}
    artifacts.update({n: [p, p.with_suffix(".md")] for n, (p, _) in table_data.items()})
    store_ok, store_note, reports = read_store(uri, runs, artifacts)

    claims = reference().get("claims", [])
    verdicts = [judge(c, table_data, runs, preset) for c in claims]
    ctx = {
        "preset": preset,
        "config_hash": config_hash,
        "commit": code_commit(),
        "uri": uri,
        "store_ok": store_ok,
        "store_note": store_note,
        "reports": reports,
        "runs": runs,
        "tables": table_data,
        "figures": fig_paths,
        "verdicts": verdicts,
        "out_dir": out.parent,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }

    pdf_info = None
    if pdf is not None:
        pdf_info = {"path": str(pdf)}
        exe = find_chromium(chromium) if pdf_engine != "matplotlib" else None
        reason = "requested with --pdf-engine matplotlib" if pdf_engine == "matplotlib" else "Chromium not found"
        if exe:
            version = chromium_version(exe)
            note = f"<code>{_e(Path(pdf).name)}</code>, printed from this HTML by headless {_e(version)}"
            try:
                pdf_with_chromium(exe, render_html(ctx, note), pdf)
                pdf_info.update(engine="chromium", detail=version)
            except ReproError as e:
                if pdf_engine == "chromium":
                    raise
                reason = f"Chromium failed: {e}"
        elif pdf_engine == "chromium":
            raise ReproError(
                "--pdf-engine chromium: no Chromium found (install it with scripts/install-chromium.sh, "
                "or give --chromium PATH)"
            )
        if "engine" not in pdf_info:
            pdf_with_matplotlib(ctx, pdf, reason)
            pdf_info.update(engine="matplotlib", detail=reason)
        rel = _e(os.path.relpath(pdf, out.parent))
        pdf_note = f'<a href="{rel}">{rel}</a>: ' + (
            f"printed from this HTML by headless {_e(pdf_info['detail'])}"
            if pdf_info["engine"] == "chromium"
            else f"matplotlib fallback ({_e(pdf_info['detail'])}): verdicts, tables and figures only"
        )
    else:
        pdf_note = "not requested"
    write_text(out, render_html(ctx, pdf_note))

    summary = {
        "preset": preset,
        "comparable_with_paper": preset == "paper",
        "config_hash": config_hash,
        "git_commit": ctx["commit"],
        "generated": ctx["generated"],
        "tracking_uri": uri,
        "store_reachable": store_ok,
        "html": str(out),
        "pdf": pdf_info,
        "claims": [
            {k: v for k, v in d.items()}
            | {"comparisons": [{k: c[k] for k in c if k != "html"} for c in d["comparisons"]]}
            for d in verdicts
        ],
        "tables": {n: {"path": str(p), "report_run": reports.get(n)} for n, (p, _) in table_data.items()},
        "figures": {n: {"path": str(p), "report_run": reports.get(n)} for n, p in fig_paths.items()},
        "runs": [
            {
                "model": r.model,
                "seed": r.seed,
                "dir": str(r.dir),
                "run_id": r.run_id,
                "git_commit": (r.store or {}).get("tags", {}).get("git_commit"),
                "config_hash": (r.store or {}).get("params", {}).get("config_hash"),
            }
            for r in runs.list
        ],
    }
    write_json(json_out, summary)
    return summary


def cmd_report(args):
    s = make_report(
        args.out,
        args.preset,
        args.tables,
        args.figures,
        args.runs,
        args.pdf,
        args.json,
        args.config_hash,
        args.tracking_uri,
        args.pdf_engine,
        args.chromium,
    )
    print(s["html"])
    if s["pdf"]:
        print(f"{s['pdf']['path']} ({s['pdf']['engine']}: {s['pdf']['detail']})")
    for c in s["claims"]:
        print(f"  {c['id']:<22} {c['verdict_text']}")


def add_parser(sub):
    """Register this module's sub-command(s) on the `resnet-repro` argparse sub-parsers."""
    s = sub.add_parser(
        "report",
        help="the reproduction report: figures, tables, provenance, a verdict per claim",
        description="Write one self-contained HTML report of a pipeline run: every table (paper vs "
        "reproduced, difference), every figure, the provenance of every number (MLflow "
        "run ids, git commit, config hash, preset) and a verdict on each claim of the "
        "paper (reference.yaml `claims:`) with the numbers behind it. Optionally a PDF "
        "(headless Chromium if found, else a matplotlib fallback) and, always, a JSON "
        "summary beside the HTML.",
    )
    s.add_argument("--out", required=True, help="HTML file to write, e.g. reports/report.html")
    s.add_argument("--pdf", help="also write this PDF, e.g. reports/report.pdf")
    s.add_argument("--json", help="JSON summary (verdicts, provenance) to write (default: OUT with .json)")
    s.add_argument(
        "--preset",
        required=True,
        help="the preset that produced the runs; anything but 'paper' is reported as not comparable with the paper",
    )
    s.add_argument("--config-hash", help="hash of the pipeline config (checked against the runs')")
    s.add_argument("--tables", nargs="*", default=[], metavar="CSV", help="tables from `resnet-repro table`")
    s.add_argument(
        "--figures",
        nargs="*",
        default=[],
        metavar="PNG",
        help="figures from `resnet-repro figure` (the .png; the .pdf beside it is linked)",
    )
    s.add_argument("--runs", nargs="*", default=[], metavar="RUN_DIR", help="every training run directory behind them")
    s.add_argument(
        "--tracking-uri",
        help="MLflow store to read run provenance from (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    s.add_argument(
        "--pdf-engine",
        default="auto",
        choices=["auto", "chromium", "matplotlib"],
        help="auto (default): headless Chromium if found, else matplotlib",
    )
    s.add_argument(
        "--chromium",
        metavar="PATH",
        help="Chromium executable (default: $RESNET_REPRO_CHROMIUM, else "
        "chromium/chromium-browser/google-chrome on PATH)",
    )
    s.set_defaults(func=cmd_report)
