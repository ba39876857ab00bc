"""The reproduction report: every figure and table, the provenance of every number, and a verdict
on each claim of the paper (reference.yaml `claims:`), as one self-contained HTML file, a PDF, and
a JSON file with the same verdicts and provenance for machines.

Inputs are the workflow's own products: results/table*.csv (paper vs reproduced, from `table`),
reports/figure*.png (from `figure`), and the training run directories (spec.yaml, history.csv,
eval/<view>/metrics.json, responses.csv, mlflow.json). The MLflow store, when reachable, adds each
run's git commit, config hash and status, and the report run of each figure and table.

The claims and their verdicts are in claims.py, the HTML in html.py (and templates/), the PDF in
pdf.py; this module gathers the inputs and writes the three files.

Verdicts (holds / does not hold / not tested in this run / too little data to say) follow one rule,
written out in the report itself (templates/report.html): a claim is a set of comparisons; a difference counts
only when it exceeds a critical multiple (Z, or a t-quantile for few seeds) of its noise; a verdict names the data and scale of the runs it rests on
and says when they are reduced (not the paper's setting).

pandas, matplotlib and mlflow are imported inside the functions that use them."""

import datetime
from pathlib import Path

from resnet_repro.digest import artifacts_digest
from resnet_repro.errors import ReproError
from resnet_repro.paper.text import preset_note, reference
from resnet_repro.report.claims import judge, protocol_notes, reduced
from resnet_repro.report.html import render_html
from resnet_repro.report.pdf import pdf_note_html, write_pdf
from resnet_repro.rundir import Runs
from resnet_repro.spec.build import PRECISION_POLICY
from resnet_repro.tracking.store import git_commit, quote

# ---------------------------------------------------------------- inputs


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


def read_figures(paths):
    """{name: png} of the figures given (their .pdf beside them is linked)."""
    figures = {}
    for p in map(Path, paths):
        if p.suffix != ".png":
            raise ReproError(f"--figures takes the .png of each figure (the .pdf beside it is linked), got {p}")
        if not p.is_file():
            raise ReproError(f"figure {p} does not exist")
        figures[p.stem] = p
    return dict(sorted(figures.items()))


# ---------------------------------------------------------------- provenance


def read_store(uri, runs, artifacts):
    """Look the runs and the figure/table report runs up in the MLflow store (read only).
    `artifacts`: {name: [files as `track report` logged them]}. Returns (reachable, note, {name: report
    run info}); fills run.store."""
    from resnet_repro.tracking.store import client, experiment_arg, reports_experiment

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
            digest = artifacts_digest(files)
            found = c.search_runs(
                [exp.experiment_id],
                f"tags.artifact = {quote(name)} and "
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


# ---------------------------------------------------------------- the report


def check_outputs(out, pdf, pdf_engine):
    if Path(out).suffix not in (".html", ".htm"):
        raise ReproError(f"--out must be an .html file, got {out}")
    if pdf is not None and Path(pdf).suffix != ".pdf":
        raise ReproError(f"--pdf must be a .pdf file, got {pdf}")
    if pdf_engine not in ("auto", "chromium", "matplotlib"):
        raise ReproError(f"--pdf-engine must be auto, chromium or matplotlib, not {pdf_engine!r}")


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
    from resnet_repro.files import write_json, write_text
    from resnet_repro.tracking.store import tracking_uri

    out = Path(out)
    check_outputs(out, pdf, pdf_engine)
    runs, table_data, fig_paths, uri = Runs(run_dirs), read_tables(tables), read_figures(figures), tracking_uri(uri)

    artifacts = {n: [p.with_suffix(".pdf"), p] for n, p in fig_paths.items()}
    artifacts.update({n: [p, p.with_suffix(".md")] for n, (p, _) in table_data.items()})
    store_ok, store_note, reports = read_store(uri, runs, artifacts)
    ctx = {
        "preset": preset,
        "config_hash": config_hash,
        "commit": git_commit(),
        "uri": uri,
        "store_ok": store_ok,
        "store_note": store_note,
        "reports": reports,
        "runs": runs,
        "tables": table_data,
        "figures": fig_paths,
        "verdicts": [judge(c, table_data, runs, preset) for c in reference().get("claims", [])],
        "protocol_notes": protocol_notes(runs),
        "out_dir": out.parent,
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
    ctx["reduced"] = reduced(runs.list, preset)  # every reduction of the report's runs, each once, with its models
    ctx["preset_note"] = preset_note(preset, ctx["reduced"])  # the banner: None if comparable
    pdf_info = write_pdf(ctx, pdf, pdf_engine, chromium) if pdf is not None else None
    write_text(out, render_html(ctx, pdf_note_html(pdf_info, out.parent)))
    summary = summary_json(ctx, out, pdf_info)
    write_json(Path(json_out) if json_out else out.with_suffix(".json"), summary)
    return summary


def summary_json(ctx, out, pdf_info):
    """The report for machines: verdicts with their comparisons, and the provenance of every input."""
    reports = ctx["reports"]
    return {
        "preset": ctx["preset"],
        # one flag for the whole report: the paper preset and no run of it reduced from the paper's protocol,
        # so no verdict is (bf16 autocast and the preset's built-in departures are named, not reductions)
        "comparable_with_paper": ctx["preset"] == "paper" and not ctx["reduced"],
        "protocol": {
            "notes": ctx["protocol_notes"],
            "precision_policy": PRECISION_POLICY,
            "reduced": ctx["reduced"],
        },
        "config_hash": ctx["config_hash"],
        "git_commit": ctx["commit"],
        "generated": ctx["generated"],
        "tracking_uri": ctx["uri"],
        "store_reachable": ctx["store_ok"],
        "html": str(out),
        "pdf": pdf_info,
        "claims": ctx["verdicts"],
        "tables": {n: {"path": str(p), "report_run": reports.get(n)} for n, (p, _) in ctx["tables"].items()},
        "figures": {n: {"path": str(p), "report_run": reports.get(n)} for n, p in ctx["figures"].items()},
        "runs": [
            {
                "model": r.model,
                "seed": r.seed,
                "dir": str(r.dir),
                "run_id": r.run_id,
                "git_commit": (r.store or {}).get("tags", {}).get("git_commit"),
                "config_hash": (r.store or {}).get("params", {}).get("config_hash"),
                "precision": r.precision,  # what it trained in (bf16 autocast is named, not a reduction)
                "tf32": r.metrics.get("tf32"),
            }
            for r in ctx["runs"].list
        ],
    }
