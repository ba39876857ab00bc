"""The report as a PDF: printed from its HTML by headless Chromium where one is found, else a
matplotlib fallback (a summary page of provenance and verdicts, one page per table, one per figure)."""

import html
import os
import re
import shutil
import subprocess
import tempfile
import textwrap
from pathlib import Path

from resnet_repro.errors import ReproError
from resnet_repro.report.html import cell, comparison_html, e, render_html, row_run_ids, short_id

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
A4_LANDSCAPE = (11.69, 8.27)  # inches


# ---------------------------------------------------------------- Chromium


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
    from resnet_repro.files import write_with

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
        except OSError as err:
            raise ReproError(f"cannot run {exe}: {err}") from None
        if not out.is_file() or out.read_bytes()[:4] != b"%PDF":
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            raise ReproError(f"chromium exited {r.returncode} without a PDF: {' | '.join(tail)}")
        data = out.read_bytes()
    write_with(pdf, lambda f: f.write(data))


# ---------------------------------------------------------------- the matplotlib fallback


def strip_tags(text):
    return html.unescape(re.sub(r"<[^>]+>", "", text))


def wrap(text, width=190):
    return textwrap.wrap(text, width) or [""]


def text_page(lines, title):
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_LANDSCAPE)
    fig.text(0.04, 0.95, title, fontsize=14, weight="bold", va="top")
    fig.text(0.04, 0.90, "\n".join(lines), fontsize=7.5, va="top", family="DejaVu Sans")
    return fig


def summary_pages(ctx, reason, per_page=62):
    """Provenance and every verdict with its comparisons, as text pages."""
    note = ctx["preset_note"]
    lines = [
        f"Preset: {ctx['preset']}" + (f" -- {note.upper()}." if note else ""),
        f"Config hash: {ctx['config_hash'] or 'not given'}    Git commit (report code): {ctx['commit']}",
        f"MLflow store: {ctx['uri']} ({'reachable' if ctx['store_ok'] else 'not reachable'})    "
        f"Generated: {ctx['generated']}",
        f"PDF rendered with matplotlib (fallback; {reason}). The HTML report has every note and the full run list.",
        "",
    ]
    lines += wrap("Reductions from the paper's protocol (each once): " + ("; ".join(ctx["reduced"]) or "none"), 190)
    lines += wrap("Named, not reductions: " + ("; ".join(ctx["protocol_notes"]) or "none"), 190) + [""]
    for v in ctx["verdicts"]:
        lines += wrap(f"[{v['verdict'].upper()}] {v['id']} ({v['source']}): {v['text']}")
        lines += ["    " + s for s in wrap("; ".join(x for x in (v["summary"], v["scope"]) if x), 180)]
        for c in v["comparisons"]:
            lines += ["    - " + s for s in wrap(strip_tags(comparison_html(c)), 176)]
        lines.append("")
    title = "Reproduction report: He et al. (2016)"
    return [
        text_page(lines[i : i + per_page], title + (" (continued)" if i else ""))
        for i in range(0, len(lines), per_page)
    ]


def table_page(ctx, name, path, df):
    from matplotlib.figure import Figure

    note = ctx["preset_note"]
    shown = df.copy()
    ids = [row_run_ids(name, row, ctx["runs"]) for _, row in df.iterrows()]
    shown["mlflow_runs"] = [" ".join(short_id(i) for i in x) if x else "" for x in ids]
    cells = [[strip_tags(cell(v, c)) for c, v in zip(shown.columns, row)] for row in shown.itertuples(index=False)]
    cells = [[c if len(c) <= 40 else c[:37] + "..." for c in row] for row in cells]
    fig = Figure(figsize=A4_LANDSCAPE)
    title = f"Table {name[5:]} ({path}), preset {ctx['preset']}" + (f" -- {note}" if note else "")
    fig.text(0.02, 0.97, title, fontsize=11, weight="bold", va="top")
    ax = fig.add_axes((0.01, 0.02, 0.98, 0.9))
    ax.axis("off")
    t = ax.table(cellText=cells, colLabels=list(shown.columns), loc="upper center", cellLoc="right")
    t.auto_set_font_size(False)
    t.set_fontsize(5.5 if len(shown.columns) > 12 else 6.5)
    t.auto_set_column_width(list(range(len(shown.columns))))
    return fig


def figure_page(name, png):
    import matplotlib.image as mpimg
    from matplotlib.figure import Figure

    fig = Figure(figsize=A4_LANDSCAPE)
    fig.text(0.02, 0.97, f"Figure {name[6:]} ({png})", fontsize=11, weight="bold", va="top")
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.imshow(mpimg.imread(png))
    ax.axis("off")
    return fig


def pdf_with_matplotlib(ctx, pdf, reason):
    """The fallback PDF: a summary page (provenance, verdicts), one page per table, one per figure."""
    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    from resnet_repro.files import write_with

    pages = summary_pages(ctx, reason)
    pages += [table_page(ctx, name, path, df) for name, (path, df) in ctx["tables"].items()]
    pages += [figure_page(name, png) for name, png in ctx["figures"].items()]

    def write(f):
        with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(f, metadata={"CreationDate": None}) as doc:
            for fig in pages:
                doc.savefig(fig)

    write_with(pdf, write)


# ---------------------------------------------------------------- either


def write_pdf(ctx, pdf, engine="auto", chromium=None):
    """Write the report's PDF with `engine` (auto: Chromium if found, else matplotlib); returns
    {path, engine, detail}."""
    info = {"path": str(pdf)}
    exe = find_chromium(chromium) if engine != "matplotlib" else None
    reason = "requested with --pdf-engine matplotlib" if engine == "matplotlib" else "Chromium not found"
    if exe:
        version = chromium_version(exe)
        note = f"<code>{e(Path(pdf).name)}</code>, printed from this HTML by headless {e(version)}"
        try:
            pdf_with_chromium(exe, render_html(ctx, note), pdf)
            return info | {"engine": "chromium", "detail": version}
        except ReproError as err:
            if engine == "chromium":
                raise
            reason = f"Chromium failed: {err}"
    elif engine == "chromium":
        raise ReproError(
            "--pdf-engine chromium: no Chromium found (install it with scripts/install-chromium.sh, "
            "or give --chromium PATH)"
        )
    pdf_with_matplotlib(ctx, pdf, reason)
    return info | {"engine": "matplotlib", "detail": reason}


def pdf_note_html(info, out_dir):
    """Where the PDF is and how it was made, for the HTML report's provenance table."""
    if info is None:
        return "not requested"
    rel = e(os.path.relpath(info["path"], out_dir))
    how = (
        f"printed from this HTML by headless {e(info['detail'])}"
        if info["engine"] == "chromium"
        else f"matplotlib fallback ({e(info['detail'])}): verdicts, tables and figures only"
    )
    return f'<a href="{rel}">{rel}</a>: {how}'
