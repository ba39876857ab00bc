"""The conda environment and pyproject.toml name the same dependencies with the same pins."""

import shutil
import subprocess
import sys
import tomllib
import zipfile
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


def test_the_wheel_holds_the_package_data_and_every_subpackage(tmp_path):
    """A wheel, not the editable install (which hides a wrong package-data glob): reference.yaml, the
    spec YAMLs, the report's templates and every module of every subpackage are in it."""
    # built from a copy: setuptools leaves build/ in the tree it builds, and a stale one would hide a miss
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    wheel = [sys.executable, "-m", "pip", "wheel", str(tree), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*wheel, "-w", str(tmp_path)], check=True, cwd=tree)
    names = set(zipfile.ZipFile(next(tmp_path.glob("*.whl"))).namelist())
    package = ROOT / "src" / "resnet_repro"
    data = ["paper/reference.yaml", "spec/specs/cifar.yaml", "spec/specs/imagenet.yaml"]
    data += ["spec/specs/train_spec.schema.yaml", "report/templates/report.html", "report/templates/report.css"]
    modules = [str(p.relative_to(package.parent)) for p in package.rglob("*.py")]
    assert sorted(({f"resnet_repro/{d}" for d in data} | set(modules)) - names) == []
