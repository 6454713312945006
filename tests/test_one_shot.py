"""One-shot cascades (cascade.one_shot, train/one_shot.py): trained on one photo, generating any size,
editing with SDEdit / masks, generative-prior SR, their metrics, and the bad inputs users give."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cascade import Pipeline
from cascade.data.one_image import OneImageCrops, load_photo, resize_long_side, row_positions
from cascade.diffusion.resize import downsample
from cascade.inference.one_shot import edit, photo_at, plan, prior_upscale
from cascade.io.images import signed_to_unit, unit_to_uint8
from cascade.kinds.one_shot import OneShotSR3, Scene
from cascade.metrics import one_shot as metrics
from conftest import ROOT, free_port, load_script, run_in_process, run_together

TINY = ["scene.scene.long_side=16", "scene.model.base_channels=8", "scene.train.batch_size=4",
        "scene.train.max_steps=2", "scene.sample.steps=2", "epoch_size=16"]
for _name in ("coarse", "fine"):
    TINY += [f"{_name}.model.sample_size=16", f"{_name}.model.base_channels=8", f"{_name}.model.channel_mult=[1,2]",
             f"{_name}.model.attention_resolutions=[]", f"{_name}.model.head_channels=8",
             f"{_name}.train.batch_size=2", f"{_name}.train.max_steps=2", f"{_name}.sample.steps=2"]


def photo(path, size=(96, 64)):
    from skimage import data as sk

    Image.fromarray(sk.coffee()).resize(size, Image.BICUBIC).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny one-shot cascade trained by train/one_shot.py in this process (scene 16 px, x2, x2)."""
    folder = tmp_path_factory.mktemp("one_shot")
    image = photo(folder / "coffee.png")
    proc = run_in_process("train/one_shot.py", "--image", image, f"output_dir={folder / 'run'}", *TINY)
    assert "wrote" in proc.stdout, proc.stdout + proc.stderr
    return folder / "run" / "pipeline", image


def test_training_writes_a_scene_then_two_upsamplers_that_chain_at_any_size(trained):
    folder, image = trained
    pipe = Pipeline.from_pretrained(folder)
    kinds = [type(s.kind) for s in pipe.stages]
    assert kinds == [Scene, OneShotSR3, OneShotSR3]
    assert pipe.stages[0].kind.size == (10, 16)  # 96 x 64 at 16 px on the longer side, sides even
    info = json.loads((folder / "one_shot.json").read_text())
    assert info["trained_on"] == [96, 64] and set(info["seconds"]) == {"scene", "coarse", "fine"}
    # a 4x wider output repeats `fine` and extends the scene sideways; the plan covers the size exactly
    p = plan(pipe, (400, 60))
    assert p.full[0] >= 60 and p.full[1] >= 400 and p.upsamplers[-1] is pipe.stages[2]
    assert p.scene[1] / p.scene[0] > 3


def test_two_processes_train_a_cascade_that_one_of_them_writes(tmp_path):
    """`accelerate launch` with 2 processes: the photo and stage lines are printed once, each stage exported once,
    and one process writes the cascade (the other, which never wrote an export, does not read them)."""
    image = photo(tmp_path / "coffee.png")
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    proc, = run_together([*launch, "train/one_shot.py", "--image", image, f"output_dir={tmp_path / 'run'}", *TINY])
    log = proc.stdout + proc.stderr
    assert log.count("photo: ") == 1 and log.count("--- fine stage") == 1 and log.count("wrote ") == 1, log[-3000:]
    assert log.count("exported the EMA model") == 3
    pipe = Pipeline.from_pretrained(tmp_path / "run" / "pipeline")
    assert [type(s.kind) for s in pipe.stages] == [Scene, OneShotSR3, OneShotSR3]


def test_generate_cli_any_size_per_image_seeds_and_contact_sheet(trained, tmp_path):
    folder, _ = trained
    run_in_process("-m", "cascade", "generate", "--pipeline", folder, "--size", "90x50", "--num", "2", "--seed", "3",
                   "--out", tmp_path / "a")
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == ["contact_sheet.png", "sample_0003.png", "sample_0004.png"]
    assert Image.open(tmp_path / "a" / "sample_0004.png").size == (90, 50)
    run_in_process("-m", "cascade", "generate", "--pipeline", folder, "--size", "90x50", "--seed", "4",
                   "--out", tmp_path / "b")
    same = [np.asarray(Image.open(d / "sample_0004.png")) for d in (tmp_path / "a", tmp_path / "b")]
    assert np.array_equal(*same)  # image 4 does not depend on being drawn second
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "a" / "sample_0003.png")), same[0])


