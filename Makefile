# sgs developer entry points. `make test` is the README's test command and what CI runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo install parts test unit lint crds bench clean

# The stamp, not $(BIN)/sgs, says the test extras are in: README command 1 (`pip install -e .`) makes a .venv
# with sgs but without pytest, and `make test` after it must still install them.
STAMP  := $(VENV)/.sgs-dev-installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/sgs demo

# Debian packages (slurm-wlm, munge) and the Go binaries (etcd, kube-*, minio), cached under ~/.cache/sgs.
parts:
	bash tools/ci-setup.sh

test: install parts
	$(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/sgs crds --check

crds: install
	$(BIN)/sgs crds

bench: install
	$(BIN)/python bench/plan_100k.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
