"""The move of the flat package into its stage subpackages (../shared/design/HOUSE.md, issue 34): whole
modules by `git mv`, every import of them rewritten to its absolute new path (src, tests, benchmarks,
the workflow), the tests into folders that mirror the package. Idempotent: a module already moved is
left alone, a rewritten reference is not rewritten again, so an interrupted run is resumed by running
it again. Afterwards: `ruff check --fix --select I . && ruff format .`.

    python scripts/move_into_subpackages.py [--dry-run]
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "src" / "resnet_repro"

# flat module -> its module in the new layout (models, device, errors, files, digest, rundir, cli and
# __main__ stay where they are: logged MLflow models are pickled as resnet_repro.models.*)
MOVES = {
    "names": "paper.names",
    "paper": "paper.text",
    "catalogue": "paper.catalogue",
    "spec": "spec.build",
    "config": "plan",
    "mlflow_store": "tracking.store",
    "tracking": "tracking.record",
    "live": "tracking.live",
    "tracking_cli": "tracking.commands",
    "data": "data.sets",
    "views": "data.views",
    "batches": "training.batches",
    "schedule": "training.schedule",
    "parallel": "training.parallel",
    "runlock": "training.runlock",
    "train": "training.loop",
    "evaluate": "evaluation.evaluate",
    "analysis": "evaluation.responses",
    "figures": "report.figures",
    "tables": "report.tables",
    "noise": "report.noise",
    "claims": "report.claims",
    "report": "report.build",
    "report_html": "report.html",
    "report_pdf": "report.pdf",
    "report_cli": "report.commands",
    "doctor": "preflight.doctor",
    "estimate": "preflight.estimate",
}
# package data, beside the module that reads it
DATA = {"reference.yaml": "paper/reference.yaml", "specs": "spec/specs", "templates": "report/templates"}
# paths to package data written in code and docs
PATHS = {
    "src/resnet_repro/" + "specs/": "src/resnet_repro/spec/specs/",
    "src/resnet_repro/" + "reference.yaml": "src/resnet_repro/paper/reference.yaml",
}
PACKAGES = sorted({new.split(".")[0] for new in MOVES.values() if "." in new})
# a package's new modules: `resnet_repro.data.views` is new, `resnet_repro.data.jpeg_decoder` (then) is old
SUBMODULES = {p: {new.split(".")[1] for new in MOVES.values() if new.startswith(p + ".")} for p in PACKAGES}
INIT = {
    "paper": "What the paper says: the names it gives models, its numbers and captions, the artifact catalogue.",
    "spec": "Training specs: the family defaults (the paper's protocol), the schema, merging.",
    "tracking": "MLflow: the store, the record of trainings, evaluations and artifacts, live tracking, `track`.",
    "data": "Data sets (in memory and streamed) and the test views of a trained network.",
    "training": "The training loop and what it runs on: batches, schedules, DDP, the run directory's lock.",
    "evaluation": "A trained network evaluated: test views, ensembles, layer responses.",
    "report": "Figures, tables, the verdicts on the paper's claims, and the reproduction report.",
    "preflight": "Before a run: the checks of a node (doctor) and the cost of a target (estimate).",
}
TESTS = {
    "test_analysis.py": "evaluation",
    "test_evaluate.py": "evaluation",
    "test_claims.py": "report",
    "test_report.py": "report",
    "test_figures_tables.py": "report",
    "test_data.py": "data",
    "test_ddp.py": "training",
    "test_runlock.py": "training",
    "test_train.py": "training",
    "test_speed.py": "training",
    "test_doctor.py": "preflight",
    "test_tracking.py": "tracking",
    "test_live.py": "tracking",
    "test_concurrency.py": "tracking",
    "test_browser.py": "tracking",
}
TEXT = ("*.py", "*.smk", "Snakefile", "Makefile", "*.toml", "*.sh", "*.md", "run")


def git(*args, dry=False):
    print("git", *args)
    if not dry:
        subprocess.run(["git", *args], cwd=ROOT, check=True)


def files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    out += subprocess.run(
        ["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    paths = [ROOT / p for p in out if (ROOT / p).is_file() and ROOT / p != Path(__file__).resolve()]
    return [p for p in paths if any(p.match(g) for g in TEXT) and "shared" not in p.parts]  # never itself


def absolute(text):
    """The package's relative imports (all in one flat package today) made absolute."""
    text = re.sub(r"^(\s*)from \. import ", r"\1from resnet_repro import ", text, flags=re.M)
    return re.sub(r"^(\s*)from \.(\w+)", r"\1from resnet_repro.\2", text, flags=re.M)


