# Two commands on a fresh machine: `make demo` (the main job on the embedded default data set)
# and `make test` (the test suite). Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo test test-all clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (Python 3.11 is required)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: venv
	$(BIN)/resnet-repro train --model resnet20 --data digits --image-size 16 --max-iters 600 \
		--milestones 400,500 --log-every 50 --checkpoint-every 200 --out runs/demo/resnet20 --resume
	$(BIN)/resnet-repro evaluate runs/demo/resnet20/checkpoint.pt --out runs/demo/resnet20/eval
	$(BIN)/resnet-repro responses runs/demo/resnet20/checkpoint.pt --out runs/demo/resnet20/responses.csv

test: venv
	$(BIN)/pytest -m "not slow"

test-all: venv
	$(BIN)/pytest

clean:
	rm -rf $(VENV) runs
