# Two commands for a fresh machine (see README):
#   make demo   set up .venv if missing, train a small cascade (32 px base + 32->64 SR3) on the
#               built-in photos, write its sample grid and a held-out upscaling comparison
#   make test   set up .venv if missing, run the test suite
#   make demo-labels   train a small label-map cascade (32 px -> 64 px) on the built-in layouts, score it
#   make demo-one-shot train a one-shot cascade on one built-in photo (~16 min), generate from it, score it
#   make bench-distill distil the demo SR stage (six students, 12-25 min each), train its regression twin, and
#               write docs/distill/sr (the student against its teacher's samplers; docs/distillation.md)
#   make study-texture / study-regression / study-compute / study-augmentation
#               train the variants a study needs (runs/study/, skipped when already there) and run it
#               (docs/studies.md; a few hours on 2 CPU cores for all four)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: setup demo demo-labels demo-one-shot bench-distill test clean study-texture study-regression \
	study-compute study-augmentation

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
		--zoom 3 --out $(DEMO)/eval/heldout.png
	$(PY) -m cascade info $(DEMO)

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

# Few-step students of the demo SR stage (docs/distillation.md), without a critic: DDIM's eta in the teacher's step
# at 0 (LCM's ODE step), 0.5 and 1, consistency training (target data), progressive distillation (64 -> 4 DDIM
# steps, 400 iterations a round); with one (the default: eta 1, distill.adversarial 0.03); a regression stage
# trained like the teacher; then the table.
DISTILL := runs/distill
TEACHER := runs/sr3_photos/pipeline
eta0 := distill.eta=0.0 distill.adversarial=0
eta0.5 := distill.eta=0.5 distill.adversarial=0
eta1 := distill.adversarial=0
data := distill.target=data distill.adversarial=0
progressive := distill.method=progressive distill.adversarial=0 train.max_steps=400
adversarial :=

$(TEACHER)/cascade.json: | setup
	$(LAUNCH) train/sr3.py --config configs/sr3_photos.yaml
$(DISTILL)/regression/pipeline/cascade.json: | setup
	$(LAUNCH) train/sr3.py --config configs/sr3_photos.yaml sr.kind=regression train.output_dir=$(DISTILL)/regression
$(DISTILL)/%/pipeline/cascade.json: $(TEACHER)/cascade.json
	$(LAUNCH) train/distill.py --teacher $(TEACHER) --config configs/distill_sr3_photos.yaml $($*) \
		train.output_dir=$(DISTILL)/$*

bench-distill: $(foreach s,eta0 eta0.5 eta1 data progressive adversarial regression,$(DISTILL)/$(s)/pipeline/cascade.json)
	$(PY) eval/bench_distill.py --teacher $(TEACHER) \
		$(foreach s,eta0 eta0.5 eta1 data progressive adversarial,--student $(s)=$(DISTILL)/$(s)/pipeline) \
		--regression $(DISTILL)/regression/pipeline --reference-steps 0 --num 128 --seeds 0 1 --out docs/distill/sr

# The papers' findings at the demo's scale (docs/studies.md): one run per variant under runs/study/,
# each trained once (make skips variants whose pipeline exists), then eval/bench_studies.py.
STUDY := runs/study
SR := train/sr3.py --config configs/sr3_photos.yaml
STUDY_EVAL := $(PY) eval/bench_studies.py --runs $(STUDY) --num 128 --seeds 0 1 --out docs/studies
sr3 := $(SR)
sr3_x4 := $(SR) sr.residual_scale=4 sr.blur_prob=0.5
sr3_x1 := $(SR) sr.residual_scale=1 sr.blur_prob=0.5
sr3_x8_blur := $(SR) sr.blur_prob=0.5
sr3_x16_blur := $(SR) sr.residual_scale=16 sr.blur_prob=0.5
sr3_x4_noblur := $(SR) sr.residual_scale=4
sr3_x4_blur_only := $(SR) sr.residual_scale=4 sr.blur_prob=0.5 sr.noise_aug_max=0
sr3_x4_noaug := $(SR) sr.residual_scale=4 sr.noise_aug_max=0
regression := $(SR) sr.kind=regression sr.residual_scale=4 sr.blur_prob=0.5
base32 := train/base.py --config configs/base_photos.yaml
base64 := train/base.py --config configs/base_photos_64.yaml

$(STUDY)/%/pipeline/cascade.json: | setup
	$(LAUNCH) $($*) train.output_dir=$(STUDY)/$*

# 2x and 4x the demo's steps continue the demo preset's run (the learning rate is constant after warm-up, and a
# resumed run equals an uninterrupted one), so the three points cost 2800 steps, not 4900
$(STUDY)/sr3_1400/pipeline/cascade.json: $(STUDY)/sr3/pipeline/cascade.json
	rm -rf $(STUDY)/sr3_1400 && cp -r $(STUDY)/sr3 $(STUDY)/sr3_1400 && rm -rf $(STUDY)/sr3_1400/pipeline
	$(LAUNCH) $(SR) train.output_dir=$(STUDY)/sr3_1400 train.max_steps=1400 --resume
$(STUDY)/sr3_2800/pipeline/cascade.json: $(STUDY)/sr3_1400/pipeline/cascade.json
	rm -rf $(STUDY)/sr3_2800 && cp -r $(STUDY)/sr3_1400 $(STUDY)/sr3_2800 && rm -rf $(STUDY)/sr3_2800/pipeline
	$(LAUNCH) $(SR) train.output_dir=$(STUDY)/sr3_2800 train.max_steps=2800 --resume

study-texture: $(foreach r,sr3 sr3_x4 sr3_x1 sr3_x8_blur sr3_x16_blur sr3_x4_noblur,$(STUDY)/$(r)/pipeline/cascade.json)
	$(STUDY_EVAL) texture
study-regression: $(foreach r,sr3 sr3_x4 regression,$(STUDY)/$(r)/pipeline/cascade.json)
	$(STUDY_EVAL) regression --fid
study-compute: $(foreach r,sr3 sr3_1400 sr3_2800,$(STUDY)/$(r)/pipeline/cascade.json)
	$(STUDY_EVAL) compute --fid
study-augmentation: $(foreach r,sr3 sr3_x4 sr3_x4_noblur sr3_x4_blur_only sr3_x4_noaug base32 base64,$(STUDY)/$(r)/pipeline/cascade.json)
	$(STUDY_EVAL) augmentation

test: setup
	$(PY) -m pytest -q --durations=10 tests

clean:
	rm -rf runs
