# Two commands do all the set-up on a fresh machine:
#   make demo   the main job on the embedded default
#   make test   the test suite (what CI runs)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# the CPU build on this machine's disk; newer torch works too
TORCH := torch==2.13.0

.PHONY: setup test test-fast mutants demo clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,export,serve]"
	touch $@

test: setup
	$(PY) -m pytest -q

# the quick loop: everything but training runs, export conversions and ViT-B/16 (about a minute)
test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# mutation testing of the modules that hold the contracts, against the fast tests; prints the score per
# module and every surviving mutant (about ten minutes on 2 cores; not part of CI)
mutants: setup
	$(PY) -m pip install --quiet "mutmut>=3.3"
	$(PY) tests/mutation.py

# train MobileViT-XXS on scikit-learn's digits, evaluate it, predict a few images, export a verified full-int8
# TFLite file for phones (a few minutes on 2 CPU cores)
demo: setup
	$(VENV)/bin/vitkit train --recipe digits_quickstart --output runs/demo --overwrite
	$(VENV)/bin/vitkit eval runs/demo
	$(VENV)/bin/vitkit samples digits --output runs/demo/samples --count 4
	$(VENV)/bin/vitkit predict runs/demo runs/demo/samples --top-k 3
	$(VENV)/bin/vitkit export runs/demo --format tflite --quantize int8

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache mutants
