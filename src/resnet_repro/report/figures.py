"""Figures 1, 4, 6 and 7 of the paper, redrawn from our runs (history.csv, responses.csv).

matplotlib, seaborn (and .files, which imports torch) are imported inside draw_figure only: the CLI
imports this module for every command, and `resnet-repro --help` should stay fast."""

import math
import sys
import textwrap
from pathlib import Path

from resnet_repro.errors import ReproError
from resnet_repro.paper.catalogue import FIGURES
from resnet_repro.paper.names import parse_model_name
from resnet_repro.paper.text import caption, model_label, preset_note
from resnet_repro.rundir import HISTORY, RESPONSES, RunDir, data_of_runs, preset_of, read_csv

# One colour per depth, close to the paper's (20 orange, 56 red, 110 black); other depths take the
# colour-blind palette in turn (colour()).
DEPTH_COLOURS = {
    18: "tab:blue",
    20: "#e69f00",
    32: "tab:cyan",
    34: "tab:red",
    44: "tab:green",
    56: "tab:red",
    110: "black",
    1202: "tab:purple",
    50: "tab:green",
    101: "tab:brown",
    152: "tab:pink",
}


def colour(depth, i, palette):
    return DEPTH_COLOURS.get(depth, palette[i % len(palette)])


# Panels: (title, which models belong). figure1 has both panels on the same runs, plotting different columns.
PANELS = {
    "figure1": [
        ("training error", lambda m: m.family == "cifar" and not m.residual),
        ("test error", lambda m: m.family == "cifar" and not m.residual),
    ],
    "figure6": [
        ("plain", lambda m: m.family == "cifar" and not m.residual),
        ("ResNet", lambda m: m.family == "cifar" and m.residual and m.depth <= 110),
        ("ResNet-110 and deeper", lambda m: m.family == "cifar" and m.residual and m.depth >= 110),
    ],
    "figure4": [
        ("plain", lambda m: m.family == "imagenet" and not m.residual),
        ("ResNet", lambda m: m.family == "imagenet" and m.residual),
    ],
}


def _curves(run_dirs):
    """[(ModelSpec, seed, history)] sorted by plain/ResNet then depth, as the paper's legends."""
    curves = []
    for path in dict.fromkeys(Path(r).resolve() for r in run_dirs):  # the same directory twice is one run
        run = RunDir(path)
        run.require(HISTORY)
        history = {c: [r[c] for r in run.history] for c in ("iteration", "train_error", "test_error")}
        curves.append((run.model_spec, run.seed, history))
    return sorted(curves, key=lambda c: (c[0].residual, c[0].depth, c[0].shortcut, str(c[1])))


def _response_columns(run_dirs, responses):
    """{model name: {"std": [...], "std_per_channel": [...] (absent from older CSVs)}} in layer order,
    from RUN/responses.csv and explicit CSV files."""
    paths = [Path(r) / RESPONSES for r in run_dirs] + [Path(p) for p in responses]
    for r in run_dirs:
        if not Path(r).is_dir():
            raise ReproError(f"run directory {r} does not exist")
    out = {}
    for path in dict.fromkeys(p.resolve() for p in paths):  # a run's file may come both as --run and --responses
        rows = read_csv(path, ["layer", "std"])
        if "model" not in rows[0]:
            raise ReproError(f"{path} is malformed: missing column model")
        cols = ["std"] + (["std_per_channel"] if "std_per_channel" in rows[0] else [])
        if len(cols) > 1:
            rows = read_csv(path, ["layer", *cols])
        found = {}
        for r in sorted(rows, key=lambda r: r["layer"]):
            for c in cols:
                found.setdefault(r["model"], {}).setdefault(c, []).append(r[c])
        for model, v in found.items():
            if model in out:  # another seed of the same model: one curve per model, as the paper
                print(f"resnet-repro: warning: figure7 already has {model}; {path} not drawn", file=sys.stderr)
            else:
                out[model] = v
    return dict(sorted(out.items(), key=lambda kv: _model_order(kv[0])))


