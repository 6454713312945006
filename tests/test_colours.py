"""Colour fidelity of every path that turns a tensor into an image file or a PIL image.

A dark, saturated photo (mean luma < 80, a fifth of its pixels below 10) goes through each path:
- with an identity-like setting, the output equals what went in within 1/255: "oracle" stages whose
  network predicts a known x0 (a scene or base stage that returns the photo at the asked size; an
  upsampler whose residual is zero, so its output is the bicubic upsample of its input), SDEdit at
  strength 0, an edit that keeps every pixel, the generative-prior projection;
- through a tiny one-shot cascade trained on the photo, the samples keep its channel means, stds and
  2nd / 98th luma percentiles.

An image read in the wrong range fails here at once: a [0, 1] tensor saved as [-1, 1] maps every
pixel q to (255 + q) / 2 (nothing below 128), a [-1, 1] tensor converted again maps p to 4p - 3.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image

from cascade import Pipeline
from cascade.cli.generate import thumbnail_of_streamed
from cascade.config.sections import SampleConfig
from cascade.diffusion.resize import downsample, upsample
from cascade.inference.stage import Stage
from cascade.io.images import pil_to_signed, pil_to_uint8, signed_to_uint8, uint8_to_pil
from cascade.kinds.base import Base
from cascade.kinds.labels import LabelMap
from cascade.kinds.one_shot import OneShotSR3, Scene
from cascade.metrics.colour import colour_shift, colour_stats
from cascade.metrics.one_shot import layout
from conftest import run_in_process, tiny_unet

ORACLE_SETTINGS = SampleConfig(sampler="ddim", steps=2)  # DDIM's last step returns the x0 prediction exactly


def dark_photo(width=96, height=64) -> Image.Image:
    """scikit-image's coffee, gamma 2.2 (darker, more saturated): mean luma ~57, ~19% of pixels < 10."""
    from skimage import data as sk

    image = Image.fromarray(sk.coffee()).resize((width, height), Image.BICUBIC, reducing_gap=3.0)
    dark = (np.asarray(image, np.float64) / 255) ** 2.2 * 255
    return Image.fromarray(np.round(dark).astype(np.uint8))


def uint8_of(image: Image.Image) -> torch.Tensor:
    return pil_to_uint8(image).int()


def assert_within_one_level(image: Image.Image, expected: torch.Tensor):
    """`image` (PIL) equals uint8 `expected` [3 x H x W] within 1/255 at every pixel."""
    got = uint8_of(image)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    error = (got - expected.int()).abs()
    assert error.max() <= 1, f"{int(error.max())} levels off at {(error > 1).sum()} values"


def oracle_stage(kind, image: torch.Tensor | None, size: int, **config) -> Stage:
    """A stage whose network's x0 prediction is `image` [1 x 3 x h x w] in [-1, 1] resized (bicubic) to the
    size asked, or zero (None); prediction_type "sample", so DDIM ends exactly on it."""
    unet = tiny_unet(sample_size=size, cond_channels=kind.cond_channels(3), num_classes=0, **config).eval()

    def forward(x, t, **cond):
        if image is None:
            return torch.zeros_like(x)
        return F.interpolate(image.to(x), size=x.shape[-2:], mode="bicubic", align_corners=False).expand_as(x)

    unet.forward = forward
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample", clip_sample=False)
    stage = Stage(unet, scheduler, kind, ORACLE_SETTINGS)
    stage.erf = {"radius": 4, "size": 2 * size}  # nothing to measure: the oracle sees no pixel
    return stage


def upsampler(size=16) -> Stage:
    """An upsampler whose residual is zero: its output is the bicubic upsample of its input."""
    kind = OneShotSR3(scale=2, residual=True, residual_scale=4.0, noise_aug_max=0.0, blur_prob=0.0)
    return oracle_stage(kind, None, size, use_aug_level=False)


def one_shot_oracle(photo: Image.Image, scene_size=(16, 24)) -> Pipeline:
    """Scene (the photo at any size) -> x2 -> x2, every stage an oracle."""
    scene = oracle_stage(Scene(size=scene_size, positional=False), pil_to_signed(photo)[None], 16)
    return Pipeline([scene, upsampler(), upsampler()])


def expected_one_shot(photo: Image.Image, scene_size, out_size) -> torch.Tensor:
    """What the oracle cascade makes: the photo at the scene's size, bicubic x2 twice (each stage's output an
    image in [-1, 1]), cropped (uint8)."""
    scene = F.interpolate(pil_to_signed(photo)[None], size=scene_size, mode="bicubic", align_corners=False).clamp(-1, 1)
    twice = upsample(scene, (scene_size[0] * 2, scene_size[1] * 2)).clamp(-1, 1)
    big = upsample(twice, (scene_size[0] * 4, scene_size[1] * 4))
    return signed_to_uint8(big[0, :, :out_size[1], :out_size[0]])


