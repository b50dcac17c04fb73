# Two targets users need: `make run` (set up what is missing, run the pipeline on the built-in maze) and
# `make test` (set up what is missing, lint, run the test suite). Both are idempotent: the venv is rebuilt only
# when pyproject.toml changes.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ld-installed
ARGS   ?=

.PHONY: setup run test bench clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# The pinned CPU wheel is local on our machines; elsewhere pip fetches the same release from PyPI.
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.4,<2.15"
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	@touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/latentdiffuser run $(ARGS)

test: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/python -m pytest -q $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
