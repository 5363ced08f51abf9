# Two entry points for a fresh machine (only python3 needed): `make demo` and `make test`.
# Each creates .venv and installs what it needs; `make docs` builds the docs site into docs/_build/html.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is declared as torch>=2.5 in pyproject.toml; this line only picks the build to install first.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export HF_HUB_OFFLINE := 1

.PHONY: install demo test test-slow lint bench docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

$(VENV)/.docs-installed: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[docs]'
	touch $@

demo: install
	$(VENV)/bin/ctseg demo --out demo_out

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(PY) -m pytest -q

test-slow: $(VENV)/.docs-installed  # the slow set includes the docs build
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY:-PASSIVE} $(PY) -m pytest -q -m slow

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install
	$(PY) benchmarks/ct_cost.py

# Any warning fails the build (-W; --keep-going lists them all), so does a cross-reference that does not resolve
# (-n); -E starts from a fresh environment, so an earlier build never hides a warning.
docs: $(VENV)/.docs-installed
	$(VENV)/bin/sphinx-build -E -W --keep-going -n -q docs docs/_build/html

clean:
	rm -rf $(VENV) demo_out .pytest_cache docs/_build
