"""The reproduction report as one self-contained HTML page: the page and its style are templates
(templates/report.html, report.css, filled with string.Template); this module renders the pieces
that go into them (claims, tables, figures, runs, provenance) from build.py's context."""

import base64
import html
import numbers
import os
import re
from importlib import resources
from pathlib import Path
from string import Template

from resnet_repro.paper.catalogue import ARTIFACT
from resnet_repro.paper.text import caption, data_names
from resnet_repro.report.claims import REDUCED_MARK, VERDICTS, compared_text, value_format
from resnet_repro.report.evidence import member_run, seeds_of
from resnet_repro.report.noise import Z
from resnet_repro.spec.build import PRECISION_POLICY


def template(name):
    return resources.files(__package__).joinpath("templates", name).read_text()


def e(v):
    return html.escape(str(v))


def badge(verdict):
    return f'<span class="verdict v-{verdict.replace(" ", "-")}">{e(verdict)}</span>'


def short_id(run_id):
    return run_id[:8] if run_id else "untracked"


def id_link(run_id):
    if not run_id:
        return "<code>untracked</code>"
    return f'<a href="#run-{e(run_id)}"><code title="{e(run_id)}">{e(run_id[:8])}</code></a>'


def comparison_html(c):
    """One comparison of the claims (noise.compare), in words: what it compares with the values, the
    difference, the band it must leave, and the parts of its noise."""
    fmt = value_format(c["unit"])
    sd, crit = c["noise_std"], c.get("critical")
    band = (
        f"{crit:.3g}&sigma;<sub>d</sub> = {fmt(crit * sd).rstrip('%')}"
        if sd and crit
        else e(c["unmeasured"] or "noise unknown")
    )
    parts = "; ".join(f"{e(what)} {std:.3g}" + (f" ({df:.3g} df)" if df else "") for what, std, df in c["parts"])
    margin = f", margin {c['margin']:g}" if c.get("margin") else ""
    exact = ", exact McNemar" if c.get("exact_mcnemar") else ""
    return (
        f"{e(compared_text(c))}: difference {c['difference']:+.3g}, {band} ({e(c['pairing'])}{margin}{exact}"
        f"{'; ' + parts if parts else ''}) &rarr; <b>{c['outcome']}</b>"
    )


def column_class(col):
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


def cell(v, col):
    import pandas as pd

    if v is None or (isinstance(v, float) and pd.isna(v)) or v is pd.NA:
        return ""
    if isinstance(v, float):
        if col in ("layers", "n_runs") and v.is_integer():
            return str(int(v))
        if col.startswith("params_m"):
            return f"{v:.3f}"
        return f"{v:+.2f}" if column_class(col) == "diff" else f"{v:.2f}"
    return e(v)


def row_run_ids(name, row, runs):
    """The MLflow run ids behind one table row (None for the literature's rows)."""
    if row["source"] == "literature":
        return None
    if getattr(ARTIFACT.get(name), "ensemble", False):  # a table file named otherwise: none
        if row["source"] == "ours (ensemble member)":
            r = member_run(runs, row)
            return [r.run_id if r else None]
        models = [m.strip() for m in str(row.get("members", "")).split(" + ") if m.strip()]
        return [getattr(runs.get(m, s), "run_id", None) for m, s in zip(models, seeds_of(row.get("seeds")))]
    return [getattr(runs.get(row["model"], s), "run_id", None) for s in seeds_of(row.get("seeds"))]


def markdown_html(text):
    """The tables' notes are Markdown (**bold**, `code`, *italic*): the same in HTML."""
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", e(text))
    text = re.sub(r"`(.+?)`", r"<code>\1</code>", text)
    return re.sub(r"\*(\w[^*]*?)\*", r"<i>\1</i>", text)


def table_html(name, path, df, runs, report_run):
    from resnet_repro.report.tables import DIFF_NOTE, NOTES, table_data

    cols = list(df.columns)
    head = "".join(f'<th class="{column_class(c)}">{e(c)}</th>' for c in cols) + "<th>MLflow runs</th>"
    body = []
    for _, row in df.iterrows():
        ids = row_run_ids(name, row, runs)
        ids_html = "" if ids is None else " ".join(id_link(i) for i in ids) or "not run"
        cells = "".join(
            f'<td class="{column_class(c)}{" num" if isinstance(row[c], numbers.Number) else ""}">'
            f"{cell(row[c], c)}</td>"
            for c in cols
        )
        body.append(f'<tr class="{e(row["source"])}">{cells}<td class="ids">{ids_html}</td></tr>')
    title = f"Table {name[5:]}" if name.startswith("table") else name
    diff = (
        e(DIFF_NOTE[name])
        if name in DIFF_NOTE
        else "Differences (<code>*_diff</code>) are reproduced (mean over seeds) minus paper."
    )
    data = table_data(df)
    data = f"<b>Data: {e(data)}.</b> " if data else ""
    return (
        f'<section class="table" id="{e(name)}"><h3>{e(title)} <span class="small">({e(path)})</span></h3>'
        f'<p class="small">{data}{markdown_html(NOTES.get(name, ""))} {diff} Blue: the paper; green: reproduced; '
        f"amber: difference (reproduced &minus; paper, percentage points). {report_run_html(report_run)}</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></section>"
    )


