# Quick start:  make demo   (teacher -> class-means -> CE / KD / KD++ students on Fashion-MNIST)
#               make test   (the test suite)
# Both set up .venv idempotently: pinned torch from this machine's disk, ndkd in editable mode with its
# test extras, and Debian's dataset-fashion-mnist when it is missing and apt is usable.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.ndkd-setup

.PHONY: setup dataset demo test clean-runs

setup: $(STAMP)

# Re-run only when the package metadata changes; a half-finished set-up leaves no stamp.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --disable-pip-version-check $(TORCH_PINS)
	$(PY) -m pip install -qq --disable-pip-version-check -e '.[test]' $(TORCH_PINS)
	@touch $(STAMP)

dataset:
	@sh scripts/ensure_fashion_mnist.sh

demo: setup dataset
	$(VENV)/bin/ndkd run configs/fashion_mnist/demo.yaml

test: setup dataset
	NDKD_REQUIRE_REAL_DATA=1 $(PY) -m pytest -q

clean-runs:
	rm -rf runs
