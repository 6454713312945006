"""Tiled upscaling (cascade.inference.tiling, Stage.sample(tiling=Tiling(...))) and exact consistency (project_onto_lowres)."""

import numpy as np
import pytest
import torch

from cascade.diffusion.resize import downsample, project_onto_lowres
from cascade.diffusion.sampling import constrained
from cascade.inference.pipeline import Pipeline
from cascade.inference.stage import Stage, Tiling
from cascade.inference.tiling import TiledDenoiser, effective_receptive_field, make_tiles, tile_starts, tile_weight
from cascade.kinds.sr3 import SR3
from cascade.metrics.sr import seam_ratio
from conftest import tiny_stage


@pytest.mark.parametrize("length", [8, 16, 24, 40, 56, 96, 136])
@pytest.mark.parametrize("tile,overlap", [(16, 0), (16, 4), (16, 8), (32, 12), (24, 16)])
def test_tiles_cover_the_image_on_the_grid_with_the_overlap_asked(length, tile, overlap):
    starts = tile_starts(length, tile, overlap, multiple=8)
    size = min(tile, length)
    assert starts[0] == 0 and starts[-1] + size == length
    assert all(s % 8 == 0 for s in starts)
    for a, b in zip(starts, starts[1:]):
        assert a < b and a + size - b >= overlap  # consecutive tiles share at least `overlap` pixels


def test_tile_weights_are_positive_smooth_and_flat_at_image_borders():
    tiles = make_tiles(40, 56, 24, 8, 8)
    norm = torch.zeros(40, 56)
    for t in tiles:
        w = tile_weight(t, 40, 56, 8)
        assert w.min() > 0 and w.max() == 1
        norm[t.slices] += w
        if t.top == 0:
            assert torch.all(w[0] == w[8])  # no ramp on a side lying on the image border
    assert norm.min() > 0.5


def test_tiled_denoiser_equals_the_whole_image_for_a_pointwise_network():
    """Cropping, per-image conditioning and fusion are exact: a pointwise network gives the same
    result tiled (any tiles, any batch) as on the whole image."""
    def net(x, t, cond_image=None, aug_level=None):
        return x * 2 + cond_image.flip(1) + aug_level.view(-1, 1, 1, 1) + t

    x, c = torch.randn(3, 3, 40, 56), torch.randn(3, 3, 40, 56)
    level = torch.tensor([0.1, 0.2, 0.3])
    whole = net(x, 5, cond_image=c, aug_level=level)
    for tile, overlap, batch in [(16, 8, 1), (24, 8, 5), (40, 16, 64), (64, 0, 2)]:
        tiled = TiledDenoiser(net, 40, 56, tile, overlap, 8, batch, "cpu")
        torch.testing.assert_close(tiled(x, 5, cond_image=c, aug_level=level), whole, rtol=0, atol=1e-5)


def test_one_tile_covering_the_image_is_the_whole_image_path():
    stage = tiny_stage(16, scale=2)
    lowres = torch.rand(2, 3, 12, 20) * 2 - 1
    whole = stage.sample(lowres, seed=0, progress=False)
    tiled = stage.sample(lowres, seed=0, tiling=Tiling(48), progress=False)
    # Exact: one tile covers the image, so the UNet sees the same batch as without tiles
    assert torch.equal(whole, tiled)


def test_tiled_upscale_of_a_non_square_image_sees_only_tiles():
    stage = tiny_stage(16, scale=2)
    pipe = Pipeline([stage])
    seen = []
    stage.unet.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    image = torch.rand(3, 23, 37)  # not a multiple of anything
    out = pipe.upscale(image, seed=0, tile_size=16, overlap=8, tile_batch=4,
                       output_type="pt", progress=False)
    assert out.shape == (1, 3, 46, 74) and torch.isfinite(out).all()
    assert seen and all(s[-2:] == (16, 16) and s[0] <= 4 for s in seen)
    whole = pipe.upscale(image, seed=0, output_type="pt", progress=False)
    assert not torch.equal(out, whole)  # the tiles really ran (GroupNorm sees tile statistics)


def test_bad_tile_settings_are_named():
    pipe = Pipeline([tiny_stage(16, scale=2)])
    with pytest.raises(ValueError, match="tile_size=1"):
        pipe.upscale(torch.rand(3, 8, 8), tile_size=1)
    with pytest.raises(ValueError, match="overlap=16"):
        pipe.upscale(torch.rand(3, 8, 8), tile_size=16, overlap=16)


