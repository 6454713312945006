"""Stage kinds (cascade.kinds): a new kind is one class plus a preset, and training and sampling
condition the model in the same way. Also: one seed per image, whatever the batch."""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from cascade import Pipeline
from cascade.diffusion.resize import downsample, upsample
from cascade.inference.stage import Stage, Tiling
from cascade.kinds.base import KINDS, Conditioning, StageKind
from cascade.kinds.sr3 import SR3, Regression
from conftest import ROOT, run, tiny_stage


@dataclass(frozen=True)
class Grayscale(StageKind):
    """Colourise: generate an RGB image conditioned on its grayscale copy (same size). Defined here,
    outside cascade/, as a user would."""

    name: ClassVar[str] = "test-grayscale"
    takes_input: ClassVar[bool] = True
    spatial: ClassVar[tuple[str, ...]] = ("cond_image",)

    def cond_channels(self, in_channels):
        return 1

    def source_from(self, image):
        return (0.299 * image[:, :1] + 0.587 * image[:, 1:2] + 0.114 * image[:, 2:3])

    def training_inputs(self, config, image, alphas_cumprod, generators):
        return image, {"cond_image": self.source_from(image)}

    def sampling_inputs(self, stage, source, settings, generators, device):
        return Conditioning(tuple(source.shape[-2:]), {"cond_image": source.to(device)})


TRAIN_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
from test_kinds import Grayscale
from cascade.config import BaseStageConfig, load_config
from cascade.training import train_stage

train_stage(load_config(BaseStageConfig, {preset!r}, sys.argv[1:]), Grayscale())
"""

PRESET = """
model: {sample_size: 16, cond_channels: 1, base_channels: 8, channel_mult: [1, 2], num_res_blocks: 1,
        attention_resolutions: [8], head_channels: 8, num_classes: 0}
