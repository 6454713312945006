"""The scripts as users run them: subprocesses on the tiny preset (repeat calls of a script that
another test already runs as a subprocess go through conftest.run_in_process: same main, no new
interpreter)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, free_port, run, run_in_process, run_together


@pytest.fixture(scope="module")
def trained_both(tmp_path_factory):
    """The tiny base stage (16 px) and an SR3 stage that chains after it (16 -> 32 px), trained together."""
    base, sr = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("sr")
    procs = run_together(["train/base.py", "--config", "configs/base_tiny.yaml", f"train.output_dir={base}"],
                         ["train/sr3.py", "--config", "configs/sr3_tiny.yaml", f"train.output_dir={sr}",
                          "model.sample_size=32", "sr.residual=true"])
    return (base, procs[0]), sr


@pytest.fixture(scope="module")
def trained(trained_both):
    return trained_both[0]


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
    bad = run_in_process("eval/sample.py", "--pipeline", out / "pipeline", "--classes", "unicorn",
                         "--out", tmp_path / "x.png", check=False)
    assert bad.returncode == 2 and "unknown class name 'unicorn'" in bad.stderr


@pytest.mark.parametrize("script", ["train/base.py", "train/sr3.py"])
def test_two_processes_train_like_one_process_with_the_same_global_batch(script, tmp_path):
    """2 gloo processes with batch 4 each = 1 process with batch 8: same shards of one data order,
    same per-example draws, averaged gradients. Float reduction order differs, so equal to a
    tolerance (measured: 4e-4 of the update norm after 6 steps; another data order: ~80%).
    Dropout masks come from each process's own RNG, so the comparison runs without dropout."""
    from safetensors.torch import load_file

    common = [script, "--config", TINY[script], "train.max_steps=6", "train.save_every=3", "train.sample_every=3",
              "model.dropout=0"]
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    two, _ = run_together([*launch, *common, "train.batch_size=4", f"train.output_dir={tmp_path / 'two'}"],
                          [*common, "train.batch_size=8", f"train.output_dir={tmp_path / 'one'}"])
    assert (two.stdout + two.stderr).count("exported the EMA model") == 1  # logging and saving happen once
    ckpt = "checkpoints/step_00000006/model.safetensors"
    assert (tmp_path / "two" / "checkpoints" / "step_00000006" / "rng_state_1.safetensors").is_file()  # both ranks' RNG
    one, two = (load_file(tmp_path / d / ckpt) for d in ("one", "two"))
    start = load_file(tmp_path / "one" / "checkpoints" / "step_00000003" / "model.safetensors")
    diff = torch.cat([(one[k] - two[k]).flatten() for k in one]).norm()
    update = torch.cat([(one[k] - start[k]).flatten() for k in one]).norm()
    assert diff < 0.01 * update, f"2 processes differ from 1 by {diff / update:.2%} of the last 3 steps' update"


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
    ("model.cond_channels=1", "model: a base stage needs a UNet with cond_channels=0, not 1"),
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
    args = ["train/base.py", "--config", "configs/base_tiny.yaml", "data.source=imagefolder", f"data.path={tmp_path / 'data'}", "model.num_classes=2", "train.batch_size=3",
            "train.max_steps=2"]
    proc, ok = run_together([*args, f"train.output_dir={tmp_path / 'stop'}"],
                            [*args, "data.on_bad_image=skip", f"train.output_dir={tmp_path / 'skip'}"], check=False)
    assert proc.returncode == 2 and "truncated.png: cannot decode image" in proc.stderr, proc.stderr[-2000:]
    assert ok.returncode == 0, ok.stderr[-2000:]
    # What a terminal shows of each line: the text after its last carriage return (tqdm redraws with \r)
    warning = [line.split("\r")[-1] for line in ok.stderr.splitlines() if "skipping" in line]
    assert warning and warning[0].startswith("warning: skipping ") and "truncated.png" in warning[0], ok.stderr[-2000:]
    assert "UserWarning" not in ok.stderr and "fetch.py" not in ok.stderr


@pytest.fixture(scope="module")
def trained_sr(trained_both):
    return trained_both[1]


