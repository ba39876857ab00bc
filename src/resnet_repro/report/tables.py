"""Tables 2-6 of the paper with our reproduced numbers beside the paper's.

Every table lists the paper's rows (its own models: source `paper`; other work: `literature`), then
any model we ran that the paper does not list (source `ours`). Reproduced cells come only from the
given runs; a row without runs has them empty. pandas, models and files (torch) are imported inside
the functions that use them."""

import json
from pathlib import Path

from resnet_repro.errors import ReproError
from resnet_repro.paper.catalogue import ARTIFACT, TABLES
from resnet_repro.paper.names import parse_model_name
from resnet_repro.paper.text import data_name, preset_note, reference
from resnet_repro.rundir import RunDir, preset_of, run_of_file, scores_metrics, view_metrics, view_of_scores

# each table's error columns (what it is and needs: catalogue.ARTIFACT)
ERROR_COLUMNS = {
    "table2": ["top1"],
    "table3": ["top1", "top5"],
    "table4": ["top1", "top5"],
    "table5": ["top5"],
    "table6": ["error"],
}
# the shortcut option of the paper's ResNets where its table does not state it
PAPER_SHORTCUT = {"table2": "A"}
NOTES = {
    "table2": "ImageNet val, 10-crop testing (our crops as each evaluation recorded them: column `views`). The paper's ResNets here use option A shortcuts (our resnet18-A, resnet34-A).",
    "table3": "ImageNet val, 10-crop testing (our crops as each evaluation recorded them: column `views`). Rows are matched by depth and shortcut option: resnet34-A, resnet34-C, and resnet34 (= option B, as resnet50/101/152).",
    "table4": "ImageNet val, fully-convolutional multi-scale testing (the paper: softmax averaged over shorter sides "
    "224, 256, 384, 480, 640; its text names no mirrored images). Ours: column `views`, what each evaluation "
    "averaged; where paper_split is `test` the paper's number is on the test set.",
    "table5": "Top-5 error of an ensemble. The paper's numbers are on the ImageNet **test** set (test server); "
    "ours are on the val split, so they differ in data as well as in model. Members are listed below the ensemble "
    "(column `views`: the test views each member's scores averaged).",
    "table6": "CIFAR-10 test error. params_m is counted from our model. error_best is the minimum over seeds, "
    "error_mean/error_std the mean and the *sample* standard deviation (ddof=1; empty for one run).",
}
DIFF_NOTE = {
    "table6": "diff = error_mean - the paper's mean where the paper gives one (ResNet-110: 6.61 over 5 runs; Highway-19: 7.72), "
    "else error_mean - the paper's single value.",
}


def canonical(name):
    """The project's one name per architecture (ModelSpec.name), so 'resnet34-B' and 'resnet34' meet:
    ImageNet ResNets are option B unless suffixed (resnet34-A), CIFAR ones option A."""
    return parse_model_name(name).name


def read_metrics(run, view):
    """A run's evaluation in `view` (top1, top5, split, and the precision and views in words)."""
    m = run.eval_metrics(view)
    try:
        v = m["views"][view]
        return {
            "top1": float(v["top1_error"]),
            "top5": float(v["top5_error"]),
            "split": m.get("split", ""),
            "precision": precision_label(m),
            "views": view_label(view, v),
        }
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        path = run.dir / view_metrics(view)
        raise ReproError(f"{path} is malformed: {e.__class__.__name__}: {e}") from None


def view_label(view, v):
    """What one evaluated view averaged, in words, from its entry in metrics.json ('views'): e.g.
    'multi-scale 224/256/384/480/640, whole image + mirror, per-channel mean'. Keys an older
    evaluation did not record are said to be unrecorded, never assumed."""
    v = v if isinstance(v, dict) else {}
    flips = v.get("flips")
    if view == "center":
        return "centre crop"
    if view == "single":
        return "single image"
    if view == "tencrop":
        return {
            True: "10 crops (4 corners + centre, and mirrors)",
            False: "5 crops (4 corners + centre, no mirrors)",
            None: "10-crop (mirrors not recorded)",
        }[flips if isinstance(flips, bool) else None]
    if view == "multiscale":
        scales = v.get("scales")
        scales = "/".join(map(str, scales)) if isinstance(scales, list) and scales else "scales not recorded"
        mirror = {True: "whole image + mirror", False: "whole image, no mirror", None: "mirrors not recorded"}[
            flips if isinstance(flips, bool) else None
        ]
        # evaluations before metrics.json recorded `mean` stretched the crop-sized mean image to each image
        mean = {"per-channel": "per-channel mean"}.get(v.get("mean"), "per-pixel mean stretched to the image")
        return f"multi-scale {scales}, {mirror}, {mean}"
    return f"{view} (unknown view)"