data: {source: photos, crop_scale: [0.2, 0.5], epoch_size: 32}
train: {batch_size: 8, max_steps: 3, warmup_steps: 1, save_every: 3, sample_every: 3, log_every: 1}
sample: {steps: 2, preview_per_class: 2}
"""


def test_a_kind_defined_outside_cascade_trains_samples_tiles_and_measures_its_erf(tmp_path):
    (tmp_path / "gray.yaml").write_text(PRESET)
    script = tmp_path / "train_gray.py"
    script.write_text(TRAIN_SCRIPT.format(tests=str(ROOT / "tests"), preset=str(tmp_path / "gray.yaml")))
    proc = run(script, f"train.output_dir={tmp_path / 'run'}")
    assert "test-grayscale stage" in proc.stdout + proc.stderr
    assert (tmp_path / "run" / "samples" / "step_00000003.png").is_file()  # the preview through the kind

    pipe = Pipeline.from_pretrained(tmp_path / "run" / "pipeline")  # the kind is known: this module defined it
    stage = pipe.stages[0]
    assert "measured ERF radius" in proc.stdout + proc.stderr  # measured as it was exported, for these weights:
    assert stage.checked_erf() is not None
    assert stage.kind == Grayscale() and stage.is_upsampler and pipe.base is None
    gray = Grayscale().source_from(torch.rand(2, 3, 16, 24) * 2 - 1)
    whole = stage.sample(gray, seed=0, progress=False)
    tiled = stage.sample(gray, seed=0, tiling=Tiling(8, overlap=4), progress=False)
    assert whole.shape == tiled.shape == (2, 3, 16, 24) and not torch.equal(whole, tiled)
    assert stage.tile_overlap() >= 2 and stage.erf["size"] == 32  # the ERF ran with the kind's conditioning
    # It chains after a base stage of its size, and loads back by name
    chained = Pipeline([tiny_stage(16), stage])
    assert chained.stages[1].input_resolution == 16
    with pytest.raises(ValueError, match="unknown stage kind 'nope'"):
        StageKind.from_dict({"name": "nope"})


def record_calls(unet) -> list[dict]:
    """The conditioning of every forward call of `unet`, kept in a list."""
    calls = []
    unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(
        {k: v.clone() for k, v in kwargs.items() if isinstance(v, torch.Tensor)}), with_kwargs=True)
    return calls


@pytest.mark.parametrize("residual", [False, True])
def test_training_and_sampling_give_the_model_the_same_conditioning(residual):
    plain = tiny_stage(16, scale=2)
    kind = SR3(scale=2, residual=residual, residual_scale=4.0 if residual else 1.0, noise_aug_max=0.0, blur_prob=0.0)
    stage = Stage(plain.unet, plain.noise_scheduler, kind, plain.defaults)
    hr = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = {"image": hr, "label": torch.zeros(3, dtype=torch.long), "seed": torch.arange(3)}

    calls = record_calls(stage.unet)
    kind.loss(stage.unet, stage.unet.config, stage.noise_scheduler, batch, label_dropout=0.0)  # training
    stage.sample(kind.source_from(hr), seed=0, settings=dict(aug_level=0.0), progress=False)  # sampling
    trained, sampled = calls[0], calls[1]
    assert trained.keys() == sampled.keys() == {"cond_image", "aug_level"}
    torch.testing.assert_close(trained["cond_image"], sampled["cond_image"], rtol=0, atol=0)
    torch.testing.assert_close(trained["aug_level"].float(), sampled["aug_level"].float(), rtol=0, atol=0)
    # What training asks the model to generate, sampling turns back into the high-res image
    target, _ = kind.training_inputs(stage.unet.config, hr, stage.noise_scheduler.alphas_cumprod, None)
    finish = kind.sampling_inputs(stage, downsample(hr, 2), stage.defaults, None, torch.device("cpu")).finish
    torch.testing.assert_close(finish(target), hr, rtol=0, atol=1e-6)
    if residual:
        torch.testing.assert_close(target, (hr - upsample(downsample(hr, 2), (16, 16))) * 4.0)


def test_regression_kind_is_one_l2_trained_evaluation_of_the_same_conditioning(tmp_path):
    """SR3's regression baseline: training's loss is MSE(unet(0, t=0, cond), target) for the same
    conditioning SR3 builds; sampling is that one evaluation turned back into an image, whatever the
    sampler, steps or seed; it saves, loads and projects like any upsampler."""
    plain = tiny_stage(16, scale=2)
    kind = Regression(scale=2, residual=True, residual_scale=4.0, noise_aug_max=0.0, blur_prob=0.0)
    stage = Stage(plain.unet, plain.noise_scheduler, kind, plain.defaults)
    hr = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    lr = kind.source_from(hr)
    batch = {"image": hr, "label": torch.zeros(3, dtype=torch.long), "seed": torch.arange(3)}
    calls = record_calls(stage.unet)
    loss = kind.loss(stage.unet, stage.unet.config, stage.noise_scheduler, batch, label_dropout=0.0)
    out = stage.sample(lr, seed=0, settings=dict(sampler="ddpm", steps=50), progress=False)
    assert len(calls) == 2  # one forward pass in training, one in sampling (not 50)
    torch.testing.assert_close(calls[0]["cond_image"], calls[1]["cond_image"], rtol=0, atol=0)

    offset = upsample(lr, (16, 16))
    with torch.no_grad():
        prediction = stage.unet(torch.zeros_like(hr), torch.tensor(0), cond_image=offset, aug_level=torch.zeros(3))
    torch.testing.assert_close(loss, torch.nn.functional.mse_loss(prediction, (hr - offset) * 4.0))
    torch.testing.assert_close(out, prediction / 4.0 + offset, rtol=0, atol=1e-6)
    torch.testing.assert_close(stage.sample(lr, seed=5, progress=False), out, rtol=0, atol=1e-6)  # no noise
    consistent = stage.sample(lr, settings=dict(consistent=True), progress=False)
    torch.testing.assert_close(downsample(consistent.double(), 2), lr.double(), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="SDEdit"):
        stage.sample(lr, init=out, strength=0.5, progress=False)

    # Its ERF (tile overlap) is measured as it runs: t = 0, x_t = 0, so x_t's weights cannot change it
    overlap, rings = stage.tile_overlap(), stage.erf["rings"]
    with torch.no_grad():
        stage.unet.conv_in.weight[:, :3] += 1.0
    stage.erf = None
    assert stage.tile_overlap() == overlap and stage.erf["rings"] == rings
    stage.save_pretrained(tmp_path / "reg")
    loaded = Stage.from_pretrained(tmp_path / "reg")
    assert loaded.kind == kind and not loaded.kind.iterative
    torch.testing.assert_close(loaded.sample(lr, progress=False), out, rtol=0, atol=1e-6)


def test_sr_kind_key_picks_the_kind_and_names_a_bad_value(tmp_path):
    from cascade.config.loading import load_config
    from cascade.config.stages import SR3StageConfig
    from cascade.errors import ConfigError

    preset = ROOT / "configs" / "sr3_photos.yaml"
    cfg = load_config(SR3StageConfig, preset, ["sr.kind=regression"])
    assert KINDS[cfg.sr.kind].from_config(cfg.sr) == Regression(2, True, 8.0, 0.15, 0.0, (0.4, 0.6))
    assert type(KINDS[load_config(SR3StageConfig, preset, []).sr.kind].from_config(cfg.sr)) is SR3
    with pytest.raises(ConfigError, match="sr.kind"):
        load_config(SR3StageConfig, preset, ["sr.kind=gan"])


# Per-image seeds: the same seed gives the same image in a batch of 1 and in a batch of 4. Not bit for
# bit: oneDNN blocks a convolution differently for another batch size, which rounds differently
# (measured 3e-8 to 3e-7 per forward pass), so the comparison allows 1e-5.
BATCH_TOLERANCE = dict(rtol=0, atol=1e-5)


def test_one_seed_per_image_whatever_the_batch():
    pipe = Pipeline([tiny_stage(8, num_classes=3), tiny_stage(16, 2, aug_level=0.1)])
    pipe = pipe.with_settings({1: dict(sampler="dpm++sde")})  # a sampler that injects noise at every step

    def draw(labels, **seed):
        return pipe(labels, output_type="pt", progress=False, **seed)

    four = draw([0, 1, 2, 0], seed=10)
    for i, label in enumerate([0, 1, 2, 0]):
        torch.testing.assert_close(draw([label], seed=10 + i)[0], four[i], **BATCH_TOLERANCE)
    torch.testing.assert_close(draw([2, 0], seed=[12, 13]), four[2:], **BATCH_TOLERANCE)
    # One generator for the whole batch is the old behaviour: the images then depend on the batch
    one = draw([0, 1, 2, 0], generator=torch.Generator().manual_seed(10))
    assert not torch.allclose(draw([0, 1], generator=torch.Generator().manual_seed(10)), one[:2], atol=1e-3)


def test_upscale_gives_input_image_i_seed_plus_i():
    pipe = Pipeline([tiny_stage(16, 2, aug_level=0.1)])
    images = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    together = pipe.upscale(images, seed=3, output_type="pt", progress=False)
    for i in range(4):
        alone = pipe.upscale(images[i], seed=3 + i, output_type="pt", progress=False)
        torch.testing.assert_close(alone[0], together[i], **BATCH_TOLERANCE)
    listed = pipe.upscale([images[0], images[1:3]], seed=3, output_type="pt", progress=False)
    torch.testing.assert_close(listed, together[:3], **BATCH_TOLERANCE)


def test_settings_are_per_call_and_checked():
    pipe = Pipeline([tiny_stage(8, num_classes=3), tiny_stage(16, 2)])
    a = pipe([0], seed=0, settings={1: dict(steps=5)}, output_type="pt", progress=False)
    assert pipe.stages[1].defaults.steps == 3  # nothing changed behind the caller's back
    torch.testing.assert_close(a, pipe.with_settings({-1: dict(steps=5)})([0], seed=0, output_type="pt",
                                                                           progress=False), rtol=0, atol=0)
    with pytest.raises(ValueError, match="unknown sampling setting 'stepz'"):
        pipe([0], settings={1: dict(stepz=5)}, progress=False)
    with pytest.raises(ValueError, match="sampler='nope' is not one of ddpm"):
        pipe([0], settings={0: dict(sampler="nope")}, progress=False)
    with pytest.raises(ValueError, match="settings for stage 5"):
        pipe([0], settings={5: dict(steps=2)}, progress=False)