def is_new(old, rest):
    """Whether `resnet_repro.<old><rest>` already names the new layout: a package's new module."""
    if old not in SUBMODULES:
        return False
    m = re.match(r"\.(\w+)", rest) or re.match(r" import \(?\s*(\w+)", rest)
    return bool(m) and m.group(1) in SUBMODULES[old]


def from_package(match):
    """`from resnet_repro import a, b as c  # noqa`: each moved name from its new package, under its old
    name (a trailing comment stays with each line)."""
    indent, names, comment = match.group(1), match.group(2), (match.group(3) or "").rstrip()
    lines, kept = [], []
    for item in (n.strip() for n in names.replace("(", "").replace(")", "").split(",")):
        name, _, alias = (p.strip() for p in item.partition(" as "))
        new, alias = MOVES.get(name), alias or name
        if not item:
            continue
        if new is None:
            kept.append(item)
            continue
        package, _, module = new.rpartition(".")
        source = f"resnet_repro.{package}" if package else "resnet_repro"
        lines.append(f"{indent}from {source} import {module}" + (f" as {alias}" if alias != module else "") + comment)
    if kept:
        lines.insert(0, f"{indent}from resnet_repro import {', '.join(kept)}" + comment)
    return "\n".join(lines)


def rewrite(text, old):
    """Every reference to the flat module `old` pointed at its new module: `from resnet_repro import
    old` and the dotted `resnet_repro.old[.name]` (imports, patch targets, comments)."""
    new = MOVES[old]
    text = re.sub(
        r"^([ \t]*)from resnet_repro import (\([^)]*\)|[^\n(#]*?)(\s*#[^\n]*)?$",
        lambda m: from_package(m) if old in re.findall(r"(?<![\w.])(\w+)(?: as \w+)?", m.group(2)) else m.group(0),
        text,
        flags=re.M,
    )

    def dotted(m):
        rest = m.group(1) or ""
        return m.group(0) if is_new(old, rest) else f"resnet_repro.{new}{rest}"

    return re.sub(rf"resnet_repro\.{old}\b((?:\.\w+)| import \(?\s*\w+)?", dotted, text)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="print the git commands, change nothing")
    dry = p.parse_args().dry_run
    if not dry:
        for path in PKG.glob("*.py"):
            path.write_text(absolute(path.read_text()))
    for old, new in MOVES.items():
        src = PKG / f"{old}.py"
        if not src.exists():
            continue  # moved before
        for path in files():
            text = path.read_text()
            changed = rewrite(text, old)
            if changed != text and not dry:
                path.write_text(changed)
        target = PKG / (new.replace(".", "/") + ".py")
        if not dry:
            target.parent.mkdir(exist_ok=True)
            init = target.parent / "__init__.py"
            if target.parent != PKG and not init.exists():
                init.write_text(f'"""{INIT[target.parent.name]}"""\n')
        git("mv", str(src.relative_to(ROOT)), str(target.relative_to(ROOT)), dry=dry)
    for path in files():
        text = path.read_text()
        for old, new in PATHS.items():
            text = text.replace(old, new)
        if text != path.read_text() and not dry:
            path.write_text(text)
    for old, new in DATA.items():
        if (PKG / old).exists():
            git("mv", str((PKG / old).relative_to(ROOT)), str((PKG / new).relative_to(ROOT)), dry=dry)
    for name, folder in TESTS.items():
        src = ROOT / "tests" / name
        if src.exists():
            if not dry:
                (ROOT / "tests" / folder).mkdir(exist_ok=True)
                src.write_text(
                    src.read_text().replace(
                        "Path(__file__).resolve().parents[1]", "Path(__file__).resolve().parents[2]"
                    )
                )
            git("mv", str(src.relative_to(ROOT)), f"tests/{folder}/{name}", dry=dry)
    if not dry:
        for path in PKG.rglob("__init__.py"):
            subprocess.run(["git", "add", str(path)], cwd=ROOT, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