def precision_label(eval_metrics):
    """'train bf16, eval fp32': the arithmetic behind a reproduced number, from an evaluation's metrics.json."""
    return f"train {eval_metrics.get('train_precision', 'unknown')}, eval {eval_metrics.get('precision', 'unknown')}"


def read_runs(run_dirs, family, view):
    """[{model (canonical), seed, top1, top5, split, data}] for each run directory."""
    runs, seen = [], {}
    for path in dict.fromkeys(map(str, run_dirs)):
        run = RunDir(path)
        if run.family != family:
            raise ReproError(f"{path}: {run.spec['model']} is not a {family} model, it does not belong in this table")
        if not isinstance(run.seed, int):
            raise ReproError(f"{path}/spec.yaml is malformed: `seed` is not an integer")
        r = {"model": run.model, "seed": run.seed, "data": data_name(run.data), **read_metrics(run, view)}
        key = (r["model"], r["seed"])
        if key in seen:  # would count one result twice in the mean
            raise ReproError(f"runs {seen[key]} and {path} are both {r['model']} seed {r['seed']}")
        seen[key] = path
        runs.append(r)
    return runs


def _paper_rows(name):
    ref_key, metrics, shortcut = ARTIFACT[name].reference, ERROR_COLUMNS[name], PAPER_SHORTCUT.get(name)
    rows = []
    for r in reference()[ref_key]:
        lit = bool(r.get("literature"))
        model = r["model"]
        if not lit and name != "table5":  # table5's own row is an ensemble, not one model
            s = r.get("shortcut") or (shortcut if model.startswith("resnet") else None)
            model = canonical(model + (f"-{s}" if s else ""))
        paper_split = "test" if name in ("table5", "table6") or r.get("test_set") else "val"
        row = {"model": model, "source": "literature" if lit else "paper", "paper_split": paper_split}
        if name == "table6":
            row.update(
                layers=r["layers"],
                params_m_paper=r["params_m"],
                error_paper=r["error"],
                mean_paper=r.get("mean"),
                std_paper=r.get("std"),
            )
        else:
            row.update({f"{m}_paper": r.get(m) for m in metrics})
        rows.append(row)
    return rows


def _ours(group, name, metrics):
    """The reproduced cells of one model from its runs (one per seed)."""
    import numpy as np

    seeds = sorted(r["seed"] for r in group)
    out = {
        "n_runs": len(group),
        "seeds": ",".join(map(str, seeds)),
        "split": ",".join(sorted({r["split"] for r in group})),
        "data": "; ".join(sorted({str(r["data"]) for r in group})),
        "precision": "; ".join(sorted({r["precision"] for r in group})),
    }
    if name != "table6":  # CIFAR's single view has nothing to choose
        out["views"] = "; ".join(sorted({r["views"] for r in group}))
    for m in metrics:
        v = np.array([r["top1" if m == "error" else m] for r in group])
        std = v.std(ddof=1) if len(v) > 1 else np.nan  # sample std, the usual 'mean +- std' over runs
        if name == "table6":
            out.update(error_best=v.min(), error_mean=v.mean(), error_std=std)
        else:
            out.update({m: v.mean(), f"{m}_std": std})
    return out


TABLE6_COLUMNS = ["model", "source", "layers", "params_m_paper", "params_m", "error_paper", "mean_paper"]
TABLE6_COLUMNS += ["std_paper", "error_best", "error_mean", "error_std", "diff"]
TABLE5_COLUMNS = ["model", "source", "top5_paper", "top5", "top5_diff", "top1", "n_runs", "seeds", "paper_split"]
TABLE5_COLUMNS += ["split", "members", "data", "precision", "views"]