def test_generate_from_the_photo_starts_the_scene_there_and_the_cli_reads_the_recorded_one(trained, tmp_path):
    """SinGAN's generation from a coarser scale: at strength 0 the scene is the photo at the scene's size (to
    float rounding), at 1 it is the scene drawn from noise; the CLI's bare --from-photo is the recorded photo."""
    from cascade.inference import one_shot

    folder, image = trained
    pipe = Pipeline.from_pretrained(folder)
    source, _ = load_photo(image, 4096)
    p = plan(pipe, (69, 37))  # a scene rounded up past the output: the photo must lie where the output is
    h, w = round(37 / p.scale), round(69 / p.scale)
    assert p.full != p.size and (h, w) != p.scene
    kept = one_shot.draw_scene(p, 0, progress=False, photo=source, strength=0.0)
    want = np.asarray(source.resize((w, h), Image.BICUBIC, reducing_gap=3.0), np.float64).transpose(2, 0, 1)
    np.testing.assert_allclose(kept[0, :, :h, :w].double().numpy() * 127.5 + 127.5, want, atol=1e-3)
    assert torch.equal(kept[..., h:, :w], kept[..., h - 1:h, :w].expand_as(kept[..., h:, :w]))  # edges replicated
    assert torch.equal(kept[..., w:], kept[..., w - 1:w].expand_as(kept[..., w:]))
    free = one_shot.draw_scene(p, 0, progress=False)
    assert torch.equal(one_shot.draw_scene(p, 0, progress=False, photo=source, strength=1.0), free)
    run_in_process("-m", "cascade", "generate", "--pipeline", folder, "--size", "80x48", "--seed", "2", "--from-photo",
                   "--strength", "0.4", "--out", tmp_path)
    expected = one_shot.generate(pipe, (80, 48), seed=2, photo=source, strength=0.4, progress=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sample_0002.png")), np.asarray(expected))
    with pytest.raises(ValueError, match="strength=0.5 starts the scene from a photo"):
        one_shot.generate(pipe, (80, 48), strength=0.5)


def test_scenes_keep_the_photos_row_profile_by_default_and_nothing_else(trained, tmp_path):
    """Rows kept: every x0 estimate, and the scene, has the given row means exactly (once clamped, as the scene
    will be), whatever the model would draw (here the photo upside down); the scenes still differ from seed to seed.
    train/one_shot.py records the photo's profile, generate and the CLI keep it by default, --free-rows does not."""
    from cascade.inference import one_shot

    folder, image = trained
    pipe = Pipeline.from_pretrained(folder)
    source, _ = load_photo(image, 4096)
    p = plan(pipe, (69, 37))
    profile = one_shot.row_profile(source)
    recorded = one_shot.recorded_rows(pipe)
    assert recorded.shape == (3, 64) and (recorded - profile).abs().max() < 0.01 / 127.5 + 1e-6  # rounded to 0.01
    flipped = one_shot.scene_rows(p, profile.flip(-1))  # upside down: not what the model draws
    scenes = pipe.stages[0].sample(num_images=2, seed=0, size=p.scene, rows=flipped, progress=False)
    assert (scenes.clamp(-1, 1).mean(dim=-1, keepdim=True) - flipped).abs().max() < 1e-5
    free = pipe.stages[0].sample(num_images=2, seed=0, size=p.scene, progress=False)
    assert (free.clamp(-1, 1).mean(dim=-1, keepdim=True) - flipped).abs().max() > 0.1  # the projection did it
    centred = scenes - scenes.mean(dim=-1, keepdim=True)
    assert (centred[0] - centred[1]).abs().mean() > 0.05  # along the rows each seed draws its own scene
    # the profile is placed where the photo is (photo_scene): at the scene's size it is the resized photo's rows
    h = round(37 / p.scale)
    resized = one_shot.photo_scene(p, source)[..., :h, :].mean(dim=-1, keepdim=True)
    assert (one_shot.scene_rows(p, profile)[..., :h, :] - resized).abs().max() < 0.03
    run_in_process("-m", "cascade", "generate", "--pipeline", folder, "--size", "80x48", "--seed", "2",
                   "--out", tmp_path)
    kept = one_shot.generate(pipe, (80, 48), seed=2, progress=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "sample_0002.png")), np.asarray(kept))
    assert np.array_equal(np.asarray(kept), np.asarray(one_shot.generate(pipe, (80, 48), seed=2, progress=False,
                                                                           keep_rows=recorded)))
    run_in_process("-m", "cascade", "generate", "--pipeline", folder, "--size", "80x48", "--seed", "2", "--free-rows",
                   "--out", tmp_path / "free")
    free = one_shot.generate(pipe, (80, 48), seed=2, progress=False, keep_rows=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "free" / "sample_0002.png")), np.asarray(free))
    assert not np.array_equal(np.asarray(free), np.asarray(kept))
    with pytest.raises(ValueError, match="keep_rows keeps a photo's row profile: give the photo"):
        one_shot.generate(Pipeline(list(pipe.stages)), (80, 48), keep_rows=True)  # no folder, no photo
    with pytest.raises(ValueError, match=r"rows \(1, 3, 4, 1\) must be \[1 or 1 x 3 x"):
        pipe.stages[0].sample(num_images=1, seed=0, size=p.scene, rows=flipped[:, :, :4], progress=False)
    with pytest.raises(ValueError, match="rows= .* applies to stages without an input"):
        pipe.stages[1].sample(torch.zeros(1, 3, *p.scene), seed=0, rows=flipped, progress=False)


@pytest.mark.parametrize("text, why", [
    ('{"row_profile": [[1.0, 2.0], [3.0]]}', "row_profile must be 3 lists"),
    ('{"row_profile": [[0, 300], [0, 0], [0, 0]]}', "of numbers in 0..255"),
    ("{not json", "not readable JSON"),
    ("[1, 2]", "expected a JSON object"),
])
def test_a_malformed_one_shot_record_is_one_line_naming_the_file(trained, tmp_path, text, why):
    import shutil

    folder, _ = trained
    copy = tmp_path / "pipeline"
    shutil.copytree(folder, copy)
    (copy / "one_shot.json").write_text(text)
    proc = run_in_process("-m", "cascade", "generate", "--pipeline", copy, "--size", "40x24", "--out", tmp_path / "o",
                          check=False)
    assert proc.returncode != 0 and not (tmp_path / "o").exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "one_shot.json" in last and why in last, last


