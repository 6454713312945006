"""The scripts as users run them: subprocesses on the tiny preset."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT


def run(*args, check=True):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = run("train/base.py", "--config", "configs/base_tiny.yaml", f"train.output_dir={out}")
    return out, proc


def test_train_writes_checkpoints_samples_and_pipeline(trained):
    out, _ = trained
    checkpoints = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert checkpoints == ["step_00000003", "step_00000006"]
    for name in ("model.safetensors", "ema.safetensors", "optimizer.bin", "trainer_state.json"):
        assert (out / "checkpoints" / "step_00000006" / name).is_file()
    assert json.loads((out / "checkpoints" / "step_00000006" / "trainer_state.json").read_text())["step"] == 6
    grid = Image.open(out / "samples" / "step_00000006.png")
    assert grid.height > grid.width  # ten class rows of two images
    assert (out / "pipeline" / "cascade.json").is_file()
    assert list((out / "logs").rglob("events.out.tfevents*"))
    assert (out / "config.yaml").is_file()


def test_resume_continues_from_the_latest_checkpoint(trained):
    out, _ = trained
    proc = run("train/base.py", "--config", "configs/base_tiny.yaml", f"train.output_dir={out}", "train.max_steps=8",
               "--resume")
    assert "resumed from" in proc.stdout + proc.stderr and "step_00000006 (step 6)" in proc.stdout + proc.stderr
    state = json.loads((out / "checkpoints" / "step_00000008" / "trainer_state.json").read_text())
    assert state["step"] == 8
    assert not list((out / "checkpoints").glob("*.tmp"))
    assert len(list((out / "checkpoints").iterdir())) == 2  # keep_last


def test_sample_cli_writes_a_labelled_grid(trained, tmp_path):
    out, _ = trained
    proc = run("eval/sample.py", "--pipeline", out / "pipeline", "--classes", "0", "cat", "--per-class", "3",
               "--steps", "2", "--out", tmp_path / "grid.png")
    assert "2 rows x 3 images" in proc.stdout
    grid = Image.open(tmp_path / "grid.png")
    assert grid.width > grid.height
    bad = run("eval/sample.py", "--pipeline", out / "pipeline", "--classes", "unicorn", "--out", tmp_path / "x.png",
              check=False)
    assert bad.returncode == 2 and "unknown class name 'unicorn'" in bad.stderr


def test_accelerate_launch(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "train/base.py", "--config", "configs/base_tiny.yaml",
           f"train.output_dir={tmp_path}", "train.max_steps=2", "train.save_every=0"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "checkpoints" / "step_00000002").is_dir()


@pytest.mark.parametrize("override, message", [
    ("train.lrr=1", "unknown key 'train.lrr'"),
    ("model.num_classes=4", "has 10 classes"),
    ("data.source=imagefolder", "data.path=None is required"),
])
def test_bad_input_gives_one_line_errors(override, message, tmp_path):
    proc = run("train/base.py", "--config", "configs/base_tiny.yaml", f"train.output_dir={tmp_path}", override,
               check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr


def test_undecodable_image_in_training_names_the_file(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        Image.new("RGB", (20, 20), (200, 10, 10)).save(tmp_path / "data" / cls / "ok.png")
    (tmp_path / "data" / "b" / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    args = ["train/base.py", "--config", "configs/base_tiny.yaml", f"train.output_dir={tmp_path / 'run'}",
            "data.source=imagefolder", f"data.path={tmp_path / 'data'}", "model.num_classes=2", "train.batch_size=3",
            "train.max_steps=2"]
    proc = run(*args, check=False)
    assert proc.returncode == 2 and "truncated.png: cannot decode image" in proc.stderr, proc.stderr[-2000:]
    ok = run(*args, "data.on_bad_image=skip")
    assert "skipping" in ok.stderr and "truncated.png" in ok.stderr


@pytest.fixture(scope="module")
def trained_sr(tmp_path_factory):
    out = tmp_path_factory.mktemp("sr")
    # 16 -> 32 px, so that it chains after base_tiny's 16 px model
    run("train/sr3.py", "--config", "configs/sr3_tiny.yaml", f"train.output_dir={out}", "model.sample_size=32",
        "sr.residual=true")
    return out


def test_sr3_training_writes_triplets_checkpoints_and_an_upsampler(trained_sr):
    out = trained_sr
    assert (out / "checkpoints" / "step_00000006" / "ema.safetensors").is_file()
    grid = Image.open(out / "samples" / "step_00000006.png")
    assert grid.width == 3 * 32 + 4 * 2 and grid.height == 3 * 32 + 4 * 2  # 3 rows of (LR | SR | HR)
    stage = json.loads((out / "pipeline" / "stage_0" / "stage.json").read_text())
    assert stage["scale"] == 2 and stage["aug_level"] == 0.05 and stage["residual"] and stage["residual_scale"] == 4.0
    scheduler = json.loads((out / "pipeline" / "stage_0" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["clip_sample"] is False  # a scaled residual may leave [-1, 1]


def test_assemble_sample_and_upscale_clis(trained, trained_sr, tmp_path):
    base, sr = trained[0] / "pipeline", trained_sr / "pipeline"
    proc = run("-m", "cascade", "assemble", tmp_path / "cascade", base, sr)
    assert "2 stages (16 px -> 32 px)" in proc.stdout
    proc = run("eval/sample.py", "--pipeline", tmp_path / "cascade", "--classes", "0", "1", "--per-class", "2",
               "--steps", "2", "--zoom", "1", "--out", tmp_path / "grid.png")
    grid = Image.open(tmp_path / "grid.png")
    assert grid.height == 2 + 2 * (32 + 2)  # two class rows at the final size
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (13, 21, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    proc = run("-m", "cascade", "upscale", tmp_path / "in.png", tmp_path / "out.png", "--pipeline", tmp_path / "cascade",
               "--steps", "2")
    assert Image.open(tmp_path / "out.png").size == (42, 26) and "21x13 -> 42x26" in proc.stdout
    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad = run("-m", "cascade", "upscale", tmp_path / "bad.png", tmp_path / "o.png", "--pipeline", sr, check=False)
    assert bad.returncode == 2 and "bad.png: cannot read image" in bad.stderr
    mismatch = run("-m", "cascade", "assemble", tmp_path / "x", sr, base, check=False)
    assert mismatch.returncode == 2 and "only stage 0 may be" in mismatch.stderr


def test_sr_heldout_reports_bicubic_and_each_level(trained_sr, tmp_path):
    proc = run("eval/sr_heldout.py", "--pipeline", trained_sr / "pipeline", "--num", "4", "--steps", "2",
               "--aug-levels", "0", "0.1", "--out", tmp_path / "h.png")
    assert "| bicubic" in proc.stdout and "SR s=0 " in proc.stdout and "SR s=0.1" in proc.stdout
    table = json.loads((tmp_path / "h.json").read_text())["rows"]
    assert table["bicubic"]["consistency_mse"] < 1e-3  # bicubic then the antialiased downsampler: nearly identity
    assert Image.open(tmp_path / "h.png").size == (2 * (4 * 32 + 5 * 2), 2 * (4 * 32 + 5 * 2))


def test_upscale_without_a_pipeline_says_how_to_get_one(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "cascade", "upscale", "in.png", "out.png"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no pipeline at runs/cascade_photos: run `make demo` first" in proc.stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("script, config, stop_at", [
    ("train/base.py", "configs/base_tiny.yaml", 5),  # resume mid-epoch (8 batches per epoch), then cross into epoch 1
    ("train/base.py", "configs/base_tiny.yaml", 8),  # resume exactly at an epoch boundary
    ("train/sr3.py", "configs/sr3_tiny.yaml", 5),
])
def test_resumed_run_equals_the_uninterrupted_one_bit_for_bit(script, config, stop_at, tmp_path):
    from safetensors.torch import load_file

    common = [script, "--config", config, "train.max_steps=10", "train.save_every=0", "train.sample_every=4"]
    run(*common, f"train.output_dir={tmp_path / 'straight'}")
    run(*common[:-2], f"train.max_steps={stop_at}", "train.save_every=0", "train.sample_every=4",
        f"train.output_dir={tmp_path / 'split'}")
    proc = run(*common, f"train.output_dir={tmp_path / 'split'}", "--resume")
    assert f"(step {stop_at})" in proc.stdout + proc.stderr
    for name in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "straight" / "checkpoints" / "step_00000010" / name)
        b = load_file(tmp_path / "split" / "checkpoints" / "step_00000010" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}:{key} differs after resuming at step {stop_at}"
