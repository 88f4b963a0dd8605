# tensorforge: `make demo`, `make test`, `make bench`. Each target creates .venv if missing and
# installs the project with its pinned dependencies first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test test-slow bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tensorforge.tools.demo

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest --rootdir=tests -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest --rootdir=tests -m slow

bench: $(STAMP)
	$(PY) -m tensorforge.tools.bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