def columns(name, metrics):
    """A table's columns, in order (Table 5's: TABLE5_COLUMNS)."""
    if name == "table6":
        cols = TABLE6_COLUMNS
    else:
        cols = ["model", "source"] + [f"{m}{s}" for m in metrics for s in ("_paper", "", "_std", "_diff")]
    extra = ["views"] if name != "table6" else []
    return cols + ["n_runs", "seeds", "paper_split", "split", "data", "precision"] + extra


def table_rows(name, runs, metrics):
    """The paper's rows with our numbers beside them, then a row for each model we ran that it lacks."""
    from resnet_repro.models import build_model, count_params

    groups = {}
    for r in runs:
        groups.setdefault(r["model"], []).append(r)
    rows = _paper_rows(name)
    known = {r["model"] for r in rows if r["source"] == "paper"}
    for model in groups:
        if model not in known:
            m = parse_model_name(model)  # a name the project does not know fails here, in every table
            layers = {"layers": m.depth} if name == "table6" else {}
            rows.append({"model": model, "source": "ours", "paper_split": None, **layers})
    for row in rows:
        if row["source"] != "literature" and row["model"] in groups:
            row.update(_ours(groups[row["model"]], name, metrics))
            if name == "table6":
                row["params_m"] = count_params(build_model(row["model"])) / 1e6
    return rows


def make_table(name, run_dirs=(), ensemble=None, preset=None):
    """The table as a DataFrame: paper rows, reproduced cells beside them, differences."""
    import pandas as pd

    if name not in TABLES:
        raise ReproError(f"unknown table {name!r}: choose one of {', '.join(TABLES)}")
    family, view, metrics = ARTIFACT[name].family, ARTIFACT[name].view, ERROR_COLUMNS[name]
    if ARTIFACT[name].ensemble:
        for run in run_dirs:  # the ensemble's runs: only checked; members are found from the JSON's paths
            RunDir(run)
        return _table5(ensemble, preset)
    if ensemble:
        raise ReproError(f"--ensemble is for table5 only, not {name}")
    rows = table_rows(name, read_runs(run_dirs, family, view), metrics)
    df = pd.DataFrame(rows).reindex(columns=columns(name, metrics))
    if name == "table6":
        df["diff"] = df["error_mean"] - df["mean_paper"].fillna(df["error_paper"])
        df["layers"] = df["layers"].astype("Int64")
    else:
        for m in metrics:
            df[f"{m}_diff"] = df[m] - df[f"{m}_paper"]
    df["n_runs"] = df["n_runs"].fillna(0).astype(int)
    df.attrs["preset"] = preset
    return df


def read_ensemble(ensemble):
    """(ensemble's top-5, top-1, {member scores file: (top-5, top-1)}) from `resnet-repro ensemble --out`."""
    if not ensemble:
        raise ReproError("table5 needs --ensemble JSON (from `resnet-repro ensemble --out`)")
    path = Path(ensemble)
    try:
        e = json.loads(path.read_text())
        ens, members = e["ensemble"], e["members"]
        members = {f: (float(v["top5_error"]), float(v["top1_error"])) for f, v in members.items()}
        return float(ens["top5_error"]), float(ens["top1_error"]), members
    except FileNotFoundError:
        raise ReproError(f"{path} does not exist") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ReproError(f"{path} is malformed: {err.__class__.__name__}: {err}") from None


def _table5(ensemble, preset):
    import pandas as pd

    ens_top5, ens_top1, members = read_ensemble(ensemble)
    preset = preset or preset_of(members)  # the members' paths say which preset trained them
    rows = _paper_rows("table5")
    runs = {f: RunDir(run_of_file(f)) if run_of_file(f) else None for f in members}
    info = {f: (r.model, r.seed) if r else (Path(f).name, None) for f, r in runs.items()}  # (model, seed)
    ours = next(r for r in rows if r["source"] == "paper")  # the single "ResNet (ILSVRC'15)" row
    seeds = [str(s) for _, s in info.values() if s is not None]
    precision = {f: member_precision(f) for f in members}
    data = {f: data_name(r.data if r else None) for f, r in runs.items()}
    views = {f: member_views(f) for f in members}
    ours.update(
        top5=ens_top5,
        top1=ens_top1,
        n_runs=len(members),
        seeds=",".join(seeds),
        split="val",
        members=" + ".join(m for m, _ in info.values()),
        precision="; ".join(sorted(set(precision.values()))),
        data="; ".join(sorted(set(data.values()))),
        views="; ".join(sorted(set(views.values()))),
    )
    for f, (top5, top1) in members.items():
        model, seed = info[f]
        seed = "" if seed is None else str(seed)
        rows.append(
            dict(model=model, source="ours (ensemble member)", top5=top5, top1=top1, n_runs=1, seeds=seed)
            | dict(split="val", members=f, data=data[f], precision=precision[f], views=views[f])
        )
    df = pd.DataFrame(rows)
    df["top5_diff"] = df["top5"] - df["top5_paper"]
    df = df.reindex(columns=TABLE5_COLUMNS)
    df["n_runs"] = df["n_runs"].fillna(0).astype(int)
    df.attrs["preset"] = preset
    return df


