"""A tiny 3-stage cascade (8 -> 16 -> 32 px) end to end, and upscaling users' images."""

import numpy as np
import pytest
import torch
from PIL import Image

from cascade import Pipeline
from cascade.errors import CheckpointError
from cascade.inference.stage import Stage
from cascade.kinds.sr3 import SR3
from conftest import tiny_stage as stage


@pytest.fixture
def cascade3():
    return Pipeline([stage(8, num_classes=3), stage(16, 2, seed=2, aug_level=0.1), stage(32, 2, num_classes=3, seed=3)])


def test_three_stages_end_to_end(cascade3):
    outs = cascade3([0, 2], generator=torch.Generator().manual_seed(0), output_type="pt", return_intermediates=True,
                    progress=False)
    assert [tuple(o.shape) for o in outs] == [(2, 3, 8, 8), (2, 3, 16, 16), (2, 3, 32, 32)]
    final = cascade3([0, 2], generator=torch.Generator().manual_seed(0), output_type="pil", progress=False)
    assert [im.size for im in final] == [(32, 32), (32, 32)]
    np.testing.assert_array_equal(np.asarray(final[1]), (outs[-1][1].permute(1, 2, 0) * 255).round().byte().numpy())


def test_upscale_non_square_inputs_of_any_size(cascade3):
    g = lambda: torch.Generator().manual_seed(0)
    pil = Image.fromarray(np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8))
    out = cascade3.upscale(pil, generator=g(), progress=False)
    assert [im.size for im in out] == [(28, 20)]
    both = cascade3.upscale([pil, np.zeros((6, 3, 3), np.uint8)], generator=g(), output_type="pt", progress=False)
    assert [tuple(t.shape) for t in both] == [(3, 20, 28), (3, 24, 12)]
    batch = cascade3.upscale(torch.rand(2, 3, 9, 4), generator=g(), output_type="pt", progress=False, start_at=2)
    assert batch.shape == (2, 3, 18, 8)
    inter = cascade3.upscale(torch.rand(3, 5, 6), generator=g(), output_type="pt", progress=False,
                             return_intermediates=True)
    assert [tuple(t.shape) for t in inter] == [(1, 3, 10, 12), (1, 3, 20, 24)]


def test_efficient_layout_stage_upscales_any_size():
    # The "efficient" UNet halves the size once more than "standard" (multiple 4, not 2, here), so
    # the padding of odd-sized inputs must follow the UNet's own size_multiple.
    pipe = Pipeline([stage(16, 2, layout="efficient")])
    assert pipe.stages[0].size_multiple == 4 == 2 * stage(16, 2).size_multiple
    out = pipe.upscale(torch.rand(2, 3, 5, 7), generator=torch.Generator().manual_seed(0), output_type="pt",
                       progress=False)
    assert out.shape == (2, 3, 10, 14) and torch.isfinite(out).all()