def test_the_dark_photo_is_dark_and_saturated():
    stats = colour_stats(pil_to_uint8(dark_photo()))
    luma = (torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1) * pil_to_uint8(dark_photo()).double()).sum(0)
    assert stats["luma_mean"] < 80 and (luma < 10).double().mean() > 0.05
    assert stats["luma_mean"] == pytest.approx(luma.mean().item())
    assert stats["luma_p2"] == pytest.approx(np.percentile(luma.numpy(), 2))  # numpy's linear interpolation


def test_colour_shift_sees_a_washed_out_copy():
    image = pil_to_uint8(dark_photo())
    washed = ((255 + image.int()) // 2).to(torch.uint8)  # the bug: a [0, 1] image read as [-1, 1]
    shift = colour_shift(colour_stats(washed), colour_stats(image))
    assert shift["luma_p2"] > 100 and shift["mean"] > 60 and shift["std_ratio"] > 0.4
    assert colour_shift(colour_stats(image), colour_stats(image)) == {k: 0 for k in shift}


@pytest.mark.parametrize("shape", [(3, 1, 1), (3, 7, 5), (2, 3, 64, 97)])
def test_colour_stats_match_numpy(shape):
    """The histogram statistics against numpy on the pixels themselves (any shape, odd sizes)."""
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(len(shape)), dtype=torch.uint8)
    pixels = (x[None] if x.ndim == 3 else x).double().permute(1, 0, 2, 3).reshape(3, -1).numpy()
    luma = (np.array([0.299, 0.587, 0.114])[:, None] * pixels).sum(0)
    stats = colour_stats(x)
    np.testing.assert_allclose(stats["mean"], pixels.mean(1), rtol=1e-12)
    np.testing.assert_allclose(stats["std"], pixels.std(1), rtol=1e-12, atol=1e-12)
    for q in (2, 98):
        assert stats[f"luma_p{q}"] == pytest.approx(np.percentile(luma, q), abs=1e-9)
    assert stats["luma_mean"] == pytest.approx(luma.mean(), abs=1e-9)