def test_an_older_pipeline_keeps_its_training_photos_rows_or_says_they_are_free(trained, tmp_path):
    """A one_shot.json without row_profile: the rows of the training photo it names, when that is on the machine
    (the CLI and generate alike); else free, and the CLI says so."""
    import shutil

    from cascade.inference import one_shot

    folder, image = trained
    copy = tmp_path / "pipeline"
    shutil.copytree(folder, copy)
    info = json.loads((copy / "one_shot.json").read_text())
    del info["row_profile"]
    (copy / "one_shot.json").write_text(json.dumps(info))
    pipe = Pipeline.from_pretrained(copy)
    source, _ = load_photo(image, 4096)
    assert torch.equal(one_shot.recorded_rows(pipe), one_shot.row_profile(source))
    run_in_process("-m", "cascade", "generate", "--pipeline", copy, "--size", "80x48", "--out", tmp_path / "a")
    kept = one_shot.generate(pipe, (80, 48), progress=False, keep_rows=one_shot.row_profile(source))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / "sample_0000.png")), np.asarray(kept))
    (copy / "one_shot.json").write_text(json.dumps({**info, "image": str(tmp_path / "gone.png")}))
    proc = run_in_process("-m", "cascade", "generate", "--pipeline", copy, "--size", "80x48", "--out", tmp_path / "b")
    assert "note: the scene's rows are free" in proc.stdout
    free = one_shot.generate(Pipeline.from_pretrained(copy), (80, 48), progress=False)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "b" / "sample_0000.png")), np.asarray(free))
    assert not np.array_equal(np.asarray(free), np.asarray(kept))


def test_a_streamed_outputs_thumbnail_draws_the_files_scene(trained, monkeypatch):
    """The contact sheet's thumbnail of a streamed output: the scene of the output's own plan (where the photo's
    rows lie depends on the output's scale), through the upsamplers up to 1024 px, cropped as the file is."""
    from cascade.cli.generate import thumbnail_of_streamed
    from cascade.inference import one_shot

    folder, _ = trained
    pipe = Pipeline.from_pretrained(folder)
    p = plan(pipe, (1500, 700))
    seen = []
    draw = one_shot.draw_scene
    monkeypatch.setattr(one_shot, "draw_scene", lambda plan_, *a, **k: seen.append(plan_) or draw(plan_, *a, **k))
    thumb = thumbnail_of_streamed(pipe, p, 0, rows=one_shot.recorded_rows(pipe))
    assert seen == [p]
    kept = max(k for k in range(len(p.upsamplers) + 1) if max(p.scene) * 2 ** k <= 1024)  # x2 stages
    assert kept < len(p.upsamplers)
    assert thumb.size == (round(1500 * 2 ** kept / p.scale), round(700 * 2 ** kept / p.scale))


def test_masked_edit_keeps_every_pixel_outside_the_mask(trained, tmp_path):
    folder, _ = trained
    run_in_process("-m", "cascade", "generate", "--pipeline", folder, "--size", "64x40", "--out", tmp_path)
    source = tmp_path / "sample_0000.png"
    mask = np.zeros((40, 64), np.uint8)
    mask[10:30, 20:44] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    run_in_process("-m", "cascade", "edit", "--pipeline", folder, "--image", source, "--mask", tmp_path / "mask.png",
                   "--strength", "0.8", "--out", tmp_path / "edited.png")
    before, after = (np.asarray(Image.open(p)).astype(int) for p in (source, tmp_path / "edited.png"))
    assert np.array_equal(before[mask == 0], after[mask == 0])
    assert np.abs(before[mask > 0] - after[mask > 0]).mean() > 1  # the masked region was resampled
    unchanged = edit(Pipeline.from_pretrained(folder), Image.open(source), 0.0, progress=False)
    assert np.array_equal(np.asarray(unchanged).astype(int), before)  # strength 0 is the identity
    changed = np.asarray(edit(Pipeline.from_pretrained(folder), Image.open(source), 0.6, progress=False)).astype(int)
    assert np.abs(changed - before).mean() > 1


def test_prior_sr_output_downsamples_to_its_input(trained):
    folder, _ = trained
    scene = Pipeline.from_pretrained(folder).stages[0]
    lowres = torch.rand(2, 3, 7, 11, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = prior_upscale(scene, lowres, 2, seed=0, progress=False)
    assert out.shape == (2, 3, 14, 22)
    assert (downsample(out.double(), 2) - lowres.double()).abs().max() < 1e-5
    free = scene.sample(num_images=2, seed=0, size=(14, 22), progress=False)
    assert (downsample(free.double(), 2) - lowres.double()).abs().max() > 0.1  # the projection did it


def test_scene_rows_are_the_same_in_training_and_sampling():
    """A crop spanning the whole picture carries the positional channel that sampling gives that size."""
    image = Image.new("RGB", (32, 20), (10, 20, 30))
    crops = OneImageCrops(image, (20, 32), (32, 32), flip=False, length=2)
    rows = crops[0]["rows"]
    assert torch.equal(rows, row_positions(torch.zeros(1), 20, torch.tensor([20.0]))[0])
    assert rows[0] == pytest.approx(-1 + 1 / 20) and rows[-1] == pytest.approx(1 - 1 / 20)


def test_crops_are_mirrored_with_the_chance_asked_for_and_the_scene_takes_its_own():
    """flip=p mirrors a share p of the crops (binomial bounds over 2000); True is 0.5, drawn as before: the same
    crops; the preset's scene.scene.flip reaches the scene's crops only, and random_flip=false turns every one off."""
    from cascade.config.loading import load_config
    from cascade.config.one_shot import OneShotConfig
    from cascade.training.one_shot import training_stages

    ramp = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (40, 1))[..., None].repeat(3, -1))
    def mirrored(flip):  # a left-to-right ramp: a mirrored crop falls from left to right
        crops = OneImageCrops(ramp, (16, 16), (64, 64), flip=flip, length=2000, seed=3)
        return [bool(crops[i]["image"][0, 0, 0] > crops[i]["image"][0, 0, -1]) for i in range(len(crops))]

    for p in (0.0, 0.2, 0.5, 1.0):
        share = np.mean(mirrored(p))
        assert abs(share - p) <= 4 * np.sqrt(p * (1 - p) / 2000) + 1e-9, (p, share)
    assert mirrored(True) == mirrored(0.5) and not any(mirrored(False))
    with pytest.raises(ValueError, match="flip=1.5"):
        OneImageCrops(ramp, (16, 16), (64, 64), flip=1.5)
    photo = Image.new("RGB", (480, 320), (90, 120, 60))
    for overrides, want in (([], [0.2, True, True]), (["scene.scene.flip=0.5"], [0.5, True, True]),
                            (["scene.scene.flip=0.5", "random_flip=false"], [0.0, 0.0, 0.0])):
        cfg = load_config(OneShotConfig, ROOT / "configs" / "one_shot.yaml", overrides)
        stages = training_stages(cfg, photo, "photo.jpg")
        assert [data.crops.flip for *_, data in stages] == [0.5 if w is True else w for w in want]
        assert [data.recipe["flip"] for *_, data in stages] == want
    with pytest.raises(Exception, match="flip"):
        load_config(OneShotConfig, ROOT / "configs" / "one_shot.yaml", ["scene.scene.flip=2"])


