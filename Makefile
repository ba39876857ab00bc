# Two commands on a fresh machine: `make demo` (every figure and table on the embedded digits data
# set, offline, CPU) and `make test` (the test suite). Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV)/bin)
# rules call `resnet-repro` and `snakemake` from the venv without activating it
export PATH := $(BIN):$(PATH)

.PHONY: venv demo test test-all test-slurm doctor mlflow mlflow-server clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	snakemake all --config preset=demo

# the browser tests need /usr/bin/chromium (`bash scripts/install-chromium.sh`); they skip, saying so, without it
test: venv
	ruff check .
	ruff format --check .
	pytest -m "not slow and not slurm"

# every code path on this node, briefly (a few minutes on a GPU node: `srun --gpus=N make doctor`)
doctor: venv
	resnet-repro doctor

# the workflow on a one-node Slurm on this machine (root; installs Slurm, munge, MariaDB from Debian)
test-slurm: venv
	bash tests/slurm/cluster.sh install
	pytest -m slurm tests/test_slurm.py

test-all: venv
	pytest

# the UI on the project's store, loopback only; one worker and no job runner (enough for one reader)
mlflow: venv
	@echo "open http://127.0.0.1:$${MLFLOW_PORT:-5000}/#/experiments?workflowType=machine_learning (MLflow 3 opens on its GenAI pages otherwise)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow ui --backend-store-uri sqlite:///mlflow.db \
		--host 127.0.0.1 --port $${MLFLOW_PORT:-5000} --workers 1

# a tracking server for a cluster (docs/tracking.md): trainings log to it live; its SQLite store and
# artifacts on this host's local disk (./mlflow-server/, or MLFLOW_SERVER_DIR). MLflow's basic auth:
# your MLFLOW_TRACKING_USERNAME/PASSWORD (or ~/.mlflow/credentials) make its admin account on the first
# start, and no credentials, no server. Loopback only unless MLFLOW_HOST is set (0.0.0.0: compute nodes).
mlflow-server: venv
	bash scripts/mlflow-server.sh

clean:
	rm -rf results reports logs mlflow.db mlartifacts data/digits-imagefolder .snakemake