def test_colour_stats_of_more_pixels_than_quantile_takes():
    """torch.quantile refuses more than 2^24 values; a 16K render has 141 M. Two levels in known shares."""
    h, w = 4100, 4100  # 16.8 M pixels
    x = torch.zeros(3, h, w, dtype=torch.uint8)
    x[:, : h // 4] = 200  # a quarter at 200, the rest 0
    stats = colour_stats(x)
    assert stats["mean"] == pytest.approx([50.0] * 3) and stats["std"] == pytest.approx([200 * 0.75 ** 0.5 * 0.5] * 3)
    assert stats["luma_p2"] == 0 and stats["luma_p98"] == pytest.approx(200)
    for bad in (torch.zeros(1, 4, 4, dtype=torch.uint8), torch.zeros(2, 4, 4, 4, dtype=torch.uint8)):
        with pytest.raises(ValueError, match="RGB images"):
            colour_stats(bad)


def test_render_views_crops_are_the_render_and_stats_are_exact(tmp_path):
    photo = dark_photo()
    render = photo.resize((300, 200), Image.BICUBIC)
    render.save(tmp_path / "render.png")
    photo.save(tmp_path / "photo.png")
    proc = run_in_process("eval/render_views.py", "--image", tmp_path / "render.png", "--photo", tmp_path / "photo.png",
                          "--out", tmp_path / "v", "--view-width", 150, "--crop", 64, "--at", "0,0", "--at", "1,0.5")
    assert "luma p98" in proc.stdout
    report = json.loads((tmp_path / "v" / "render_colours.json").read_text())
    assert report["crops"] == [[0, 0, 64, 64], [236, 68, 300, 132]]  # moved inside the image
    assert report["stats"]["render"]["mean"] == pytest.approx(colour_stats(pil_to_uint8(render))["mean"])
    assert report["stats"]["photo"]["luma_p2"] == pytest.approx(colour_stats(pil_to_uint8(photo))["luma_p2"])
    assert Image.open(tmp_path / "v" / "render_view.jpg").size == (150, 100)
    assert Image.open(tmp_path / "v" / "render_crops.jpg").size == (64 * 2 + 8, 64)
    crop = uint8_of(Image.open(tmp_path / "v" / "render_crop2.jpg"))
    assert (crop - uint8_of(render.crop((236, 68, 300, 132)))).abs().double().mean() < 3  # JPEG q92 of those pixels
    bad = run_in_process("eval/render_views.py", "--image", tmp_path / "render.png", "--out", tmp_path / "v",
                         "--at", "1.5,0", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == \
        "error: --at 1.5,0: X and Y must lie in [0, 1]"


# --- identity-like cases: each output equals its input within 1/255


def test_generate_in_memory_keeps_the_colours():
    from cascade.inference import one_shot

    photo = dark_photo()
    pipe = one_shot_oracle(photo)
    p = one_shot.plan(pipe, (96, 64))
    out = one_shot.generate(pipe, (96, 64), seed=0, progress=False)
    assert_within_one_level(out, expected_one_shot(photo, p.scene, (96, 64)))


def test_generate_streamed_and_its_thumbnail_keep_the_colours(tmp_path, monkeypatch):
    from cascade.inference import one_shot

    photo = dark_photo()
    pipe = one_shot_oracle(photo)
    monkeypatch.setattr(one_shot, "IN_MEMORY_PIXELS", 1000)  # stream everything above 1000 px
    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(lambda cls, name, **options: pipe))
    proc = run_in_process("-m", "cascade", "generate", "--pipeline", tmp_path, "--size", "96x64", "--out", tmp_path)
    assert "(streamed to disk)" in proc.stdout
    p = one_shot.plan(pipe, (96, 64))
    expected = expected_one_shot(photo, p.scene, (96, 64))
    assert_within_one_level(Image.open(tmp_path / "sample_0000.png"), expected)
    sheet = uint8_of(Image.open(tmp_path / "contact_sheet.png"))[:, 4:-4, 4:-4]  # the thumbnail, inside the border
    shift = colour_shift(colour_stats(sheet.to(torch.uint8)), colour_stats(expected))
    assert shift["mean"] < 3 and shift["luma_p2"] < 4, shift


def test_the_streamed_thumbnail_of_a_large_scene_keeps_the_colours():
    """A scene above 512 px: the thumbnail is the scene itself, no upsampler (its own conversion)."""
    from cascade.inference import one_shot

    pipe = one_shot_oracle(dark_photo(), scene_size=(400, 600))
    p = one_shot.plan(pipe, (2400, 1600))
    assert max(p.scene) > 512
    thumb = thumbnail_of_streamed(pipe, p, 0)
    scene = F.interpolate(pil_to_signed(dark_photo())[None], size=p.scene, mode="bicubic", align_corners=False)
    assert_within_one_level(thumb, signed_to_uint8(scene[0]))


def test_edit_at_strength_zero_returns_the_image(tmp_path, monkeypatch):
    from cascade.inference import one_shot

    photo = dark_photo()
    pipe = one_shot_oracle(photo)
    assert_within_one_level(one_shot.edit(pipe, photo, 0.0, progress=False), uint8_of(photo))
    # and through the command line, as a PNG
    photo.save(tmp_path / "dark.png")
    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(lambda cls, name, **options: pipe))
    run_in_process("-m", "cascade", "edit", "--pipeline", tmp_path, "--image", tmp_path / "dark.png", "--strength", "0",
                   "--out", tmp_path / "same.png")
    assert_within_one_level(Image.open(tmp_path / "same.png"), uint8_of(photo))


def test_a_masked_edit_keeps_the_dark_pixels_outside_the_mask():
    from cascade.inference import one_shot

    photo = dark_photo()
    mask = np.zeros((64, 96), np.int64)
    mask[20:40, 30:60] = 1
    out = uint8_of(one_shot.edit(one_shot_oracle(photo), photo, 0.5, mask=mask, seed=1, progress=False))
    keep = torch.from_numpy(mask == 0)
    assert torch.equal(out[:, keep], uint8_of(photo)[:, keep])


@pytest.mark.parametrize("tiled", [False, True])
def test_pipeline_upscale_pil_and_pt_keep_the_colours(tiled):
    photo = dark_photo(48, 32)
    pipe = Pipeline([upsampler()])
    expected = signed_to_uint8(upsample(pil_to_signed(photo)[None], (64, 96))[0])
    tile = dict(tile_size=32, overlap=8) if tiled else {}
    assert_within_one_level(pipe.upscale(photo, seed=0, progress=False, **tile)[0], expected)
    unit = pipe.upscale(photo, seed=0, output_type="pt", progress=False, **tile)  # [0, 1]
    assert unit.min() >= 0 and (unit[0] * 255 - expected.double()).abs().max() <= 0.5 + 1e-4