def _downsample_matrix(h, w, factor):
    columns = []
    for i in range(h * w):
        e = torch.zeros(1, 1, h, w, dtype=torch.float64)
        e.view(-1)[i] = 1
        columns.append(downsample(e, factor).view(-1).numpy())
    return np.stack(columns, axis=1)


@pytest.mark.parametrize("factor", [2, 4])
def test_projection_equals_the_dense_pseudo_inverse(factor):
    h, w = 4 * factor, 3 * factor
    a = _downsample_matrix(h, w, factor)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 1, h, w, generator=g, dtype=torch.float64)
    y = torch.randn(1, 1, h // factor, w // factor, generator=g, dtype=torch.float64)
    reference = x.view(-1).numpy() + np.linalg.pinv(a) @ (y.view(-1).numpy() - a @ x.view(-1).numpy())
    projected = project_onto_lowres(x, y, factor)
    np.testing.assert_allclose(projected.view(-1).numpy(), reference, atol=1e-9)
    assert torch.allclose(project_onto_lowres(projected, y, factor), projected, atol=1e-9)  # idempotent


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_constraint_wrapper_round_trips_and_projects(prediction_type):
    abar = torch.linspace(0.999, 0.01, 1000)
    x, pred = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    net = lambda x_, t, **c: pred  # noqa: E731
    same = constrained(net, lambda x0: x0, abar, prediction_type)(x, torch.tensor(500))
    torch.testing.assert_close(same, pred, rtol=0, atol=1e-5)
    shifted = constrained(net, lambda x0: x0 * 0 + 0.25, abar, prediction_type)(x, torch.tensor(500))
    a, s = abar[500].sqrt(), (1 - abar[500]).sqrt()
    x0 = {"epsilon": (x - s * shifted) / a, "v_prediction": a * x - s * shifted, "sample": shifted}[prediction_type]
    torch.testing.assert_close(x0, torch.full_like(x0, 0.25), rtol=0, atol=1e-4)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("tile_size", [None, 16])
def test_consistent_sampling_downsamples_exactly_to_the_input(residual, tile_size):
    plain = tiny_stage(16, scale=2)
    stage = Stage(plain.unet, plain.noise_scheduler, SR3(scale=2, residual=residual, residual_scale=4.0 if residual else 1.0),
                  plain.defaults)
    lowres = torch.rand(2, 3, 12, 20) * 2 - 1
    tiling = Tiling(tile_size, overlap=8) if tile_size else None

    def run(stage=stage, **settings):
        return stage.sample(lowres, seed=0, tiling=tiling, settings=settings, progress=False)

    free, exact = run(), run(consistent=True)
    assert (downsample(free.double(), 2) - lowres).abs().max() > 1e-2
    assert (downsample(exact.double(), 2) - lowres).abs().max() < 1e-5
    assert torch.equal(run(stage.with_defaults(dict(consistent=True))), exact)  # the default, saved in stage.json


def test_seam_ratio_finds_a_step_and_ignores_smooth_images():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(2, 3, 12, 12, generator=g), size=(64, 96), mode="bicubic")
    noise = torch.rand(2, 3, 64, 96, generator=g)
    for image in (smooth, noise):
        assert 0.7 < seam_ratio(image, [32], [32, 64], period=8).min() < seam_ratio(image, [32], [32, 64], 8).max() < 1.4
    stepped = smooth.clone()
    stepped[..., :, 32:64] += 0.2  # a tile drawn too bright
    assert seam_ratio(stepped, [32], [32, 64], period=8).min() > 5
    # Against a direct count: squared neighbour differences across the listed lines vs other grid lines.
    x = noise[0].double()
    on = [(x[:, 32] - x[:, 31]).pow(2).mean()] + [(x[:, :, c] - x[:, :, c - 1]).pow(2).mean() for c in (32, 64)]
    off_rows = [(x[:, r] - x[:, r - 1]).pow(2).mean() for r in (8, 16, 24, 40, 48, 56)]
    off_cols = [(x[:, :, c] - x[:, :, c - 1]).pow(2).mean() for c in (8, 16, 24, 40, 48, 56, 72, 80, 88)]
    on_energy = (on[0] * 96 + (on[1] + on[2]) * 64) / (96 + 2 * 64)
    off_energy = (sum(off_rows) * 96 + sum(off_cols) * 64) / (6 * 96 + 9 * 64)
    torch.testing.assert_close(seam_ratio(noise[:1], [32], [32, 64], 8)[0], on_energy / off_energy)


