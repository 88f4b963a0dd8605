# tensorforge: `make demo`, `make test`, `make fuzz`, `make bench`, `make docs`. Each target creates .venv if missing and
# installs the project with its pinned dependencies first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
KERAS_HUB := 0.32.0
# The TF.js harness: Node.js + @tensorflow/tfjs, pinned by tests/js/package-lock.json.
JS_STAMP := tests/js/node_modules/.package-lock.json

.PHONY: demo test test-slow fuzz bench docs install clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# KerasHub for the model sweep and its tests, without tensorflow-text (see pyproject.toml).
	$(PY) -m pip install --quiet --no-deps keras-hub==$(KERAS_HUB)
	touch $(STAMP)

demo: $(STAMP) $(JS_STAMP)
	$(PY) -m tensorforge.tools.demo

$(JS_STAMP): tests/js/package-lock.json
	cd tests/js && npm ci --ignore-scripts --no-audit --no-fund

test: $(STAMP) $(JS_STAMP)
	$(VENV)/bin/lint-imports
	$(PY) -m pytest --rootdir=tests -m "not slow"

# A long fuzzing campaign over every reader of user input (tests/fuzz runs a short one in
# `make test`): prints inputs per campaign and the crash signatures; fails on any crash, hang,
# half-written output or error that does not name its input. FUZZ_N inputs per campaign.
FUZZ_N ?= 1000
fuzz: $(STAMP)
	$(PY) -W ignore -m tensorforge.tools.fuzz --n $(FUZZ_N)

test-slow: $(STAMP) $(JS_STAMP)
	$(PY) -m pytest --rootdir=tests -m slow

bench: $(STAMP)
	$(PY) -m tensorforge.tools.bench

# Regenerates the pages read off the code (CLI, passes, op support), then builds the site into
# build/site; strict: a warning (broken link, undocumented public name) fails the build.
docs: $(STAMP)
	$(PY) -m tensorforge.tools.docgen docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict   # -m: .venv/bin/tensorforge must not shadow the package

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