def test_photos_of_any_mode_load_as_rgb_and_large_jpegs_are_decoded_reduced(tmp_path):
    gray = np.linspace(0, 65535, 48 * 64).reshape(48, 64).astype(np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    rgb, _ = load_photo(tmp_path / "g16.png", 4096)
    assert rgb.mode == "RGB" and np.asarray(rgb)[-1, -1, 0] == 255 and np.asarray(rgb)[0, 0, 0] == 0
    Image.new("RGBA", (64, 48), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert np.asarray(load_photo(tmp_path / "clear.png", 4096)[0]).min() == 255  # transparent -> white
    Image.new("P", (64, 48), 3).save(tmp_path / "p.png")
    assert load_photo(tmp_path / "p.png", 4096)[0].mode == "RGB"
    Image.new("RGB", (4000, 3000), (200, 100, 50)).save(tmp_path / "big.jpg", quality=90)
    small, original = load_photo(tmp_path / "big.jpg", 500)
    assert original == (4000, 3000) and small.size == (500, 375)
    draft = Image.open(tmp_path / "big.jpg")
    draft.draft("RGB", (500, 500))
    assert 500 <= draft.size[0] < 4000  # what load_photo decodes: a reduced scale, never below max_side


def test_bad_inputs_get_one_line_naming_the_value(trained, tmp_path):
    folder, image = trained
    cases = [
        (["-m", "cascade", "generate", "--pipeline", folder, "--size", "0x40"], "--size 0x40"),
        (["-m", "cascade", "generate", "--pipeline", folder, "--size", "wide"], "--size wide"),
        (["-m", "cascade", "generate", "--pipeline", folder, "--size", "70000x40"], "limited to 65535"),
        (["-m", "cascade", "generate", "--pipeline", folder, "--strength", "0.5"],
         "--strength 0.5: applies with --from-photo"),
        (["-m", "cascade", "generate", "--pipeline", folder, "--from-photo", tmp_path / "gone.jpg"],
         "gone.jpg: no such image file"),
        (["-m", "cascade", "edit", "--pipeline", folder, "--image", image, "--strength", "1.5", "--out", tmp_path / "o.png"],
         "--strength 1.5"),
        (["-m", "cascade", "edit", "--pipeline", folder, "--image", image, "--mask", photo(tmp_path / "m.png", (20, 20)),
          "--out", tmp_path / "o.png"], "m.png: mask is 20x20"),
        (["train/one_shot.py", "--image", photo(tmp_path / "tiny.png", (12, 8)), f"output_dir={tmp_path / 'r'}", *TINY],
         "tiny.png: 12x8 is smaller than the scene stage's size"),
        (["train/one_shot.py", "--image", photo(tmp_path / "narrow.png", (30, 12)), f"output_dir={tmp_path / 'r2'}",
          *TINY], "too small for the coarse upsampler's 16 px crops"),
        (["train/one_shot.py", "--image", tmp_path / "missing.jpg"], "missing.jpg: no such image file"),
    ]
    for args, expected in cases:
        proc = run_in_process(*args, check=False)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("error:") and expected in last, (args, proc.stderr)
    assert not (tmp_path / "o.png").exists()


def singan_features_by_hand(model, image: torch.Tensor, layer: str) -> np.ndarray:
    """SinGAN's SIFID features written out: x / 255 * 2 - 1, then each layer's convolution, batch norm (running
    statistics, eps 1e-3) and ReLU in float64, max pool before Conv2d_3b_1x1; one row per position."""
    x = image.double() / 255 * 2 - 1
    names = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"] + (["pool", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
                                                                      if layer == "Conv2d_4a_3x3" else [])
    for name in names:
        if name == "pool":
            x = torch.nn.functional.max_pool2d(x, 3, stride=2)
            continue
        block = getattr(model, name)
        x = torch.nn.functional.conv2d(x, block.conv.weight.double(), stride=block.conv.stride,
                                       padding=block.conv.padding)
        bn = block.bn
        x = (x - bn.running_mean.double().view(-1, 1, 1)) / (bn.running_var.double().view(-1, 1, 1) + 1e-3).sqrt()
        x = (x * bn.weight.double().view(-1, 1, 1) + bn.bias.double().view(-1, 1, 1)).clamp(min=0)
    return x[0].flatten(1).T.detach().numpy()


def test_sifid_is_singans_definition_computed_by_hand(tmp_path, monkeypatch):
    from scipy import linalg

    g = torch.Generator().manual_seed(0)
    ref = (torch.rand(1, 3, 40, 56, generator=g) * 255).to(torch.uint8)
    other = (torch.rand(1, 3, 44, 52, generator=g) * 200).to(torch.uint8)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))  # no torchvision weights: the FID ones, and it says so
    model, weights = metrics.sifid_network()
    assert "FID Inception" in weights and "not found offline" in weights
    for layer, channels in (("Conv2d_4a_3x3", 192), ("Conv2d_2b_3x3", 64)):
        a, b = (singan_features_by_hand(model, x, layer) for x in (other, ref))
        assert a.shape[1] == channels and metrics.early_features(model, other, layer).shape == a.shape
        mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
        expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
        assert metrics.sifid(model, other, ref, layer) == pytest.approx(expected, rel=1e-4)  # float32 network
        assert metrics.sifid(model, ref, ref, layer) == pytest.approx(0, abs=1e-3)  # sqrtm of a singular covariance
    # SinGAN's own weights (torchvision's ImageNet Inception-v3) are used when a file of them is given or cached
    fake = {k: torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    fake = {k: (v.abs() + 0.5 if "running_var" in k else v) for k, v in fake.items()}
    fake["AuxLogits.fc.weight"] = torch.zeros(1000, 768)  # torchvision's extra heads are ignored
    (tmp_path / "empty" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(fake, tmp_path / "empty" / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth")
    theirs, weights = metrics.sifid_network()
    assert weights == "torchvision ImageNet Inception-v3 (inception_v3_google-0cc3c7bd.pth)"
    assert torch.equal(theirs.Conv2d_4a_3x3.conv.weight, fake["Conv2d_4a_3x3.conv.weight"])
    assert metrics.sifid(theirs, other, ref) != pytest.approx(metrics.sifid(model, other, ref))


def test_one_shot_metrics_against_references():
    g = torch.Generator().manual_seed(0)
    ref = (torch.rand(1, 3, 40, 56, generator=g) * 255).to(torch.uint8)
    other = (torch.rand(1, 3, 40, 56, generator=g) * 200).to(torch.uint8)
    samples = (torch.rand(3, 3, 40, 56, generator=g) * 255).to(torch.uint8)
    luma = lambda x: (np.array([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1) * x.numpy().astype(float)).sum(1)  # noqa: E731
    want = luma(samples).std(axis=0).mean() / luma(ref).std()  # SinGAN's: intensity, population std
    assert metrics.diversity(samples, ref) == pytest.approx(want, rel=1e-9)
    pairs = [np.sqrt(((samples[i].double() - samples[j].double()) ** 2).mean().item()) for i in range(3)
             for j in range(i + 1, 3)]
    assert metrics.pairwise(samples, ref) == pytest.approx(np.mean(pairs) / luma(ref).std(), rel=1e-9)
    # nearest patches: a shifted copy finds itself; random patches against brute force
    assert metrics.nearest_patch(ref[..., 3:, 5:], ref).max() == 0
    q = other[..., :12, :12]
    dist = metrics.nearest_patch(q, ref, patch=8, stride=4)
    keys = torch.nn.functional.unfold(ref.double(), 8)[0].T
    brute = [((torch.nn.functional.unfold(q.double(), 8, stride=4)[0].T[i] - keys) ** 2).mean(1).min().sqrt()
             for i in range(dist.shape[0])]
    assert torch.allclose(dist, torch.stack(brute))
    ramp = torch.linspace(0, 255, 40).view(1, 1, 40, 1).expand(1, 3, 40, 56).to(torch.uint8)
    assert metrics.layout(ramp, ramp) == pytest.approx(1.0)
    assert metrics.layout(ramp.flip(-2), ramp) == pytest.approx(-1.0, abs=1e-3)
    shuffled = metrics.patch_shuffle(ref, 4, g)
    assert sorted(shuffled.flatten().tolist()) == sorted(ref.flatten().tolist())
    # the row shuffle keeps every row's pixels (so the layout exactly), and its diversity over many draws is the
    # photo's within-row spread: each pixel's std across draws tends to its row's std
    banded = (ramp.double() * 0.8 + ref.double() * 0.2).to(torch.uint8)  # bands (a ramp) with some texture
    rows = metrics.row_shuffle(banded, g)
    assert not torch.equal(rows, banded)
    for y in range(banded.shape[-2]):
        assert sorted(rows[..., y, :].permute(0, 2, 1).reshape(-1, 3).tolist()) == \
            sorted(banded[..., y, :].permute(0, 2, 1).reshape(-1, 3).tolist())  # whole pixels moved, not channels
    assert metrics.layout(rows, banded) == pytest.approx(1.0)
    draws = torch.cat([metrics.row_shuffle(banded, g) for _ in range(400)])
    within = (torch.from_numpy(luma(banded)).std(dim=-1, correction=0).mean() / luma(banded).std()).item()
    assert within < 0.3 and metrics.diversity(draws, banded) == pytest.approx(within, rel=0.02)


def test_octave_energy_finds_detail_at_its_scale():
    import skimage.data as sk
    from scipy.ndimage import gaussian_filter

    grey = torch.full((1, 3, 24, 32), 128.0)
    checker = (torch.arange(24).view(-1, 1) + torch.arange(32)) % 2 * 2 - 1  # +-1 at the finest period (2 px)
    energy = metrics.octave_energy((grey + 20 * checker).to(torch.uint8))[0]
    np.testing.assert_allclose(energy, [400, 0, 0], atol=1e-6)  # all of it in octave 1, nothing coarser
    photo = torch.from_numpy(sk.astronaut()[100:228, 150:278]).permute(2, 0, 1)[None]
    half = photo // 2  # the pyramid is linear: twice the image, four times every octave's energy
    np.testing.assert_allclose(metrics.octave_energy(half * 2), 4 * metrics.octave_energy(half), rtol=1e-12)
    soft = torch.from_numpy(np.stack([gaussian_filter(c, 1.0, mode="mirror") for c in photo[0].double().numpy()]))
    ratio = metrics.octave_energy(soft.round()[None].to(torch.uint8))[0] / metrics.octave_energy(photo)[0]
    assert ratio[0] < ratio[1] < ratio[2] < 1  # a blur takes the finest octave first, and the most of it


def test_eval_one_shot_scores_the_baselines_as_expected(trained, tmp_path):
    folder, image = trained
    proc = run_in_process("eval/one_shot.py", "--pipeline", f"tiny={folder}", "--num", "2", "--eval-side", "48",
                          "--from-photo-at", "0.5", "--out", tmp_path / "eval")
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["training photo", "photo shifted 4 px", "photo mirrored", "photo blurred, sigma 0.5 px",
                          "photo blurred, sigma 1 px", "patch shuffle 4x4", "patch shuffle 8x8", "row shuffle",
                          "blurred scene + upsamplers (tiny)", "photo at the scene's size + upsamplers (tiny)",
                          "photo at half size + last upsampler (tiny)", "tiny", "tiny, scene from the photo at s=0.5"]
    assert rows["row shuffle"]["layout"] == pytest.approx(1.0)
    assert rows["tiny, scene from the photo at s=0.5"]["sifid"] != rows["tiny"]["sifid"]
    # the scene's colours: the photo at the scene's size as PIL computes it, the crops the stage trained on
    colours = report["scene_colour"]
    assert list(colours)[1:] == ["training crops (1024)", "scenes, rows free (dpm++ 2, 2)"]
    shown = resize_long_side(load_photo(image, 4096)[0], 48)  # what the report scores
    scene = plan(Pipeline.from_pretrained(folder), shown.size).scene
    small = shown.resize(scene[::-1], Image.BICUBIC, reducing_gap=3.0)
    want = np.asarray(small, np.float64).reshape(-1, 3).mean(0)
    np.testing.assert_allclose(colours["photo at the scene's size"]["mean"], want, atol=0.01)
    assert abs(colours["training crops (1024)"]["mean"][0] - want[0]) < 40  # crops of the same photo
    assert rows["tiny"]["sifid_64"] > 0 and 0 <= rows["tiny"]["diversity"] and rows["tiny"]["pairwise"] > 0
    own = rows["training photo"]
    assert own["sifid"] == pytest.approx(0, abs=1e-3) and own["nearest_patch"] == 0 and own["layout"] == pytest.approx(1)
    assert rows["photo shifted 4 px"]["copied_fraction"] == 1  # a copy is recognised as one
    mirrored = rows["photo mirrored"]  # the same rows in reverse order: the same row means, other features
    assert mirrored["layout"] == pytest.approx(1) and mirrored["sifid"] > 100 * own["sifid"] + 1e-3
    assert rows["patch shuffle 4x4"]["layout"] < 0.99 and rows["tiny"]["nearest_patch"] > 1
    blurred = [rows[f"photo blurred, sigma {s} px"] for s in ("0.5", "1")]  # every pixel in place, detail lost
    assert 1e-3 < blurred[0]["sifid"] < blurred[1]["sifid"]
    assert blurred[0]["nearest_patch"] < blurred[1]["nearest_patch"]
    assert all(b["layout"] > 0.98 and abs(b["colour_mean_shift"]) < 1 for b in blurred)
    assert own["octaves"] == pytest.approx([1, 1, 1]) and blurred[1]["octaves"][0] < blurred[0]["octaves"][0] < 1
    assert "| tiny | 2 |" in proc.stdout and (tmp_path / "eval" / "samples.png").is_file()
    # the upsamplers' ceiling: the photo at a stage's output size, through the stages after it (a pipeline of those)
    script, pipe = load_script("eval/one_shot.py"), Pipeline.from_pretrained(folder)
    p, seed = plan(pipe, shown.size), 3
    x = Image.open(image).convert("RGB")
    for last in (None, 1):
        stages = p.upsamplers if last is None else p.upsamplers[-last:]
        scale = int(np.prod([s.kind.scale for s in stages]))
        want = signed_to_unit(photo_at(x, (p.full[0] // scale, p.full[1] // scale)))
        want = Pipeline(list(stages)).upscale(want, seed=seed, output_type="pt", progress=False)
        got = script.from_photo(pipe, x, shown.size, seed, last=last)
        assert got.shape[-2:] == shown.size[::-1]
        assert torch.equal(got, unit_to_uint8(want[..., :shown.size[1], :shown.size[0]]))


def test_large_outputs_are_streamed_to_disk(trained, tmp_path, monkeypatch):
    from cascade.inference import one_shot

    folder, _ = trained
    monkeypatch.setattr(one_shot, "IN_MEMORY_PIXELS", 1000)  # everything above 1000 px streams here
    proc = run_in_process("-m", "cascade", "generate", "--pipeline", folder, "--size", "90x50", "--out", tmp_path)
    assert "(streamed to disk)" in proc.stdout
    assert Image.open(tmp_path / "sample_0000.png").size == (90, 50)
    assert (tmp_path / "contact_sheet.png").is_file() and not list(tmp_path.glob("*.partial"))


def test_an_output_the_host_cannot_hold_is_refused_before_any_work(trained, tmp_path, monkeypatch):
    from cascade.inference import one_shot

    folder, _ = trained
    monkeypatch.setattr(one_shot, "available_memory", lambda: 10_000)
    proc = run_in_process("-m", "cascade", "generate", "--pipeline", folder, "--size", "90x50", "--out", tmp_path / "o",
                          check=False)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "90x50 output needs about" in last and "of memory" in last
    assert not (tmp_path / "o" / "sample_0000.png").exists()


@pytest.mark.parametrize("size", [(5312, 2988), (2988, 5312), (2000, 4000), (4200, 1800), (640, 427)])
def test_the_default_preset_takes_any_aspect_ratio_from_1_2_to_21_9(size):
    """16:9 and 9:16 photos of a phone's size, 1:2 and 21:9, and the built-in 3:2: every stage finds crops (the
    coarse stage's scales start where the short side allows one), and the scene keeps the photo's aspect."""
    from cascade.config.loading import load_config
    from cascade.config.one_shot import OneShotConfig
    from cascade.data.one_image import resize_long_side
    from cascade.training.one_shot import training_stages

    cfg = load_config(OneShotConfig, ROOT / "configs" / "one_shot.yaml")
    photo = resize_long_side(Image.new("RGB", size, (90, 120, 60)), min(max(size), cfg.max_side))
    stages = training_stages(cfg, photo, "photo.jpg")
    assert [name for name, *_ in stages] == ["scene", "coarse", "fine"]
    h, w = stages[0][2].size
    assert abs(w / h - size[0] / size[1]) < 0.2 * size[0] / size[1]
    for name, stage_cfg, kind, data in stages[1:]:
        smallest = data.crops.pyramid[0].shape[-2:]
        assert min(smallest) >= stage_cfg.model.sample_size


@pytest.mark.parametrize("size", [(128, 72), (72, 128)])
def test_a_16_9_and_a_9_16_photo_train_and_generate(tmp_path, size):
    image = photo(tmp_path / "photo.png", size)
    run_in_process("train/one_shot.py", "--image", image, f"output_dir={tmp_path / 'run'}", *TINY)
    pipe = Pipeline.from_pretrained(tmp_path / "run" / "pipeline")
    h, w = pipe.stages[0].kind.size
    assert (w > h) == (size[0] > size[1])
    assert edit(pipe, Image.open(image), 0.0, progress=False).size == size
    from cascade.inference import one_shot

    assert one_shot.generate(pipe, size, seed=0, progress=False).size == size


def network_calls(pipe) -> dict:
    """Forward hooks counting each distinct UNet's calls (the fine stage's UNet serves every repeat)."""
    counts = {}
    for stage in pipe.stages:
        counts.setdefault(id(stage.unet), 0)
        stage.unet.register_forward_hook(lambda module, args, out, key=id(stage.unet): counts.__setitem__(
            key, counts[key] + 1))
    return counts


def edit_case(trained, rows: slice, cols: slice):
    """The tiny cascade, its photo at 64 x 40, and a rectangular mask."""
    folder, image = trained
    mask = np.zeros((40, 64), np.int64)
    mask[rows, cols] = 1
    return Pipeline.from_pretrained(folder), Image.open(image).resize((64, 40), Image.BICUBIC), mask


def test_edit_redraws_only_the_finest_stages_asked_and_resamples_repaint_style(trained):
    pipe, picture, mask = edit_case(trained, slice(10, 30), slice(20, 44))
    counts = network_calls(pipe)
    scene, coarse, fine = (id(s.unet) for s in pipe.stages)
    edit(pipe, picture, 0.5, stages=1, seed=0, progress=False)
    assert counts[scene] == counts[coarse] == 0 and counts[fine] > 0  # the coarser scales pass the image on
    counts.update({k: 0 for k in counts})
    edit(pipe, picture, 1.0, mask=mask, seed=0, progress=False)
    once = dict(counts)
    counts.update({k: 0 for k in counts})
    out = edit(pipe, picture, 1.0, mask=mask, seed=0, resample=3, progress=False)
    steps = pipe.stages[0].defaults.steps  # every stage has 2 steps here: (2 - 1) x 3 + 1 evaluations each
    assert once[scene] == steps and counts[scene] == (steps - 1) * 3 + 1
    assert pipe.stages[0].network_evaluations({"sampler": "ddpm", "resample": 3}) == counts[scene]
    assert np.array_equal(np.asarray(out)[mask == 0], np.asarray(picture)[mask == 0])  # still kept exactly
    with pytest.raises(ValueError, match="ddpm or ddim"):  # resampling needs a scheduler that can renoise
        pipe.stages[0].sample(num_images=1, seed=0, settings={"sampler": "dpm++", "resample": 2}, progress=False)
    with pytest.raises(ValueError, match="ddpm or ddim"):  # nor counted as if it could
        pipe.stages[0].network_evaluations({"sampler": "dpm++", "resample": 2})


def test_renoise_is_the_forward_process_between_two_timesteps():
    from diffusers import DDPMScheduler

    from cascade.diffusion import rng
    from cascade.diffusion.sampling import renoise

    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    x = torch.full((1, 1, 200, 200), 0.7)
    out = renoise(scheduler, x, 300, 500, rng.example_generators(torch.tensor([0])))
    ratio = (scheduler.alphas_cumprod[500] / scheduler.alphas_cumprod[300]).item()
    assert out.mean().item() == pytest.approx(0.7 * ratio ** 0.5, abs=0.01)  # sqrt(abar_to / abar_from) x
    assert out.std().item() == pytest.approx((1 - ratio) ** 0.5, rel=0.02)  # + sqrt(1 - abar_to / abar_from) noise


@pytest.mark.parametrize("name, steps, spacing", [("DDIMScheduler", 30, "trailing"), ("DDIMScheduler", 20, "leading"),
                                                   ("DDPMScheduler", 30, "trailing"), ("DDPMScheduler", 30, "linspace")])
def test_resampling_renoises_from_where_the_step_landed(name, steps, spacing):
    """RePaint noises x back from the timestep the scheduler's step went to; for DDIM, read it off the
    step itself (x0 = 1, eps = 0: the step returns sqrt(abar_prev)); trailing spacing at 30 steps has
    gaps of 33 and 34 while DDIM always steps 33."""
    import diffusers

    from cascade.diffusion.sampling import stepped_to

    scheduler = getattr(diffusers, name)(beta_schedule="squaredcos_cap_v2", timestep_spacing=spacing)
    scheduler.set_timesteps(steps)
    abar = scheduler.alphas_cumprod.double()
    for i, t in enumerate(scheduler.timesteps[:-1]):
        to = stepped_to(scheduler, t, scheduler.timesteps[i + 1])
        if name == "DDPMScheduler":
            assert to == scheduler.previous_timestep(t)  # diffusers' own
            continue
        x = abar[t].sqrt().float().reshape(1, 1, 1, 1)  # x_t of x0 = 1 with no noise
        landed = scheduler.step(torch.zeros_like(x), t, x, eta=0.0).prev_sample.double().item() ** 2
        assert abar[to].item() == pytest.approx(landed, rel=1e-5)


def test_sample_renoises_from_where_each_ddim_step_landed(monkeypatch):
    """Through `sample` itself: every RePaint jump starts at the timestep DDIM's step went to (t - 33 at 30
    trailing steps), which is not always the next listed timestep (gaps of 33 and 34)."""
    from diffusers import DDIMScheduler

    from cascade.diffusion import sampling

    jumps = []
    real = sampling.renoise
    monkeypatch.setattr(sampling, "renoise", lambda sch, x, t_from, t_to, g: jumps.append((int(t_from), int(t_to)))
                        or real(sch, x, t_from, t_to, g))
    scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2", timestep_spacing="trailing")
    sampling.sample(lambda x, t: torch.zeros_like(x), scheduler, (1, 1, 4, 4), 30, torch.Generator().manual_seed(0),
                    progress=False, resample=2)
    listed = scheduler.timesteps.tolist()
    assert [t_to for _, t_to in jumps] == listed[:-1]  # every step but the last, once more
    assert all(t_from == t_to - 1000 // 30 for t_from, t_to in jumps)
    assert any(t_from != listed[i + 1] for i, (t_from, _) in enumerate(jumps))  # where the listed one differs


def test_harmonize_is_a_low_strength_feathered_edit_of_every_scale(trained):
    from cascade.inference.one_shot import harmonize, soft_mask

    pipe, picture, mask = edit_case(trained, slice(12, 28), slice(24, 40))
    out = np.asarray(harmonize(pipe, picture, mask, seed=2, progress=False)).astype(int)
    same = np.asarray(edit(pipe, picture, 0.3, mask=mask, feather=4, seed=2, progress=False)).astype(int)
    assert np.array_equal(out, same)
    weight = soft_mask(torch.from_numpy(mask)[None, None].bool(), 4)[0, 0].numpy()
    assert weight[mask == 1].min() == 1 and weight.max() == 1 and weight[0, 0] == 0
    band = (weight > 0) & (weight < 1)
    assert band.any() and (mask[band] == 0).all()  # the soft edge lies outside the object, within 4 px of it
    far, kept = weight == 0, np.asarray(picture).astype(int)
    assert np.array_equal(out[far], kept[far])  # beyond the feather: the picture exactly
    assert np.abs(out[band] - kept[band]).mean() > 0.5  # the band was redrawn and blended, not kept
    sharp = np.asarray(edit(pipe, picture, 0.3, mask=mask, seed=2, progress=False)).astype(int)
    assert np.array_equal(sharp[mask == 0], kept[mask == 0])  # without feather: everything outside kept
    for bad in ({"stages": 0}, {"feather": -1}, {"resample": 0}):
        with pytest.raises(ValueError, match="must be"):
            edit(pipe, picture, 0.3, mask=mask, progress=False, **bad)
    with pytest.raises(ValueError, match="give a mask"):
        edit(pipe, picture, 0.3, feather=4, progress=False)


def test_edge_ratio_is_one_for_the_photo_and_grows_with_a_seam():
    g = torch.Generator().manual_seed(0)
    photo = (torch.rand(1, 3, 48, 64, generator=g) * 60 + 100).round().to(torch.uint8)
    mask = torch.zeros(48, 64, dtype=torch.int64)
    mask[12:36, 16:48] = 1
    assert metrics.edge_ratio(photo, photo, mask) == pytest.approx(1.0)
    seam = photo.clone()
    seam[..., 12:36, 16:48] = 30  # a flat dark patch: a step at every boundary pixel
    assert metrics.edge_ratio(seam, photo, mask) > 3