def test_upscale_command_in_memory_streamed_and_giant_keep_the_colours(tmp_path, monkeypatch):
    from cascade.inference.streamed.upscale import upscale_to_file

    photo = dark_photo(48, 32)
    photo.save(tmp_path / "dark.png")
    pipe = Pipeline([upsampler()])
    expected = signed_to_uint8(upsample(pil_to_signed(photo)[None], (64, 96))[0])
    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(lambda cls, name, **options: pipe))
    for extra, name in (([], "memory.png"), (["--stream", "--tile-size", "32"], "streamed.png")):
        run_in_process("-m", "cascade", "upscale", tmp_path / "dark.png", tmp_path / name, "--pipeline", tmp_path,
                       *extra)
        assert_within_one_level(Image.open(tmp_path / name), expected)
    upscale_to_file(pipe, photo, tmp_path / "giant.tif", tile_size=32, progress=False)
    assert_within_one_level(Image.open(tmp_path / "giant.tif"), expected)


def test_prior_upscale_command_writes_the_projected_output_in_its_colours(tmp_path, monkeypatch):
    from cascade.inference.one_shot import prior_upscale

    photo = dark_photo(24, 16)
    photo.save(tmp_path / "small.png")
    scene = oracle_stage(Scene(size=(16, 24), positional=False), pil_to_signed(dark_photo(96, 64))[None], 16)
    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(lambda cls, name, **options: Pipeline([scene])))
    run_in_process("-m", "cascade", "upscale", tmp_path / "small.png", tmp_path / "big.png", "--pipeline", tmp_path,
                   "--prior", "--scale", "2")
    out = prior_upscale(scene, pil_to_signed(photo)[None], 2, seed=0, progress=False)  # [-1, 1]
    assert (downsample(out.double(), 2) - pil_to_signed(photo)[None].double()).abs().max() < 1e-6
    assert_within_one_level(Image.open(tmp_path / "big.png"), signed_to_uint8(out[0]))
    # Saved as 8 bits the output is clipped to [-1, 1]: next to bright pixels, the input's near-black ones need
    # values below -1 (bicubic's negative lobes), so the file downsamples to the input only in its statistics.
    small = signed_to_uint8(downsample(pil_to_signed(Image.open(tmp_path / "big.png"))[None].double(), 2)[0])
    assert colour_shift(colour_stats(small), colour_stats(pil_to_uint8(photo)))["mean"] < 1.5


def test_base_pipeline_call_pil_and_pt_return_the_image():
    photo = dark_photo(16, 16)
    base = oracle_stage(Base(), pil_to_signed(photo)[None], 16)
    pipe = Pipeline([base])
    assert_within_one_level(pipe(num_images=1, seed=0, progress=False)[0], uint8_of(photo))
    unit = pipe(num_images=1, seed=0, output_type="pt", progress=False)
    assert (unit[0] * 255 - uint8_of(photo).double()).abs().max() <= 0.5 + 1e-4


def test_synthesize_command_keeps_the_colours(tmp_path, monkeypatch):
    photo = dark_photo(32, 16)
    stage = oracle_stage(LabelMap(), pil_to_signed(photo)[None], 16, num_labels=3)
    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(lambda cls, name, **options: Pipeline([stage])))
    Image.fromarray(np.ones((16, 32), np.uint8)).save(tmp_path / "labels.png")
    run_in_process("-m", "cascade", "synthesize", tmp_path / "labels.png", tmp_path / "photo.png", "--pipeline",
                   tmp_path)
    assert_within_one_level(Image.open(tmp_path / "photo.png"), uint8_of(photo))


