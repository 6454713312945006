# Two commands for a fresh machine (see README):
#   make demo   set up .venv if missing, train the demo base model on the built-in photos, write a grid
#   make test   set up .venv if missing, run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(PY) -m accelerate.commands.launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no \
		--dynamo_backend no train/base.py --config configs/base_photos.yaml
	$(PY) eval/sample.py --pipeline runs/base_photos/pipeline --per-class 8 --zoom 3 --out runs/base_photos/grid.png

test: setup
	$(PY) -m pytest -q tests

clean:
	rm -rf runs