def test_upscale_rejects_bad_images(cascade3):
    with pytest.raises(ValueError, match="empty image"):
        cascade3.upscale(torch.zeros(1, 3, 0, 5), progress=False)
    with pytest.raises(ValueError, match="expected 3 colour channels, got 4"):
        cascade3.upscale(torch.zeros(1, 4, 5, 5), progress=False)
    bad = torch.zeros(1, 3, 5, 5)
    bad[0, 1, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        cascade3.upscale(bad, progress=False)
    with pytest.raises(ValueError, match="start_at=0: stage 0 is not an upsampler"):
        cascade3.upscale(torch.zeros(1, 3, 5, 5), start_at=0, progress=False)


def test_aug_level_changes_the_conditioning_and_is_seeded(cascade3):
    x = torch.rand(1, 3, 6, 6)

    def run(level, seed=0):
        return cascade3.upscale(x, aug_level=level, generator=torch.Generator().manual_seed(seed), output_type="pt",
                                progress=False, start_at=1)

    torch.testing.assert_close(run(0.3), run(0.3), rtol=0, atol=0)
    assert not torch.allclose(run(0.0), run(0.3))
    assert cascade3.stages[1].defaults.aug_level == 0.1  # an override does not change the stage


def test_cascade_round_trip_reproduces_samples(cascade3, tmp_path):
    cascade3.save_pretrained(tmp_path / "c")
    loaded = Pipeline.from_pretrained(tmp_path / "c")
    a = cascade3(["b", "c"], generator=torch.Generator().manual_seed(5), output_type="pt", progress=False)
    b = loaded(["b", "c"], generator=torch.Generator().manual_seed(5), output_type="pt", progress=False)
    # Exact: safetensors keeps float32 bit for bit, and the loaded weights get storage like the saved
    # model's (cascade.models.weights), so the same kernels run on the same data.
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert loaded.stages[1].defaults.aug_level == 0.1


def test_from_stages_assembles_and_checks_sizes(cascade3, tmp_path):
    for i, s in enumerate(cascade3.stages):
        Pipeline([s]).save_pretrained(tmp_path / f"p{i}")
    pipe = Pipeline.from_stages([tmp_path / "p0", tmp_path / "p1", tmp_path / "p2" / "stage_0"])
    assert [s.resolution for s in pipe.stages] == [8, 16, 32]
    with pytest.raises(CheckpointError, match="stage 1 upsamples 16 px -> 32 px, but stage 0 outputs 8 px"):
        Pipeline.from_stages([tmp_path / "p0", tmp_path / "p2"])
    cascade3.save_pretrained(tmp_path / "c")
    import shutil
    shutil.rmtree(tmp_path / "c" / "stage_1")
    with pytest.raises(CheckpointError, match="stage folder 'stage_1' listed in cascade.json is missing"):
        Pipeline.from_pretrained(tmp_path / "c")


def test_offload_gives_the_same_images(cascade3):
    a = cascade3([1], generator=torch.Generator().manual_seed(0), output_type="pt", progress=False)
    cascade3.enable_offload("cpu")
    b = cascade3([1], generator=torch.Generator().manual_seed(0), output_type="pt", progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert all(s.device.type == "cpu" for s in cascade3.stages)


def test_upsampler_only_pipeline():
    pipe = Pipeline([stage(16, 2)])
    assert pipe.base is None
    with pytest.raises(ValueError, match="no base stage"):
        pipe([0], progress=False)
    assert pipe.upscale(torch.rand(3, 4, 6), output_type="pt", progress=False).shape == (1, 3, 8, 12)


def test_residual_stage_adds_the_bicubic_input_back():
    from cascade.diffusion.resize import upsample

    plain = stage(16, 2, seed=4, aug_level=0.1)
    residual = Stage(plain.unet, plain.noise_scheduler, SR3(scale=2, residual=True, residual_scale=4.0), plain.defaults)
    lowres = torch.rand(2, 3, 8, 8) * 2 - 1
    a = plain.sample(lowres, seed=0, progress=False)
    b = residual.sample(lowres, seed=0, progress=False)
    torch.testing.assert_close(b, a / 4.0 + upsample(lowres, (16, 16)), rtol=1e-6, atol=1e-6)


def test_broken_cascade_folders_are_named(cascade3, tmp_path):
    import json
    import shutil

    cascade3.save_pretrained(tmp_path / "c")
    unet = tmp_path / "c" / "stage_1" / "unet"
    weights = unet / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()

    def error():
        with pytest.raises(CheckpointError) as info:
            Pipeline.from_pretrained(tmp_path / "c")
        return str(info.value)

    weights.write_bytes(data[: len(data) // 2])  # truncated
    assert "stage_1/unet: cannot load weights" in error()
    weights.unlink()  # missing: never falls back to a pickled .bin
    assert "diffusion_pytorch_model.safetensors: missing" in error()
    weights.write_bytes(data)
    config = json.loads((unet / "config.json").read_text())
    (unet / "config.json").write_text(json.dumps({**config, "_class_name": "UNet2DModel"}))
    assert "a UNet2DModel model, not a cascade UNet" in error()
    (unet / "config.json").write_text(json.dumps(config))
    shutil.rmtree(tmp_path / "c" / "stage_2")
    assert "stage folder 'stage_2' listed in cascade.json is missing" in error()
