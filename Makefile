# Two commands for a fresh machine (see README):
#   make demo   set up .venv if missing, train a small cascade (32 px base + 32->64 SR3) on the
#               built-in photos, write its sample grid and a held-out upscaling comparison
#   make test   set up .venv if missing, run the test suite
#   make demo-labels   train a small label-map cascade (32 px -> 64 px) on the built-in layouts, score it
#   make demo-one-shot train a one-shot cascade on one built-in photo (~30 min), generate from it, score it
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo demo-labels demo-one-shot test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

LAUNCH := $(PY) -m accelerate.commands.launch --cpu --num_processes 1 --num_machines 1 --mixed_precision no \
	--dynamo_backend no
DEMO := runs/cascade_photos

demo: setup
	$(LAUNCH) train/base.py --config configs/base_photos.yaml
	$(LAUNCH) train/sr3.py --config configs/sr3_photos.yaml
	$(PY) -m cascade assemble $(DEMO) runs/base_photos/pipeline runs/sr3_photos/pipeline
	$(PY) eval/sample.py --pipeline $(DEMO) --per-class 4 --zoom 3 --out $(DEMO)/samples.png
	$(PY) eval/sr.py --pipeline runs/sr3_photos/pipeline --num 32 --aug-levels 0 0.02 0.05 0.1 \
		--zoom 3 --out $(DEMO)/heldout.png

LABELS := runs/labels_layouts

demo-labels: setup
	$(LAUNCH) train/label_map.py --config configs/labels_base.yaml
	$(LAUNCH) train/label_map.py --config configs/labels_sr.yaml
	$(PY) -m cascade assemble $(LABELS) runs/labels_base/pipeline runs/labels_sr/pipeline
	$(PY) eval/label_map.py --pipeline $(LABELS) --out $(LABELS)/eval

ONE_SHOT := runs/one_shot

demo-one-shot: setup
	$(LAUNCH) train/one_shot.py --image builtin:china --config configs/one_shot.yaml
	$(PY) -m cascade generate --pipeline $(ONE_SHOT)/pipeline --size 1280x854 --num 4 --seed 0 --out $(ONE_SHOT)/samples
	$(PY) eval/one_shot.py --pipeline $(ONE_SHOT)/pipeline --image builtin:china --out $(ONE_SHOT)/eval

test: setup
	$(PY) -m pytest -q --durations=10 tests

clean:
	rm -rf runs