def report_run_html(info):
    if info is None:
        return "MLflow report run: store not consulted."
    if not info.get("run_id"):
        return "MLflow report run: <b>none with these exact files</b> (made or changed after tracking?)."
    n = len(info.get("source_run_ids", []))
    return (
        f"MLflow report run <code>{e(info['run_id'])}</code> (experiment {e(info['experiment_id'])}), "
        f"made from {n} training runs, git commit <code>{e(info.get('git_commit'))}</code>."
    )


def figure_html(name, png, out_dir, report_run, runs):
    image = base64.b64encode(Path(png).read_bytes()).decode()
    art = ARTIFACT.get(name)
    data = data_names(r.spec.get("data") for r in runs.list if art and r.family == art.family)
    text = caption(name, data or None) if art and art.kind == "figure" else ""
    pdf = Path(png).with_suffix(".pdf")
    link = f' <a href="{e(os.path.relpath(pdf, out_dir))}">PDF</a>' if pdf.is_file() else ""
    sources = ""
    if report_run and report_run.get("source_run_ids"):
        known = {r.run_id: r for r in runs.list}
        sources = (
            "Training runs: "
            + ", ".join(
                f"{e(known[s].model) + ' seed ' + e(known[s].seed) if s in known else 'run'} {id_link(s)}"
                for s in report_run["source_run_ids"]
            )
            + "."
        )
    title = f"Figure {name[6:]}" if name.startswith("figure") else name
    return (
        f'<figure id="{e(name)}"><h3>{e(title)}</h3><img alt="{e(title)}" src="data:image/png;base64,{image}">'
        f"<figcaption>{e(text)}{link}<br><span class='small'>{report_run_html(report_run)} {sources}"
        f"</span></figcaption></figure>"
    )


