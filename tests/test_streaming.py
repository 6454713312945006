"""Streamed upscaling (cascade.inference.streamed.engine, cascade.giant): state on disk, output written as it is made,
resumable, tiles shared across processes."""

import json
import os
import shutil
import tempfile
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cascade import Pipeline
from cascade.diffusion.sampling import SAMPLERS, make_sampler
from cascade.inference.streamed.engine import BandScheduler, _Rows, _seed
from cascade.inference.streamed.upscale import upscale_to_file
from cascade.inference.tiling import Tile
from cascade.io.images import signed_to_uint8
from conftest import free_port, run, run_in_process, tiny_stage

DETERMINISTIC = ["ddim", "dpm++", "unipc", "euler", "heun"]  # the others draw noise per band by design


@pytest.mark.parametrize("sampler", DETERMINISTIC)
def test_bands_stepped_apart_equal_the_whole_image(sampler):
    """Each scheduler's history kept per band: every step of three bands equals the whole image's."""
    config = tiny_stage(16).noise_scheduler.config
    whole, split = make_sampler(sampler, config), make_sampler(sampler, config)
    whole.set_timesteps(6)
    split.set_timesteps(6)
    bands = BandScheduler(split, 3)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 24, 20, generator=g)
    field = torch.randn(1, 3, 24, 20, generator=g)
    parts, states = [x[:, :, a:b].clone() for a, b in ((0, 7), (7, 16), (16, 24))], [{}, {}, {}]
    for t in whole.timesteps:  # a "network" that depends on x_t pixel by pixel
        x = whole.step(0.5 * whole.scale_model_input(x, t) + field, t, x).prev_sample
        rows = [field[:, :, a:b] for a, b in ((0, 7), (7, 16), (16, 24))]
        for i, part in enumerate(parts):
            prediction = 0.5 * bands.scale_model_input(part, t) + rows[i]
            parts[i], states[i] = bands.step(prediction, t, part, states[i], torch.Generator().manual_seed(1))
        bands.advance(t)
    assert torch.equal(torch.cat(parts, dim=2), x)


def test_integer_fusion_is_exact_in_any_order():
    """The weighted predictions summed as integers: any order (any split across processes) gives the
    same bits, and the value is the float64 sum to within 2^-32 per term."""
    g = torch.Generator().manual_seed(0)
    tiles = [Tile(0, 0, 8, 8), Tile(0, 4, 8, 8), Tile(4, 0, 8, 8), Tile(4, 4, 8, 8)]
    values = [torch.randn(3, 8, 8, generator=g, dtype=torch.float64) for _ in tiles]
    sums = []
    for order in ([0, 1, 2, 3], [3, 1, 0, 2]):
        rows = _Rows(3, 12)
        for i in order:
            rows.add(tiles[i], values[i])
        sums.append(rows.take(0, 12))
    assert torch.equal(sums[0], sums[1])
    exact = torch.zeros(3, 12, 12, dtype=torch.float64)
    for tile, value in zip(tiles, values):
        exact[:, tile.top:tile.top + 8, tile.left:tile.left + 8] += value
    assert (sums[0].double() / 2 ** 32 - exact).abs().max() <= 4 * 2 ** -33


def two_stage_pipe():
    return Pipeline([tiny_stage(16, 2), tiny_stage(32, 2, seed=2)])


def photo(width=28, height=20, seed=0):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def read(path):
    return np.array(Image.open(path))


