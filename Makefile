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

.PHONY: setup test repro lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24" "setuptools<81" wheel
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

# The full study arrives with the pipeline issue; until then this reproduces what exists:
# the synthetic benchmark, the model-family summary for every preset and the checkpoint compatibility check.
repro: setup
	mkdir -p reports
	$(VENV)/bin/restorevar data synth --out data/synth --quiet
	$(VENV)/bin/restorevar data check data/synth/train.json --against data/synth/test.json
	for p in tiny small paper; do $(VENV)/bin/restorevar info --preset $$p --json > reports/model_info_$$p.json.tmp && mv reports/model_info_$$p.json.tmp reports/model_info_$$p.json; done
	$(VENV)/bin/restorevar convert-official --check-manifest ../shared/reference/official_state_dict_shapes.json --report reports/official_compat.json > /dev/null

lint: setup
	$(VENV)/bin/ruff check restorevar tests pipelines benchmarks

clean:
	rm -rf $(VENV) .pytest_cache