def claims_html(verdicts, preset):
    """One row per claim: the verdict in one short line (the comparison it turns on, and what it rests
    on), every comparison and note behind it folded in a <details>; the reductions are listed once, in
    the protocol section (#protocol), not in each row."""
    rows = []
    for v in verdicts:
        comps = "".join(f"<li>{comparison_html(c)}</li>" for c in v["comparisons"])
        notes = "".join(f"<li class='small'>{e(n)}</li>" for n in v["notes"] + missing_note(v))
        more = f"{len(v['comparisons'])} comparison(s)" if v["comparisons"] else "what is missing"
        scope = e(v["scope"].removesuffix(REDUCED_MARK))
        if v["reduced"]:
            scope += ", <a href='#protocol'>reduced</a>"
        line = f"{badge(v['verdict'])} {e(v['summary'])}" + (f"; {scope}" if scope else "")
        rows.append(
            f"<tr id='claim-{e(v['id'])}'><td><b>{e(v['id'])}</b><br><span class='small'>{e(v['source'])}</span></td>"
            f"<td>{e(v['text'])}</td><td><div class='verdict-line'>{line}</div>"
            f"<details><summary class='small'>{more}</summary><ul>{comps}{notes}</ul></details></td></tr>"
        )
    return (
        "<table class='claims'><thead><tr><th>claim</th><th>the paper says</th><th>verdict, and the numbers behind it"
        f"</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def missing_note(v):
    return ["missing: " + ", ".join(v["missing"])] if v["missing"] else []


def protocol_html(ctx):
    """The protocol differences, once: the reductions of this preset's runs (collapsed), and what every
    run shares with the package's paper preset but not with the paper."""
    reduced = ctx["reduced"]
    items = "".join(f"<li>{e(r)}</li>" for r in reduced) or "<li>none: every run has the paper's protocol</li>"
    notes = "".join(f"<li>{e(n)}</li>" for n in ctx["protocol_notes"]) or "<li>none</li>"
    return (
        f"<details class='protocol'><summary><b>Preset {e(ctx['preset'])}: {len(reduced)} reduction(s) from the "
        f"paper's protocol</b> (a verdict resting on such a run is marked reduced)</summary><ul>{items}</ul></details>"
        "<p>Departures of the package's paper preset itself, and its choices where the paper is silent (named once; "
        f"they make no verdict reduced):</p><ul class='small'>{notes}</ul>"
        f"<p class='small'><b>Precision.</b> {e(PRECISION_POLICY)}</p>"
    )


def runs_html(runs, config_hash):
    rows = []
    for r in runs.list:
        st = r.store or {}
        params, tags = st.get("params", {}), st.get("tags", {})
        ch = params.get("config_hash", "")
        flag = " &#9888; differs" if config_hash and ch and ch != config_hash else ""
        status = "not in store" if st.get("missing") else st.get("status", "store not consulted" if not st else "")
        rows.append(
            f'<tr id="run-{e(r.run_id or r.dir)}"><td>{e(r.model)}</td><td>{e(r.seed)}</td>'
            f"<td><code>{e(r.dir)}</code></td><td><code>{e(r.run_id or 'untracked')}</code></td>"
            f"<td>{e((r.mlflow or {}).get('experiment_id', ''))}</td><td>{e(status)}</td>"
            f"<td>{e(params.get('preset', ''))}</td><td><code>{e(ch)}</code>{flag}</td>"
            f"<td><code>{e(tags.get('git_commit', ''))}</code></td><td>{e(r.data.get('kind', ''))}</td>"
            f"<td class='num'>{e(r.spec.get('max_iters', ''))}</td>"
            f"<td><code>{e(tags.get('checkpoint_sha256', '')[:12])}</code></td>"
            f"<td>{e(tags.get('uses', ''))}</td></tr>"
        )
    return (
        "<table><thead><tr><th>model</th><th>seed</th><th>run directory</th><th>MLflow run id</th><th>exp.</th>"
        "<th>status</th><th>preset</th><th>config hash</th><th>git commit</th><th>data</th><th>iterations</th>"
        f"<th>checkpoint sha256</th><th>used by</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def provenance_html(ctx, pdf_note):
    runs = [r for r in ctx["runs"].list if r.store]
    commits = sorted({r.store.get("tags", {}).get("git_commit", "?") for r in runs})
    hashes = sorted({r.store.get("params", {}).get("config_hash", "?") for r in runs})
    store = (
        "reachable"
        if ctx["store_ok"]
        else f"not reachable ({e(ctx['store_note'])}): run ids from mlflow.json files only"
    )
    prov = [
        ("preset", f"<b>{e(ctx['preset'])}</b>"),
        ("config hash (pipeline)", f"<code>{e(ctx['config_hash'] or 'not given')}</code>"),
        ("config hash (training runs)", ", ".join(f"<code>{e(h)}</code>" for h in hashes) or "unknown"),
        ("git commit (report code)", f"<code>{e(ctx['commit'])}</code>"),
        ("git commit (training runs)", ", ".join(f"<code>{e(c)}</code>" for c in commits) or "unknown"),
        ("MLflow store", f"<code>{e(ctx['uri'])}</code>, {store}"),
        ("training runs", str(len(ctx["runs"].list))),
        ("generated", e(ctx["generated"])),
        ("PDF", pdf_note),
    ]
    return (
        "<table>" + "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in prov) + "</table>"
    )


def render_html(ctx, pdf_note):
    """The whole page; pdf_note says (in HTML) where the PDF is and how it was made."""
    note = ctx["preset_note"]
    banner = (
        f'<div class="banner">{e(note[0].upper() + note[1:])}. The figures and tables below show what the '
        "pipeline produces on it; no claim of the paper can be confirmed or refuted from them.</div>"
        if note
        else '<div class="banner ok">Preset paper: the paper\'s settings.</div>'
    )
    counts = {v: sum(x["verdict"] == v for x in ctx["verdicts"]) for v in VERDICTS}
    report_run = lambda n: ctx["reports"].get(n) if ctx["store_ok"] else None
    tables = "".join(table_html(n, p, df, ctx["runs"], report_run(n)) for n, (p, df) in ctx["tables"].items())
    figures = "".join(figure_html(n, p, ctx["out_dir"], report_run(n), ctx["runs"]) for n, p in ctx["figures"].items())
    return Template(template("report.html")).substitute(
        preset=e(ctx["preset"]),
        css=template("report.css"),
        banner=banner,
        provenance=provenance_html(ctx, pdf_note),
        summary=", ".join(f"{n} {v}" for v, n in counts.items() if n),
        claims=claims_html(ctx["verdicts"], ctx["preset"]),
        protocol=protocol_html(ctx),
        tables=tables or "<p>No tables were given.</p>",
        figures=figures or "<p>No figures were given.</p>",
        runs=runs_html(ctx["runs"], ctx["config_hash"]),
        z=f"{Z:g}",
    )
