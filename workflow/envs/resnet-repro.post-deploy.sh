#!/usr/bin/env bash
# Snakemake runs this inside the new environment, from its working directory: the project root
# (where Snakefile and pyproject.toml are). The package goes in without dependencies (the env has them).
set -euo pipefail
test -f pyproject.toml || { echo "resnet-repro: run snakemake from the project root (no pyproject.toml in $PWD)" >&2; exit 1; }
python -m pip install --no-deps -e .