def _responses(run_dirs, responses):
    """{model name: [std in layer order]} from RUN/responses.csv and explicit CSV files."""
    return {m: v["std"] for m, v in _response_columns(run_dirs, responses).items()}


def label_or_name(name):
    try:
        return model_label(name)
    except ReproError:
        return name


def responses_note(columns):
    """Figure 7's note: what `std` is, and whether the per-channel std (averaged over channels) orders
    the models as `std` does, by their mean over layers, from the responses CSVs."""
    note = (
        "std: over all N*H*W*C values of each layer's BN output (eval mode, evaluation split), "
        "the stem's 3x3 layer included."
    )
    if not all("std_per_channel" in v for v in columns.values()):
        return note + " Per-channel std: not in every responses.csv (written before it was added), not compared."
    mean = lambda xs: sum(xs) / len(xs)
    by = {c: {m: mean(v[c]) for m, v in columns.items()} for c in ("std", "std_per_channel")}
    order = {c: sorted(by[c], key=by[c].get) for c in by}
    same = "the same order" if order["std"] == order["std_per_channel"] else "a different order"
    pairs = ", ".join(f"{label_or_name(m)} {by['std'][m]:.2f} / {by['std_per_channel'][m]:.2f}" for m in columns)
    return (
        note + f" Mean over layers, std / per-channel std averaged over channels: {pairs}; "
        f"the per-channel measure ranks the models in {same}."
    )


def _model_order(name):
    try:
        m = parse_model_name(name)
        return (m.residual, m.depth, name)
    except ReproError:
        return (True, math.inf, name)


def _ylim(values):
    """From the data (the paper's fixed 0-20% would hide reduced runs), rounded out to multiples of 5.
    The caller leaves out the first 10% of each curve, where every net is near chance."""
    values = [v for v in values if math.isfinite(v)] or [0, 100]
    lo, hi = min(values), max(values)
    return max(0, 5 * math.floor((lo - 1) / 5)), min(100, 5 * math.ceil((hi + 1) / 5))


def _xscale(max_iter):
    """Iterations in units of 1e4 as the paper, or a smaller power of ten for short runs."""
    return 10 ** min(4, max(0, math.floor(math.log10(max(max_iter, 1)))))


def figure_inputs(name, run_dirs, responses):
    """What figure `name` draws: figure7 {"columns"}: the response columns per model; the others
    {"curves", "panels"}: every run's history and the runs of each panel. Checked before drawing."""
    if name == "figure7":
        columns = _response_columns(run_dirs, responses)
        if not columns:
            raise ReproError(
                "figure7 needs layer responses: give --responses CSV or --run RUN (with RUN/responses.csv)"
            )
        return {"columns": columns}
    curves = _curves(run_dirs)
    panels = [(title, [c for c in curves if fits(c[0])]) for title, fits in PANELS[name]]
    used = {id(c) for _, cs in panels for c in cs}
    for c in curves:
        if id(c) not in used:
            print(
                f"resnet-repro: warning: {name} has no panel for {c[0].name} (seed {c[1]}); not drawn", file=sys.stderr
            )
    for title, cs in panels:
        if not cs:
            raise ReproError(f"{name}: no run for the {title!r} panel (give --run directories of those models)")
    return {"curves": curves, "panels": panels}