def test_disk_state_equals_memory_state_and_is_removed(tmp_path, monkeypatch):
    """Two stages (x4), several tile rows, a stochastic sampler: the state in files gives the bits the
    state in memory gives; the temporary state folder is gone afterwards; PNG and TIFF hold the same image."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    pipe, image = two_stage_pipe(), photo()
    common = dict(tile_size=16, overlap=8, tile_batch=3, steps=3, progress=False,
                  settings={0: dict(sampler="dpm++sde"), 1: dict(sampler="dpm++sde")})
    report = upscale_to_file(pipe, image, tmp_path / "disk.png", storage="disk", **common)
    upscale_to_file(pipe, image, tmp_path / "memory.png", storage="memory", **common)
    upscale_to_file(pipe, image, tmp_path / "disk.tif", storage="disk", **common)
    assert report["size"] == [112, 80] and report["tiles"][1] > report["tiles"][0] > 4
    assert read(tmp_path / "disk.png").shape == (80, 112, 3)
    assert np.array_equal(read(tmp_path / "disk.png"), read(tmp_path / "memory.png"))
    assert np.array_equal(read(tmp_path / "disk.png"), read(tmp_path / "disk.tif"))
    assert list((tmp_path / "tmp").iterdir()) == []
    assert not list(tmp_path.glob("*.partial"))


def test_one_tile_equals_the_in_memory_sampler():
    """With one tile (one band) the streamed stage draws x_T like Stage.sample with that band's generator,
    so a deterministic sampler gives its image, to the 2^-32 rounding of the fused prediction."""
    stage = tiny_stage(16, 2)
    pipe = Pipeline([stage])
    image = photo(8, 8)
    path = tempfile.mkdtemp()
    try:
        upscale_to_file(pipe, image, f"{path}/one.png", tile_size=16, overlap=0, steps=4,
                        settings={0: dict(sampler="ddim")},
                        seed=5, progress=False, storage="memory")
        streamed = read(f"{path}/one.png")
    finally:
        shutil.rmtree(path)
    generator = torch.Generator().manual_seed(_seed(5, 0, "init", 0))
    direct = stage.sample(image[None] * 2 - 1, generator=generator, settings=dict(sampler="ddim", steps=4),
                          progress=False)
    direct = signed_to_uint8(direct[0]).permute(1, 2, 0).numpy()
    assert np.abs(streamed.astype(int) - direct.astype(int)).max() <= 1
    assert (streamed == direct).mean() > 0.99


def upscale_args(tmp_path, name, *extra):
    return ["-m", "cascade", "upscale", tmp_path / "in.png", tmp_path / name, "--pipeline", tmp_path / "pipe",
            "--tile-size", "16", "--overlap", "8", "--tile-batch", "2", "--steps", "3", "--sampler", "dpm++sde",
            "--stream", *extra]


@pytest.fixture
def saved(tmp_path):
    two_stage_pipe().save_pretrained(tmp_path / "pipe")
    Image.fromarray((photo(36, 20).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "in.png")
    return tmp_path


def test_killed_upscale_resumes_to_the_same_image(saved):
    tmp_path = saved
    run_in_process(*upscale_args(tmp_path, "whole.png"))
    state = tmp_path / "state"
    # saves of band history: stage 0 has 4 bands x 3 steps, stage 1 9 x 3: the 25th is in stage 1's second step
    killed = run("tests/inject.py", "kill-mid-step", 25, *upscale_args(tmp_path, "resumed.png", "--state-dir", state),
                 check=False)
    assert killed.returncode == -9
    record = json.loads((state / "progress.json").read_text())
    assert (record["stage"], record["step"]) == (1, 1)  # killed in the middle of a step, after completed ones
    assert not (tmp_path / "resumed.png").exists()
    again = run_in_process(*upscale_args(tmp_path, "resumed.png", "--state-dir", state), check=False)
    assert again.returncode == 2 and "pass --resume" in again.stderr.strip().splitlines()[-1]
    # a state saved before a sampling setting existed (final_timestep) resumes: the setting's default is how it sampled
    for stage in record["record"]["stages"]:
        del stage["settings"]["final_timestep"]
    (state / "progress.json").write_text(json.dumps(record))
    run_in_process(*upscale_args(tmp_path, "resumed.png", "--state-dir", state, "--resume"))
    assert np.array_equal(read(tmp_path / "resumed.png"), read(tmp_path / "whole.png"))
    assert not state.exists()  # removed after success


def test_ctrl_c_leaves_no_state_and_no_output(saved):
    tmp_path = saved
    env_tmp = tmp_path / "tmp"
    env_tmp.mkdir()
    os.environ["TMPDIR"] = str(env_tmp)
    try:
        stopped = run("tests/inject.py", "interrupt-mid-step", 5, *upscale_args(tmp_path, "out.png"), check=False)
    finally:
        del os.environ["TMPDIR"]
    assert stopped.returncode == 130 and "its temporary state is removed" in stopped.stdout
    assert list(env_tmp.iterdir()) == [] and not list(tmp_path.glob("out.png*"))
    other = run_in_process(*upscale_args(tmp_path, "x.png", "--state-dir", tmp_path / "s", "--seed", "3",
                                         "--resume"), check=False)
    assert other.returncode == 2 and "no upscale state to resume" in other.stderr


def test_two_processes_give_the_one_process_image(saved):
    """accelerate launch with 2 CPU processes (gloo): each evaluates every other batch of tiles; the
    image is the one-process image bit for bit (the same batches, integer sums)."""
    tmp_path = saved
    run_in_process(*upscale_args(tmp_path, "one.png"))
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    proc = run(*launch, *upscale_args(tmp_path, "two.png"))
    assert "2 processes" in proc.stdout
    assert np.array_equal(read(tmp_path / "two.png"), read(tmp_path / "one.png"))


def test_bad_outputs_disks_and_sizes_are_named(saved, monkeypatch):
    tmp_path = saved
    (tmp_path / "file").write_text("not a folder")
    bad = run_in_process(*upscale_args(tmp_path, "file/out.png"), check=False)
    assert bad.returncode == 2 and "file/out.png: cannot write the output" in bad.stderr.strip().splitlines()[-1]
    jpg = run_in_process(*upscale_args(tmp_path, "out.jpg"), check=False)
    assert jpg.returncode == 2 and "out.jpg: streamed outputs are written as .png, .tif, .tiff" in jpg.stderr
    big = run_in_process(*upscale_args(tmp_path, "big.png", "--size", "288x160"), check=False)
    assert big.returncode == 2 and "more than the pipeline's upsamplers make (x4: at most 144x80)" in big.stderr
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    full = run_in_process(*upscale_args(tmp_path, "full.png", "--state-dir", tmp_path / "st"), check=False)
    assert full.returncode == 2 and "MB of free disk, 0.0 MB is free" in full.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.glob("*.png*")) == ["in.png"] and not (tmp_path / "st").exists()


def test_size_resizes_the_input_first(saved):
    tmp_path = saved
    run_in_process(*upscale_args(tmp_path, "small.png", "--size", "72x40"))
    assert Image.open(tmp_path / "small.png").size == (72, 40)


def test_every_sampler_streams(tmp_path):
    """Every scheduler in SAMPLERS runs through the band stepping (history saved per band) to an image."""
    pipe = Pipeline([tiny_stage(16, 2)])
    for sampler in SAMPLERS:
        upscale_to_file(pipe, photo(16, 12), tmp_path / f"{sampler}.png", tile_size=16, overlap=8, steps=3,
                        settings={0: dict(sampler=sampler)}, progress=False)
        assert read(tmp_path / f"{sampler}.png").shape == (24, 32, 3), sampler


def test_bench_streaming_rows(tmp_path):
    """eval/bench_streaming.py: one fresh process per output size; each row's tile count is the grid's."""
    from cascade.inference.tiling import make_tiles

    stage = tiny_stage(16, 2)
    Pipeline([stage]).save_pretrained(tmp_path / "up")
    run("eval/bench_streaming.py", "--sr", tmp_path / "up", "--outputs", "64x48", "--tile-size", "16",
        "--steps", "2", "--out", tmp_path / "b")
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    assert [(r["output"], r["steps"]) for r in rows] == [("64x48", 2)]
    for r, (h, w) in zip(rows, [(48, 64)]):
        assert r["tiles"] == len(make_tiles(h, w, 16, r["overlap"], stage.size_multiple))
        assert r["s_per_mp_step"] == pytest.approx(r["seconds"] / (h * w / 1e6) / 2)
    assert "| 64x48 | 0.0 |" in (tmp_path / "b.md").read_text()


def test_a_stage_consistent_by_default_streams_without_it_and_regression_is_refused(tmp_path):
    """The demo SR preset samples with exact consistency; a streamed upscale cannot project onto the
    whole input, so it samples without (and says so) unless the caller asks for it, which is an error.
    A one-evaluation regression stage is not a sampler the bands can step: refused with its name."""
    from dataclasses import replace

    from cascade.inference.stage import Stage
    from cascade.kinds.sr3 import Regression

    plain = tiny_stage(16, 2)
    consistent = Stage(plain.unet, plain.noise_scheduler, plain.kind, replace(plain.defaults, consistent=True))
    common = dict(tile_size=16, overlap=8, steps=3, settings={0: dict(sampler="ddim")}, seed=1, progress=False)
    with pytest.warns(UserWarning, match="samples without"):
        upscale_to_file(Pipeline([consistent]), photo(16, 12), tmp_path / "c.png", **common)
    upscale_to_file(Pipeline([plain]), photo(16, 12), tmp_path / "p.png", **common)
    assert np.array_equal(read(tmp_path / "c.png"), read(tmp_path / "p.png"))
    with pytest.raises(ValueError, match="needs the whole image"):
        upscale_to_file(Pipeline([consistent]), photo(16, 12), tmp_path / "x.png",
                        **{**common, "settings": {0: dict(sampler="ddim", consistent=True)}})
    regression = Stage(plain.unet, plain.noise_scheduler, Regression(scale=2), plain.defaults)
    with pytest.raises(ValueError, match="a regression stage is one network evaluation"):
        upscale_to_file(Pipeline([regression]), photo(16, 12), tmp_path / "r.png", **common)
    with pytest.raises(ValueError, match="needs the whole image"):
        upscale_to_file(Pipeline([plain]), photo(16, 12), tmp_path / "y.png", consistent=True, **common)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # consistent=False asked: no warning, the same image
        upscale_to_file(Pipeline([consistent]), photo(16, 12), tmp_path / "n.png", consistent=False, **common)
    assert np.array_equal(read(tmp_path / "n.png"), read(tmp_path / "p.png"))
    # the CLI refuses an explicit --consistent on a streamed upscale before any work, naming it
    Pipeline([consistent]).save_pretrained(tmp_path / "pipe")
    Image.fromarray((photo(36, 20).permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(tmp_path / "in.png")
    refused = run_in_process(*upscale_args(tmp_path, "cli.png", "--consistent"), check=False)
    assert refused.returncode == 2 and not (tmp_path / "cli.png").exists()
    assert refused.stderr.strip().splitlines()[-1].endswith(
        "--consistent: the 72x40 output is streamed (--stream), and a streamed upscale cannot project onto the "
        "whole input; drop --consistent")
