"""One-shot cascades (cascade.one_shot, train/one_shot.py): trained on one photo, generating any size,
editing with SDEdit / masks, generative-prior SR, their metrics, and the bad inputs users give."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cascade import Pipeline
from cascade.data.one_image import OneImageCrops, load_photo, row_positions
from cascade.diffusion.resize import downsample
from cascade.inference.one_shot import edit, plan, prior_upscale
from cascade.kinds.one_shot import OneShotSR3, Scene
from cascade.metrics import one_shot as metrics
from conftest import run_in_process

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
        (["-m", "cascade", "edit", "--pipeline", folder, "--image", image, "--strength", "1.5", "--out", tmp_path / "o.png"],
         "--strength 1.5"),
        (["-m", "cascade", "edit", "--pipeline", folder, "--image", image, "--mask", photo(tmp_path / "m.png", (20, 20)),
          "--out", tmp_path / "o.png"], "m.png: mask is 20x20"),
        (["train/one_shot.py", "--image", photo(tmp_path / "tiny.png", (12, 8)), f"output_dir={tmp_path / 'r'}", *TINY],
         "tiny.png: 12x8 is smaller than the scene stage's size"),
        (["train/one_shot.py", "--image", photo(tmp_path / "narrow.png", (40, 20)), f"output_dir={tmp_path / 'r2'}",
          *TINY], "too small for the coarse upsampler's 16 px crops"),
        (["train/one_shot.py", "--image", tmp_path / "missing.jpg"], "missing.jpg: no such image file"),
    ]
    for args, expected in cases:
        proc = run_in_process(*args, check=False)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 2 and last.startswith("error:") and expected in last, (args, proc.stderr)
    assert not (tmp_path / "o.png").exists()


def test_one_shot_metrics_against_references():
    from scipy import linalg

    from cascade.metrics.inception import load_feature_network

    g = torch.Generator().manual_seed(0)
    ref = (torch.rand(1, 3, 40, 56, generator=g) * 255).to(torch.uint8)
    other = (torch.rand(1, 3, 40, 56, generator=g) * 200).to(torch.uint8)
    network = load_feature_network()
    a, b = metrics.early_features(network, other), metrics.early_features(network, ref)
    assert a.shape[1] == 64
    mu1, mu2, s1, s2 = a.mean(0), b.mean(0), np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert metrics.sifid(network, other, ref) == pytest.approx(expected, rel=1e-6)
    assert metrics.sifid(network, ref, ref) == pytest.approx(0, abs=1e-6)
    samples = (torch.rand(3, 3, 40, 56, generator=g) * 255).to(torch.uint8)
    want = samples.numpy().astype(float).std(axis=0, ddof=1).mean() / ref.numpy().astype(float).std(ddof=1)
    assert metrics.diversity(samples, ref) == pytest.approx(want, rel=1e-9)
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


def test_eval_one_shot_scores_the_baselines_as_expected(trained, tmp_path):
    folder, image = trained
    proc = run_in_process("eval/one_shot.py", "--pipeline", f"tiny={folder}", "--num", "2", "--eval-side", "48",
               "--out", tmp_path / "eval")
    rows = json.loads((tmp_path / "eval" / "metrics.json").read_text())["rows"]
    assert list(rows) == ["training photo", "photo shifted 4 px", "patch shuffle 4x4",
                          "blurred scene + upsamplers (tiny)", "tiny"]
    own = rows["training photo"]
    assert own["sifid"] == pytest.approx(0, abs=1e-6) and own["nearest_patch"] == 0 and own["layout"] == pytest.approx(1)
    assert rows["photo shifted 4 px"]["copied_fraction"] == 1  # a copy is recognised as one
    assert rows["patch shuffle 4x4"]["layout"] < 0.99 and rows["tiny"]["nearest_patch"] > 1
    assert "| tiny | 2 |" in proc.stdout and (tmp_path / "eval" / "samples.png").is_file()


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
