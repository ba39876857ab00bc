"""The house's rules (docs/layout.md), as tests: no import circle, no import into a later
layer, sizes that only shrink, a light command line, and benchmarks that still import."""

import ast
import importlib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "resnet_repro"


def layer_table(path):
    """The layers of docs/layout.md's table, lowest first: a tuple of package or module names per row
    (`paper/` is paper, `*/commands.py` every package's command line)."""
    section = path.read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|", section, re.M)
    assert [int(n) for n, _ in rows] == list(range(len(rows))), f"{path}: layers not numbered 0, 1, ..."
    names = lambda cell: tuple(
        "commands" if n == "*/commands.py" else n.rstrip("/") for n in re.findall(r"`([^`]+)`", cell)
    )
    return [names(cell) for _, cell in rows]


# docs/layout.md's layers, by package (or top-level module): a module imports only from its own layer or a
# lower one. Every package's command line (`*/commands.py`, argparse only) sits with cli at the top.
LAYERS = layer_table(ROOT / "docs" / "layout.md")
LAYER = {m: i for i, group in enumerate(LAYERS) for m in group}
# imports into a later layer, listed while a step of the move removes them; the list only shrinks
LATER_LAYER_TODAY = set()

# the size limits, and the offenders listed while they were split: a new one fails, and so does a
# listed one that now complies
MAX_MODULE, MAX_FUNCTION, MAX_CLASS = 400, 60, 150
OVERSIZED_TODAY = set()  # none left (issue 35): a new offender fails the test
HEAVY = ("torch", "mlflow", "pandas", "matplotlib", "scipy")


def module_name(path):
    """A module's dotted name inside the package: 'cli', 'training.loop', 'paper' (its __init__)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def modules():
    return {module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module):
    """A module's layer: its package's, or the command lines' for a */commands.py."""
    return LAYER["commands" if module.endswith(".commands") else module.split(".")[0]]


def imported(tree, known):
    """The package's modules a module imports, at its top or inside a function: `from resnet_repro.a
    import b` is a.b where that is a module (one of `known`), else a."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resnet_repro"):
            base = (node.module or "").removeprefix("resnet_repro").lstrip(".")
            for alias in node.names:
                full = f"{base}.{alias.name}" if base else alias.name
                out.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            out |= {a.name.removeprefix("resnet_repro.") for a in node.names if a.name.startswith("resnet_repro.")}
    return out - {""}


def graph():
    trees = modules()
    return {m: imported(t, set(trees)) & set(trees) - {m} for m, t in trees.items()}


def circles(edges):
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = set()
            while True:
                w = stack.pop()
                on.discard(w)
                part.add(w)
                if w == v:
                    break
            if len(part) > 1:
                out.append(sorted(part))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_no_import_circle():
    assert circles(graph()) == []


def test_circle_finder_finds_a_function_local_circle():
    a = ast.parse("def f():\n    from resnet_repro.b import x\n")
    b = ast.parse("from resnet_repro import a\n")
    assert imported(a, {"a", "b"}) == {"b"} and imported(b, {"a", "b"}) == {"a"}
    assert circles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_every_module_has_a_layer():
    missing = [m for m in modules() if m.split(".")[0] not in LAYER and not m.endswith(".commands")]
    assert missing == [], "place the new module or package in docs/layout.md's layer table"


def later_layer_imports():
    return {(m, d) for m, deps in graph().items() for d in deps if layer(d) > layer(m)}


def test_no_import_into_a_later_layer():
    found = later_layer_imports()
    assert sorted(found - LATER_LAYER_TODAY) == [], "an import into a later layer (docs/layout.md)"
    assert sorted(LATER_LAYER_TODAY - found) == [], "gone: remove it from LATER_LAYER_TODAY"


def oversized():
    out = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        name, text = module_name(path), path.read_text()
        tree = ast.parse(text, str(path))
        if len(text.splitlines()) > MAX_MODULE:
            out.add(f"module {name}")

        def walk(node, prefix):
            for c in ast.iter_child_nodes(node):
                if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    size = c.end_lineno - c.lineno + 1
                    kind = "class" if isinstance(c, ast.ClassDef) else "function"
                    if size > (MAX_CLASS if kind == "class" else MAX_FUNCTION):
                        out.add(f"{kind} {name}.{prefix}{c.name}")
                    walk(c, f"{prefix}{c.name}.")

        walk(tree, "")
    return out


def test_sizes_only_shrink():
    found = oversized()
    assert sorted(found - OVERSIZED_TODAY) == [], (
        f"over the limits (modules {MAX_MODULE} lines, functions {MAX_FUNCTION}, classes {MAX_CLASS})"
    )
    assert sorted(OVERSIZED_TODAY - found) == [], "within the limits now: remove it from OVERSIZED_TODAY"


LIGHT = """
import json, sys
from resnet_repro.cli import main
try:
    main(["--help"])
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
"""


def test_the_command_line_imports_no_heavy_package():
    """`resnet-repro --help` (every job builds the parser first) imports no torch, mlflow, pandas,
    matplotlib or scipy: each sub-command imports what it needs when it runs."""
    r = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, check=True)
    loaded = set(json.loads(r.stdout.splitlines()[-1]))
    assert sorted(loaded & set(HEAVY)) == []


def benchmark_imports():
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resnet_repro"):
                for alias in node.names:
                    yield path.name, node.module, alias.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("resnet_repro"):
                        yield path.name, alias.name, None


@pytest.mark.parametrize("script, module, name", list(benchmark_imports()))
def test_benchmark_imports_resolve(script, module, name):
    m = importlib.import_module(module)
    if name is not None:
        assert hasattr(m, name) or importlib.util.find_spec(f"{module}.{name}"), f"{script}: {module}.{name}"


def module_aliases(tree):
    """{local name: module} of a script's `from resnet_repro.x import y [as z]` where y is a module."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resnet_repro"):
            for alias in node.names:
                package = importlib.import_module(node.module)
                if hasattr(package, "__path__") and importlib.util.find_spec(f"{node.module}.{alias.name}"):
                    out[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmark_attributes_of_imported_modules_exist(path):
    """`report.judge` in a benchmark, where report is an imported module of the package: the module
    has it (a module import that still resolves after a move can lose its attributes)."""
    tree = ast.parse(path.read_text(), str(path))
    aliases = module_aliases(tree)
    missing = [
        f"{node.value.id}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
        if not hasattr(importlib.import_module(aliases[node.value.id]), node.attr)
    ]
    assert missing == []


# an artifact's name in a condition (`name == "table5"`, `in ("table5", "table6")`): what an artifact is
# and needs is the catalogue's; only its drawing (figures, tables) may branch on its name
NAME_BRANCH = re.compile(
    r"""(==|!=|\bin)\s*[(\[{]?\s*["'](figure|table)\d|["'](figure|table)\d["']\s*(==|!=|(not\s+)?in\b)"""
)
DRAWING = {"paper.catalogue", "report.figures", "report.tables"}


def test_no_artifact_name_branch_outside_the_catalogue_and_the_drawing():
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if module_name(path) not in DRAWING
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if NAME_BRANCH.search(line)
    ]
    assert found == []
    assert NAME_BRANCH.search('    if name == "figure7":') and NAME_BRANCH.search('if "table5" not in tables:')
    assert NAME_BRANCH.search('if name in {"table5", "table6"}:') and NAME_BRANCH.search('in ["figure7"]')


