"""The conda environment and pyproject.toml name the same dependencies with the same pins."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert set(p for p in pip if not p.startswith("-e")) == wanted
    assert "python=3.11" in env["dependencies"]
    assert project["requires-python"].startswith(">=3.11")


def test_workflow_env_has_the_runtime_dependencies():
    """The jobs' conda environment (snakemake --sdm conda): pyproject's runtime dependencies, and a
    post-deploy script that installs the package itself."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = yaml.safe_load((ROOT / "workflow" / "envs" / "resnet-repro.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert pip == project["dependencies"] and "python=3.11" in env["dependencies"]
    assert "pip install --no-deps -e ." in (ROOT / "workflow" / "envs" / "resnet-repro.post-deploy.sh").read_text()


def test_torch_is_pinned():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "torch==2.14.1" in deps and "torchvision==0.29.1" in deps


def test_readme_layout_names_every_module_and_workflow_folder():
    layout = (ROOT / "README.md").read_text().split("## Layout", 1)[1]
    words = set(layout.replace(",", " ").replace("/", " ").split())
    modules = {p.stem for p in (ROOT / "src" / "resnet_repro").glob("*.py")} - {"__init__", "__main__"}
    assert modules <= words, sorted(modules - words)
    folders = {p.name for p in (ROOT / "workflow").iterdir() if p.is_dir()}
    named = [w for w in layout.split() if w.startswith("workflow/")]
    assert all(any(w.startswith(f"workflow/{f}/") for w in named) for f in folders), (folders, named)