def draw_responses(fig, columns, palette):
    """Figure 7: each model's response std by layer, in layer order (top) and sorted (bottom)."""
    axes = fig.subplots(2, 1)
    for i, (model, v) in enumerate(columns.items()):
        std = v["std"]
        try:
            m = parse_model_name(model)
            style = dict(color=colour(m.depth, i, palette), ls="-" if m.residual else "--", label=model_label(m))
        except ReproError:
            style = dict(color=palette[i % len(palette)], label=model)
        axes[0].plot(range(1, len(std) + 1), std, lw=1.2, **style)
        axes[1].plot(range(1, len(std) + 1), sorted(std, reverse=True), lw=1.2, **style)
    axes[0].set_xlabel("layer index (original)")
    axes[1].set_xlabel("layer index (sorted by magnitude)")
    for ax in axes:
        ax.set_ylabel("std")
        ax.legend(loc="best", ncol=len(columns) // 3 + 1)


def draw_curves(fig, name, curves, panels, palette):
    """Figures 1, 4 and 6: error curves, one panel per group of models, as the paper draws them."""
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    scale = _xscale(max(max(h["iteration"]) for _, _, h in curves))
    shown = []
    for p, (ax, (title, cs)) in enumerate(zip(axes, panels)):
        seen = set()
        for i, (m, seed, h) in enumerate(cs):
            x = [it / scale for it in h["iteration"]]
            col = colour(m.depth, i, palette)
            lab = None if model_label(m) in seen else model_label(m)
            seen.add(model_label(m))
            skip = next(j for j, it in enumerate(h["iteration"]) if it >= 0.1 * h["iteration"][-1])
            if name == "figure1":  # left training error, right test error, same runs
                key = "train_error" if p == 0 else "test_error"
                ax.plot(x, h[key], color=col, lw=1.5, label=lab)
                shown += h[key][skip:]
            else:  # figure6: dashed training / bold test; figure4: thin training / bold val
                thin, ls = (0.8, "-") if name == "figure4" else (1.0, "--")
                ax.plot(x, h["train_error"], color=col, lw=thin, ls=ls)
                ax.plot(x, h["test_error"], color=col, lw=2.0, label=lab)
                shown += h["train_error"][skip:] + h["test_error"][skip:]
        ax.set_title(title)
        ax.set_xlabel(f"iter. (1e{round(math.log10(scale))})")
        ax.legend(loc="upper right")
    if name == "figure1":
        axes[0].set_ylabel("training error (%)")
        axes[1].set_ylabel("test error (%)")
        axes[1].yaxis.set_tick_params(labelleft=True)
    else:
        axes[0].set_ylabel("error (%)")
    axes[0].set_ylim(*_ylim(shown))


def draw_figure(name, run_dirs=(), responses=(), out=None, preset=None):
    """Draw figure `name` from the given run directories (and, for figure7, responses CSVs); write
    `out` (.pdf) and the same figure as .png beside it. Returns the two paths."""
    if name not in FIGURES:
        raise ReproError(f"unknown figure {name!r}: choose one of {', '.join(FIGURES)}")
    out = Path(out or f"reports/{name}.pdf")
    if out.suffix != ".pdf":
        raise ReproError(f"--out must be a .pdf file (the .png is written beside it), got {out}")
    preset = preset or preset_of(list(run_dirs) + list(responses))
    inputs = figure_inputs(name, run_dirs, responses)

    import matplotlib
    import seaborn
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    from resnet_repro.files import write_with

    palette = seaborn.color_palette("colorblind")  # for depths the paper gives no colour
    rc = {"font.size": 9, "legend.fontsize": 8, "legend.frameon": False, "pdf.fonttype": 42}
    with seaborn.axes_style("whitegrid"), seaborn.plotting_context("paper"), matplotlib.rc_context(rc):
        if name == "figure7":
            fig = Figure(figsize=(6.5, 5.5))
            draw_responses(fig, inputs["columns"], palette)
        else:
            fig = Figure(figsize=(4 * len(inputs["panels"]), 3.6))
            draw_curves(fig, name, inputs["curves"], inputs["panels"], palette)
        text = f"Figure {name[6:]}. " + caption(name, data_of_runs(run_dirs) if run_dirs else None)
        if name == "figure7":
            text += " " + responses_note(inputs["columns"])
        wrapped = textwrap.wrap(text, int(16 * fig.get_figwidth()))  # ~16 characters per inch at 7 pt
        fig.text(0.01, 0.01, "\n".join(wrapped), fontsize=7, va="bottom", ha="left")
        note = preset_note(preset)
        if note:
            fig.text(0.99, 0.995, note, fontsize=7, color="tab:red", va="top", ha="right")
        fig.tight_layout(rect=(0, (len(wrapped) + 1) * 0.11 / fig.get_figheight(), 1, 0.96))
        png = out.with_suffix(".png")
        write_with(out, lambda f: fig.savefig(f, format="pdf", metadata={"CreationDate": None}))
        write_with(png, lambda f: fig.savefig(f, format="png", dpi=150))
    return out, png