def test_eval_one_shot_pictures_keep_the_colours(tmp_path, monkeypatch):
    """samples.png shows the photo as it is, the oracle's samples with its colours; applications.png
    shows its inputs (a sample, the prior-SR input) with their colours too."""
    photo = dark_photo()
    photo.save(tmp_path / "dark.png")
    pipe = one_shot_oracle(photo)
    monkeypatch.setattr(Pipeline, "from_pretrained", classmethod(lambda cls, name, **options: pipe))
    run_in_process("eval/one_shot.py", "--pipeline", f"oracle={tmp_path}", "--image", tmp_path / "dark.png", "--num",
                   "2", "--eval-side", "96", "--applications", "--out", tmp_path / "eval")
    grid = uint8_of(Image.open(tmp_path / "eval" / "samples.png"))
    left = 170 + 2  # the label column, then the padding
    assert torch.equal(grid[:, 2:66, left:left + 96], uint8_of(photo))  # row 0, cell 0: the training photo
    oracle_row = grid[:, 2 + 3 * 66:2 + 3 * 66 + 64, left:left + 96]  # row 3: the oracle's sample 0
    shift = colour_shift(colour_stats(oracle_row.to(torch.uint8)), colour_stats(uint8_of(photo).to(torch.uint8)))
    assert shift["mean"] < 3 and shift["luma_p2"] < 3, shift
    apps = uint8_of(Image.open(tmp_path / "eval" / "applications.png"))
    rows = ["SDEdit", "inpaint", "inpaint resampled", "harmonize finest 2", "harmonize", "prior SR"]  # input | output
    cell = lambda row, col: apps[:, 2 + rows.index(row) * 66:2 + rows.index(row) * 66 + 64,  # noqa: E731
                                 172 + col * 98:172 + col * 98 + 96].to(torch.uint8)
    reference = colour_stats(uint8_of(photo).to(torch.uint8))
    assert colour_shift(colour_stats(cell("SDEdit", 0)), reference)["mean"] < 8  # a crude paste of the photo
    for row in ("inpaint", "inpaint resampled"):  # the oracle redraws the photo: its colours, no seam
        assert colour_shift(colour_stats(cell(row, 1)), reference)["mean"] < 3
    assert colour_stats(cell("prior SR", 0))["luma_p2"] < 20  # dark pixels stay dark
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["rows"]["oracle"]["n"] == 2 and report["applications"]["inpaint_edge_ratio_resample_4"] < 1.5
    for row in ("photo at the scene's size + upsamplers (oracle)", "photo at half size + last upsampler (oracle)"):
        assert report["rows"][row]["colour_mean_shift"] < 3  # the photo through the upsamplers: its own colours


# --- a trained tiny cascade keeps the photo's colour statistics

TRAINED = ["scene.scene.long_side=24", "scene.model.base_channels=16", "scene.train.batch_size=8",
           "scene.train.max_steps=300", "scene.train.warmup_steps=10", "scene.sample.steps=10", "epoch_size=256"]
for _name in ("coarse", "fine"):
    TRAINED += [f"{_name}.model.sample_size=16", f"{_name}.model.base_channels=8",
                f"{_name}.model.channel_mult=[1,2]", f"{_name}.model.attention_resolutions=[]",
                f"{_name}.model.head_channels=8", f"{_name}.train.batch_size=4", f"{_name}.train.max_steps=120",
                f"{_name}.train.warmup_steps=5", f"{_name}.sample.steps=4"]


@pytest.fixture(scope="module")
def dark_cascade(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dark")
    dark_photo(96, 64).save(folder / "dark.png")
    run_in_process("train/one_shot.py", "--image", folder / "dark.png", f"output_dir={folder / 'run'}", *TRAINED)
    return folder / "run"


def test_training_preview_shows_the_photo_as_it_is(dark_cascade):
    """The scene stage's preview starts with the training photo at the scene's size."""
    stage = Pipeline.from_pretrained(dark_cascade / "pipeline").stages[0]
    h, w = stage.kind.size
    preview = uint8_of(Image.open(sorted((dark_cascade / "scene" / "samples").glob("*.png"))[-1]))
    photo = dark_photo(96, 64).resize((w, h), Image.BICUBIC, reducing_gap=3.0)
    assert_within_one_level(uint8_to_pil(preview[:, 2:2 + h, 2:2 + w].to(torch.uint8))[0], uint8_of(photo))


def test_samples_of_a_trained_cascade_keep_the_photos_colours(dark_cascade):
    from cascade.inference import one_shot

    pipe = Pipeline.from_pretrained(dark_cascade / "pipeline")
    reference = colour_stats(pil_to_uint8(dark_photo(96, 64)))
    samples = torch.stack([pil_to_uint8(one_shot.generate(pipe, (96, 64), seed=s, progress=False, keep_rows=False))
                           for s in range(4)])  # the scene's rows free
    shift = colour_shift(colour_stats(samples), reference)
    assert shift["mean"] < 15 and shift["std_ratio"] < 0.3 and shift["luma_p2"] < 12 and shift["luma_p98"] < 40, shift
    # the default: the photo's row profile kept (clamp-aware, so the dark rows' clipped texture does not lift
    # them): the channel means come closer to the photo's, the dark end stays, every sample follows its rows
    kept = torch.stack([pil_to_uint8(one_shot.generate(pipe, (96, 64), seed=s, progress=False)) for s in range(4)])
    kept_shift = colour_shift(colour_stats(kept), reference)
    assert kept_shift["mean"] < shift["mean"], (kept_shift, shift)
    assert kept_shift["std_ratio"] < 0.3 and kept_shift["luma_p2"] < 12, kept_shift
    assert min(layout(x[None], pil_to_uint8(dark_photo(96, 64))[None]) for x in kept) > 0.9