def member_precision(scores_file):
    """The precision label of an ensemble member, from the evaluation's metrics.json beside its scores."""
    m = scores_metrics(scores_file)
    return precision_label(m) if m else "unknown"


def member_views(scores_file):
    """What an ensemble member's scores averaged (view_label), from the evaluation's metrics.json
    beside its scores; the view is the file's name, scores-<view>.npz."""
    view = view_of_scores(scores_file)
    v = scores_metrics(scores_file).get("views")
    if not isinstance(v, dict) or view not in v:
        return f"{view} (not recorded)"
    return view_label(view, v[view])


def table_data(df):
    """The data sets a table's reproduced rows were trained on, in words, each once ('' if none)."""
    return "; ".join(sorted({d for d in df.get("data", []) if isinstance(d, str) and d}))


def table_views(df):
    """The test views a table's reproduced rows averaged, each kind once ('' if none recorded)."""
    return "; ".join(sorted({v for s in df.get("views", []) if isinstance(s, str) for v in s.split("; ") if v}))


def to_markdown(df, name, preset=None):
    """A Markdown table (floats to 2 decimals, empty for missing) with the preset and notes above it."""
    import pandas as pd

    preset = preset or df.attrs.get("preset")
    data = table_data(df)
    lines = [f"# Table {name[5:]} of He et al. (2016), reproduced" + (f" on {data}" if data else ""), ""]
    lines.append(f"Preset: `{preset or 'unknown'}`." + (f" **{preset_note(preset)}.**" if preset_note(preset) else ""))
    views = table_views(df)
    views = f" Views averaged in our runs (from their metrics.json): {views}." if views else ""
    lines += [
        "",
        NOTES[name]
        + views
        + " "
        + DIFF_NOTE.get(name, "Differences (`*_diff`) are reproduced (mean over seeds) minus paper."),
        "",
        "source: `paper` = the paper's own models, `literature` = other work the paper cites, `ours` = a model "
        "we ran that the paper does not list. n_runs/seeds: the runs behind each reproduced value. "
        "paper_split/split: the evaluation split of the paper's number / of ours. precision: the arithmetic "
        "of our training and evaluation (bf16 autocast or fp32; evaluation is fp32 unless asked).",
        "",
    ]
    if name == "table5" and (df["source"] == "ours (ensemble member)").any():
        best = df.loc[df["source"] == "ours (ensemble member)", "top5"].min()
        ens = df.loc[df["source"] == "paper", "top5"].iloc[0]
        lines += [f"Ensemble top-5 {ens:.2f}% vs best member {best:.2f}% (gain {best - ens:+.2f} points).", ""]

    def cell(v):
        if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v)):
            return ""
        return f"{v:.2f}" if isinstance(v, float) else str(v).replace("|", "\\|")

    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    lines.append("| " + " | ".join(df.columns) + " |")
    lines.append("|" + "|".join("---:" if n else "---" for n in numeric) + "|")
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_table(df, name, out, preset=None):
    """Write out (.csv) and the Markdown beside it (.md); returns both paths."""
    from resnet_repro.files import write_text

    out = Path(out)
    if out.suffix != ".csv":
        raise ReproError(f"--out must be a .csv file (the .md is written beside it), got {out}")
    write_text(out, df.to_csv(index=False, float_format="%.4g"))  # 4 significant digits: the paper gives 3-4
    write_text(out.with_suffix(".md"), to_markdown(df, name, preset))
    return out, out.with_suffix(".md")