def test_sr3_training_writes_triplets_checkpoints_and_an_upsampler(trained_sr):
    out = trained_sr
    assert (out / "checkpoints" / "step_00000006" / "ema.safetensors").is_file()
    grid = Image.open(out / "samples" / "step_00000006.png")
    assert grid.width == 3 * 32 + 4 * 2 and grid.height == 3 * 32 + 4 * 2  # 3 rows of (LR | SR | HR)
    stage = json.loads((out / "pipeline" / "stage_0" / "stage.json").read_text())
    assert stage["kind"] == {"name": "sr3", "scale": 2, "residual": True, "residual_scale": 4.0, "noise_aug_max": 0.2,
                             "blur_prob": 0.5, "blur_sigma": [0.4, 0.6]}
    assert stage["sample"]["aug_level"] == 0.05 and stage["class_names"] == []  # sr3_tiny is unconditional
    scheduler = json.loads((out / "pipeline" / "stage_0" / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["clip_sample"] is False  # a scaled residual may leave [-1, 1]


def test_assemble_sample_and_upscale_clis(trained, trained_sr, tmp_path):
    base, sr = trained[0] / "pipeline", trained_sr / "pipeline"
    proc = run("-m", "cascade", "assemble", tmp_path / "cascade", base, sr)
    assert "2 stages (16 px -> 32 px)" in proc.stdout
    run_in_process("eval/sample.py", "--pipeline", tmp_path / "cascade", "--classes", "0", "1", "--per-class", "2",
                   "--steps", "2", "--zoom", "1", "--out", tmp_path / "grid.png")
    grid = Image.open(tmp_path / "grid.png")
    assert grid.height == 2 + 2 * (32 + 2)  # two class rows at the final size
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (13, 21, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    proc = run("-m", "cascade", "upscale", tmp_path / "in.png", tmp_path / "out.png", "--pipeline", tmp_path / "cascade",
               "--steps", "2")
    assert Image.open(tmp_path / "out.png").size == (42, 26) and "21x13 -> 42x26" in proc.stdout
    assert "tiles of 64 px" in proc.stdout and "measured ERF radius" in proc.stdout  # default: 2 x 32 px
    proc = run_in_process("-m", "cascade", "upscale", tmp_path / "in.png", tmp_path / "tiled.jpg",
                          "--pipeline", tmp_path / "cascade", "--steps", "2", "--tile-size", "16", "--overlap", "8",
                          "--tile-batch", "3", "--consistent")
    assert Image.open(tmp_path / "tiled.jpg").size == (42, 26) and "tiles of 16 px, overlap 8 px" in proc.stdout
    assert not list(tmp_path.glob("*.partial"))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    bad = run_in_process("-m", "cascade", "upscale", tmp_path / "bad.png", tmp_path / "o.png", "--pipeline", sr,
                         check=False)
    assert bad.returncode == 2 and "bad.png: cannot read image" in bad.stderr
    mismatch = run_in_process("-m", "cascade", "assemble", tmp_path / "x", sr, base, check=False)
    assert mismatch.returncode == 2 and "stage 1 is a base stage; only stage 0 may take no input" in mismatch.stderr


def test_an_unconditional_base_stage_trained_on_labelled_data_works_end_to_end(trained_sr, tmp_path):
    run("train/base.py", "--config", "configs/base_tiny.yaml", f"train.output_dir={tmp_path / 'base'}",
        "model.num_classes=0", "train.max_steps=2", "train.save_every=0")  # the photos have ten labels
    base = tmp_path / "base" / "pipeline"
    assert json.loads((base / "stage_0" / "stage.json").read_text())["class_names"] == []
    assert Image.open(tmp_path / "base" / "samples" / "step_00000002.png").height < 100  # 4 unlabelled rows, not ten
    run_in_process("-m", "cascade", "assemble", tmp_path / "cascade", base, trained_sr / "pipeline")
    proc = run_in_process("eval/sample.py", "--pipeline", tmp_path / "cascade", "--per-class", "3", "--steps", "2",
                          "--zoom", "1", "--out", tmp_path / "grid.png")
    assert "1 rows x 3 images" in proc.stdout
    assert Image.open(tmp_path / "grid.png").size == (2 + 6 * 34, 2 + 34)  # no label column: nothing to name
    bad = run_in_process("eval/sample.py", "--pipeline", tmp_path / "cascade", "--classes", "cat",
                         "--out", tmp_path / "x.png", check=False)
    assert bad.returncode == 2 and "unconditional" in bad.stderr
    only_base = run_in_process("-m", "cascade", "upscale", tmp_path / "grid.png", tmp_path / "up.png",
                               "--pipeline", base, check=False)
    assert only_base.returncode == 2 and "has no upsampler, only a 16 px base stage" in only_base.stderr
    run_in_process("-m", "cascade", "upscale", tmp_path / "grid.png", tmp_path / "up.png", "--pipeline",
                   tmp_path / "cascade", "--steps", "2", "--tile-size", "0")
    assert Image.open(tmp_path / "up.png").size == (2 * (2 + 6 * 34), 2 * (2 + 34))


def test_upscale_without_a_pipeline_says_how_to_get_one(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "cascade", "upscale", "in.png", "out.png"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no pipeline at runs/cascade_photos: run `make demo` first" in proc.stderr
    assert not (tmp_path / "out.png").exists()


def final_weights(out, step=10):
    from safetensors.torch import load_file

    folder = out / "checkpoints" / f"step_{step:08d}"
    return {name: load_file(folder / name) for name in ("model.safetensors", "ema.safetensors")}


def assert_same_weights(a, b, context):
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}:{key} differs {context}"


TINY = {"train/base.py": "configs/base_tiny.yaml", "train/sr3.py": "configs/sr3_tiny.yaml"}


# (script, how the first run ends, at which step, the checkpoint the resume starts from); 8 batches per epoch
RESUMES = [
    ("train/base.py", "stop", 8, 8),  # a run that ended at max_steps=8, exactly at an epoch boundary, resumed to 10
    ("train/base.py", "kill-after-save", 4, 4),  # SIGKILL right after a checkpoint, mid-epoch
    ("train/base.py", "kill-mid-save", 6, 4),  # SIGKILL while step 6 is half written: step 4 is the last good one
    ("train/sr3.py", "kill-mid-save", 4, 2),
]


def test_stopped_or_killed_runs_resume_to_the_uninterrupted_weights(tmp_path):
    """Each case of RESUMES, resumed, ends with the weights of an uninterrupted 10-step run
    (checkpoints every 2 steps) bit for bit. Independent runs are started together (run_together)."""
    straight = {script: tmp_path / ("straight_" + script.split("/")[-1][:-3]) for script in TINY}
    references = [[script, "--config", config, "train.max_steps=10", "train.save_every=2", "train.sample_every=4",
                   "train.keep_last=3", f"train.output_dir={straight[script]}"] for script, config in TINY.items()]
    cases = []
    for i, (script, how, step, resumes_at) in enumerate(RESUMES):
        out = tmp_path / f"case{i}"
        common = [script, "--config", TINY[script], "train.save_every=2", "train.sample_every=4", "train.keep_last=3",
                  f"train.output_dir={out}"]
        first = [*common, f"train.max_steps={step}"] if how == "stop" else \
            ["tests/inject.py", how, step, *common, "train.max_steps=10"]
        cases.append((script, how, step, resumes_at, out, common, first))
    first_runs = run_together(*references, *(c[-1] for c in cases), check=False)
    assert all(proc.returncode == 0 for proc in first_runs[:len(references)]), first_runs[0].stderr[-2000:]
    for (_, how, step, _, out, _, _), proc in zip(cases, first_runs[len(references):]):
        assert proc.returncode == (0 if how == "stop" else -9), f"{how} at {step}: {proc.stderr[-2000:]}"
        if how == "kill-mid-save":
            checkpoints = out / "checkpoints"
            assert (checkpoints / f"step_{step:08d}.tmp").is_dir() and not (checkpoints / f"step_{step:08d}").exists()
    resumed = run_together(*([*common, "train.max_steps=10", "--resume"] for *_, common, _ in cases))
    for (script, how, step, resumes_at, out, _, _), proc in zip(cases, resumed):
        checkpoints = out / "checkpoints"
        assert f"resumed from {checkpoints / f'step_{resumes_at:08d}'} (step {resumes_at})" in proc.stdout + proc.stderr
        assert not list(checkpoints.glob("*.tmp"))  # a half-written folder is cleared when that step is saved again
        assert_same_weights(final_weights(straight[script]), final_weights(out), f"{script}: after {how} at step {step}")


def test_a_kill_mid_export_leaves_the_previous_pipeline_whole(tmp_path):
    from cascade import Pipeline

    common = ["train/base.py", "--config", "configs/base_tiny.yaml", "train.save_every=2", f"train.output_dir={tmp_path}"]
    weights = lambda: Pipeline.from_pretrained(tmp_path / "pipeline").stages[0].unet.state_dict()  # noqa: E731
    run(*common, "train.max_steps=2")
    before = weights()
    killed = run("tests/inject.py", "kill-mid-export", 1, *common, "train.max_steps=4", "--resume", check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / "pipeline.partial" / "stage_0").is_dir()  # the new export was under way ...
    assert all(torch.equal(before[k], v) for k, v in weights().items())  # ... and the previous one is untouched
    run(*common, "train.max_steps=4", "--resume")
    assert any(not torch.equal(before[k], v) for k, v in weights().items())
    assert not (tmp_path / "pipeline.partial").exists() and not (tmp_path / "pipeline.old").exists()


def test_nonfinite_loss_stops_naming_the_step_or_is_skipped_and_counted(tmp_path):
    common = ["train/base.py", "--config", "configs/base_tiny.yaml", "train.max_steps=6", "train.save_every=2"]
    stop, skip = run_together(["tests/inject.py", "nan-loss", 4, *common, f"train.output_dir={tmp_path / 'stop'}"],
                              ["tests/inject.py", "nan-loss", 4, *common, "train.on_nonfinite_loss=skip",
                               f"train.output_dir={tmp_path / 'skip'}"], check=False)
    assert stop.returncode == 2 and "step 4: loss is nan (not finite)" in stop.stderr
    assert skip.returncode == 0, skip.stderr[-2000:]
    assert "Traceback" not in stop.stderr and len([x for x in stop.stderr.splitlines() if "error:" in x]) == 1
    good = final_weights(tmp_path / "stop", step=2)  # the last good checkpoint is intact and loadable
    assert all(torch.isfinite(v).all() for w in good.values() for v in w.values())
    assert "step 4: non-finite loss, step skipped (1 skipped so far)" in skip.stdout + skip.stderr
    state = json.loads((tmp_path / "skip" / "checkpoints" / "step_00000006" / "trainer_state.json").read_text())
    assert state["skipped_steps"] == 1 and state["step"] == 6 and state["ema_updates"] == 5
    assert all(torch.isfinite(v).all() for w in final_weights(tmp_path / "skip", 6).values() for v in w.values())


def test_corrupt_latest_checkpoint_is_named_on_resume(tmp_path):
    common = ["train/base.py", "--config", "configs/base_tiny.yaml", "train.max_steps=4", "train.save_every=2",
              f"train.output_dir={tmp_path}"]
    run(*common)
    weights = tmp_path / "checkpoints" / "step_00000004" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # e.g. a disk that filled up outside our atomic save
    proc = run(*common, "train.max_steps=6", "--resume", check=False)
    assert proc.returncode == 2 and "step_00000004: cannot load checkpoint" in proc.stderr
    assert (tmp_path / "checkpoints" / "step_00000002" / "model.safetensors").is_file()  # nothing else touched


def test_sampling_arguments_set_every_stage_or_one_and_name_bad_values():
    import argparse

    from cascade import Pipeline
    from cascade.cli.common import add_sampling_arguments, apply_sampling_arguments
    from cascade.errors import CascadeError
    from conftest import tiny_stage

    def applied(*argv):
        parser = argparse.ArgumentParser()
        add_sampling_arguments(parser)
        original = Pipeline([tiny_stage(8, num_classes=3), tiny_stage(16, 2)])
        pipe = apply_sampling_arguments(original, parser.parse_args(list(argv)))
        assert [(s.defaults.sampler, s.defaults.steps) for s in original.stages] == [("dpm++", 3)] * 2  # unchanged
        return pipe, [(s.defaults.sampler, s.defaults.steps) for s in pipe.stages]

    assert applied()[1] == [("dpm++", 3), ("dpm++", 3)]  # the stages' own settings
    # a value for one stage wins over a value for all, whatever the order on the command line
    assert applied("--sampler", "1=ddpm", "--sampler", "euler", "--steps=-1=7", "--steps", "4")[1] == \
        [("euler", 4), ("ddpm", 7)]
    # `--steps N` for all stages samples exactly like the call-time override it replaces
    def draw(pipe, **kwargs):
        return pipe([0, 2], generator=torch.Generator().manual_seed(0), output_type="pt", progress=False, **kwargs)

    expected = draw(Pipeline([tiny_stage(8, num_classes=3), tiny_stage(16, 2)]), steps=2)
    torch.testing.assert_close(draw(applied("--steps", "2")[0]), expected, rtol=0, atol=0)
    for argv, message in [(["--sampler", "1=nope"], "--sampler 1=nope: unknown sampler 'nope'"),
                          (["--steps", "0"], "--steps 0: steps must be an integer >= 1"),
                          (["--steps", "1=x"], "--steps 1=x: steps must be an integer >= 1, got 'x'"),
                          (["--sampler", "5=ddim"], "--sampler 5=ddim: no stage '5'; the pipeline has stages 0..1")]:
        with pytest.raises(CascadeError, match=message.replace("+", r"\+")):
            applied(*argv)


def test_reports_are_replaced_in_one_step(tmp_path):
    """A report write that fails part way (here: text that cannot be encoded) leaves the last good
    report as it was and no partial file; a good write replaces it."""
    from cascade.cli.common import emit_json
    from cascade.io.atomic import write_text

    path = tmp_path / "report.json"
    emit_json({"fid": 1.0}, str(path))
    with pytest.raises(UnicodeEncodeError):
        write_text(path, '{"fid": 2.0, "name": "\ud800"}')
    assert json.loads(path.read_text()) == {"fid": 1.0} and sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    write_text(path, '{"fid": 3.0}')
    assert json.loads(path.read_text()) == {"fid": 3.0}
