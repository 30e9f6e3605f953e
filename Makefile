# Every target sets itself up: a fresh clone needs only `make test` or `make repro`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export NO_ALBUMENTATIONS_UPDATE := 1
export DVC_NO_ANALYTICS := 1
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONHASHSEED := 0
# DVC stages call `python` and `restorevar`: the project's environment comes first
export PATH := $(abspath $(VENV))/bin:$(PATH)
UI_HOST ?= 127.0.0.1
UI_PORT ?= 5000

.PHONY: setup test test-slow repro pretrain ui lint regress clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "setuptools<81" wheel
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The suite CI runs; the tests marked slow (whole studies of the small and paper profiles, over ten minutes
# each on 2 cores) run with test-slow, which CI leaves out to stay within its time.
test: setup
	$(PY) -m pytest -q -m "not slow"

test-slow: setup
	$(PY) -m pytest -q -m slow

# The whole study: params are checked first (a typo fails in seconds, naming the key), then DVC runs
# every stage whose inputs changed. Training stages resume from their last checkpoint after a kill.
repro: setup
	mkdir -p reports
	$(PY) -m pipelines.validate
	$(VENV)/bin/dvc repro dvc.yaml

# The pretraining tier (pretrain/pipeline.yaml, read by DVC during this run only): corpus, tokenizer and prior for the profile's preset, then the
# weights and model card shipped in restorevar/pretrained/<preset>/ that `make repro` starts from. It needs
# `apt-get download` (the Debian mirror) for the corpus; ~60 min for the cpu preset on 2 cores.
pretrain: setup
	$(PY) -m pipelines.validate
	$(PY) -m pipelines.pretrain_tier
	$(PY) -m pipelines.ship_pretrained

# The MLflow UI on this machine only; UI_HOST=0.0.0.0 exposes it (think twice).
ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(abspath mlflow.db) --host $(UI_HOST) --port $(UI_PORT)

# The tiny study in a temporary copy, compared with the committed baseline (what CI runs after the tests);
# reports/regression.md holds the verdict and the table, for a pull request to show. TINY_METRICS=FILE
# compares FILE instead of running the study: the pipeline tests run the same study and write it there when
# RESTOREVAR_TINY_METRICS=FILE is set, as CI does, so that CI runs the tiny study once.
TINY_METRICS ?=
regress: setup
	$(if $(TINY_METRICS),,$(PY) -m benchmarks.tiny_run --out .regress/metrics.json)
	$(VENV)/bin/restorevar regress --baseline benchmarks/baseline.json \
		--current $(or $(TINY_METRICS),.regress/metrics.json) --report reports/regression.md

lint: setup
	$(VENV)/bin/ruff check restorevar tests pipelines benchmarks tools
	$(PY) -m tools.dvc_deps --check

clean:
	rm -rf $(VENV) .pytest_cache