def test_the_workflow_names_no_artifact():
    """The rules ask the catalogue (through common.smk) what a figure or table needs."""
    smk = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in smk
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"(figure|table)\d", line.split("#")[0])
    ]
    assert found == []


# the files of a run directory: rundir names each (SPEC, HISTORY, ..., view_metrics(view)); the trainer,
# the evaluation, tracking, the report and the rules build their paths from those names
RUN_FILES = {
    "spec.yaml",
    "history.csv",
    "metrics.json",
    "model.pt",
    "checkpoint.pt",
    "train.lock",
    "mlflow.json",
    "mlflow-live.json",
    "responses.csv",
}


PATH_CALLS = {"Path", "join", "joinpath", "PurePath"}


def run_file_literals(tree):
    """Path-like strings (or f-string pieces) in a module that name a run directory's file or its eval/
    directory: 'metrics.json', f"{run}/eval/{view}", "scores-", `run / "eval" / view`."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)) or " " in node.value:
            continue
        parts = node.value.split("/")
        parent = parents.get(node)
        divided = isinstance(parent, ast.BinOp) and isinstance(parent.op, ast.Div)
        # Path(run, "eval", view), os.path.join(run, "eval"), run.joinpath("eval")
        call = getattr(parent, "func", None)
        divided |= isinstance(parent, ast.Call) and getattr(call, "id", getattr(call, "attr", "")) in PATH_CALLS
        if (
            RUN_FILES & set(parts)
            or node.value.startswith("scores-")
            or ("eval" in parts and (len(parts) > 1 or divided))
        ):
            yield node.lineno, node.value


def test_no_run_directory_file_name_outside_rundir():
    found = [
        f"{name}.py:{line}: {value!r}"
        for name, tree in modules().items()
        if name != "rundir"
        for line, value in run_file_literals(tree)
    ]
    assert found == []
    caught = ast.parse('a = run / "eval" / view / "metrics.json"\nb = f"{d}/eval/{v}"\nc = f"scores-{v}.npz"')
    assert len(list(run_file_literals(caught))) == 4
    assert len(list(run_file_literals(ast.parse('Path(run, "eval", view)\nos.path.join(r, "eval")')))) == 2
    assert list(run_file_literals(ast.parse('s.add_parser("eval", help="RUN/eval/<view>/metrics.json, each")'))) == []


def test_the_workflow_names_no_run_directory_file():
    """The rules name a run's files through common.smk (rundir's names), never by hand."""
    pattern = re.compile("|".join(re.escape(n) for n in sorted(RUN_FILES)) + r"|/eval/|scores-")
    smk = [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in smk
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line.split("#")[0])
    ]
    assert found == []