class _ConvStack(torch.nn.Module):
    """k 3x3 convolutions: a receptive field of radius exactly k."""

    def __init__(self, k):
        super().__init__()
        self.config = type("Config", (), {"in_channels": 1, "cond_channels": 0})()
        self.convs = torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, 3, padding=1) for _ in range(k)])
        for conv in self.convs:
            torch.nn.init.constant_(conv.weight, 1 / 9)

    def forward(self, x, t):
        return self.convs(x)


@pytest.mark.parametrize("k", [2, 5])
def test_erf_of_a_conv_stack_is_its_receptive_field(k):
    assert effective_receptive_field(_ConvStack(k), 32, [0], seeds=1)["radius"] == k


def test_a_saved_stage_keeps_its_erf_for_the_weights_it_was_measured_on(tmp_path, monkeypatch):
    import json

    import cascade.inference.stage as stage_module
    from cascade.errors import CheckpointError
    from cascade.models.weights import weights_hash

    stage = tiny_stage(16, scale=2)
    overlap = stage.tile_overlap()
    measured = dict(stage.erf)
    stage.save_pretrained(tmp_path / "s")
    record = json.loads((tmp_path / "s" / "stage.json").read_text())
    assert record["erf"] == {**measured, "weights": weights_hash(stage.unet)}
    calls, measure = [], stage_module.effective_receptive_field
    monkeypatch.setattr(stage_module, "effective_receptive_field", lambda *a, **k: calls.append(1) or measure(*a, **k))

    loaded = Stage.from_pretrained(tmp_path / "s")
    assert loaded.tile_overlap() == overlap and loaded.erf == measured and calls == []  # read, not measured again
    loaded.save_pretrained(tmp_path / "again")  # kept through a load and a save (assemble, one_shot, distill)
    assert json.loads((tmp_path / "again" / "stage.json").read_text())["erf"] == record["erf"]

    changed = Stage.from_pretrained(tmp_path / "s")
    with torch.no_grad():
        changed.unet.conv_in.weight.mul_(3.0)  # other weights: the record is not theirs
    changed.tile_overlap()
    assert calls == [1] and changed.erf["rings"] != measured["rings"]
    changed = Stage.from_pretrained(tmp_path / "s")
    with torch.no_grad():
        changed.unet.conv_in.weight.mul_(3.0)
    changed.save_pretrained(tmp_path / "changed")  # nor is it written for them
    assert "erf" not in json.loads((tmp_path / "changed" / "stage.json").read_text())

    measured_then_changed = Stage.from_pretrained(tmp_path / "s")
    copy = measured_then_changed.with_defaults({"steps": 3})
    assert measured_then_changed.tile_overlap() == overlap and calls == [1]
    with torch.no_grad():
        measured_then_changed.unet.conv_in.weight.mul_(3.0)  # in place, after the record was checked: still caught
    measured_then_changed.save_pretrained(tmp_path / "later")
    assert "erf" not in json.loads((tmp_path / "later" / "stage.json").read_text())
    copy.tile_overlap()  # the copy shares the UNet: it measures the changed weights too
    assert calls == [1, 1] and copy.erf["rings"] != measured["rings"]
    assert weights_hash(stage.unet.to(torch.bfloat16)) != record["erf"]["weights"]  # any dtype hashes

    for bad in ({"radius": "wide"}, {"radius": True, "weights": "0"}, 5):
        record["erf"] = bad
        (tmp_path / "s" / "stage.json").write_text(json.dumps(record))
        with pytest.raises(CheckpointError, match=r"s/stage.json: invalid stage settings \(erf: .* is not a measu"):
            Stage.from_pretrained(tmp_path / "s")


def test_stage_overlap_is_the_measured_erf_on_the_grid():
    stage = tiny_stage(16, scale=2)
    overlap = stage.tile_overlap()
    assert stage.erf["radius"] <= overlap < stage.erf["radius"] + stage.size_multiple
    assert overlap % stage.size_multiple == 0
