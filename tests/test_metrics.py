"""Metric maths against independent references: scikit-image (PSNR, SSIM, BT.601 luma), scipy's
sqrtm (Fréchet distance), numpy (covariance, Inception Score), and analytic cases."""

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import skimage.data
import torch
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cascade.diffusion.resize import downsample, upsample
from cascade.metrics import sr
from cascade.metrics.scores import FeatureStats, frechet_distance, inception_score
from cascade.models.classifier import top_k_accuracy


def as_tensor(*arrays):
    return torch.stack([torch.from_numpy(a).permute(2, 0, 1) for a in arrays])


def degraded_pairs():
    """Real photos (cropped to equal sizes) and three realistic degradations of each: a bicubic
    x2 round trip, uint8 noise, and a shifted copy."""
    rng = np.random.default_rng(0)
    pairs = []
    for photo in (skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea()):
        hr = photo[:200, :296].copy()
        t = torch.from_numpy(hr).permute(2, 0, 1)[None].double() / 255
        bicubic = (upsample(downsample(t, 2), (200, 296)).clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
        noisy = np.clip(hr.astype(int) + rng.integers(-25, 26, hr.shape), 0, 255).astype(np.uint8)
        shifted = np.roll(hr, (1, 2), axis=(0, 1))
        pairs += [(bicubic, hr), (noisy, hr), (shifted, hr)]
    return pairs


@pytest.mark.parametrize("border", [0, 2, 4])
def test_psnr_and_ssim_equal_scikit_image_on_rgb_and_y(border):
    for out, ref in degraded_pairs():
        q = sr.quality(as_tensor(out), as_tensor(ref), border=border)
        if border:
            out, ref = out[border:-border, border:-border], ref[border:-border, border:-border]
        kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
        y_out, y_ref = rgb2ycbcr(out)[..., 0], rgb2ycbcr(ref)[..., 0]
        assert q["psnr_rgb"].item() == pytest.approx(peak_signal_noise_ratio(ref, out, data_range=255), abs=1e-4)
        assert q["ssim_rgb"].item() == pytest.approx(structural_similarity(out, ref, channel_axis=2, **kw), abs=1e-4)
        assert q["psnr_y"].item() == pytest.approx(peak_signal_noise_ratio(y_ref, y_out, data_range=255), abs=1e-4)
        assert q["ssim_y"].item() == pytest.approx(structural_similarity(y_out, y_ref, **kw), abs=1e-4)


def test_quality_is_per_image_and_checks_its_inputs():
    (a, ref_a), (b, ref_b) = degraded_pairs()[:2]
    both = sr.quality(as_tensor(a, b), as_tensor(ref_a, ref_b), border=2)
    one = sr.quality(as_tensor(b), as_tensor(ref_b), border=2)
    assert both["ssim_y"].shape == (2,) and both["ssim_y"][1].item() == pytest.approx(one["ssim_y"].item(), abs=1e-12)
    with pytest.raises(TypeError, match="uint8"):
        sr.quality(as_tensor(a).float(), as_tensor(ref_a).float(), border=2)
    with pytest.raises(ValueError, match="differ in shape"):
        sr.quality(as_tensor(a)[..., :100], as_tensor(ref_a), border=2)


def test_consistency_of_the_downsampler_round_trip_is_zero():
    hr = torch.from_numpy(skimage.data.chelsea()[:128, :192].copy()).permute(2, 0, 1)[None].double() / 255
    lr = downsample(hr, 4)
    assert sr.consistency(hr, lr).item() < 1e-20
    quantised = (lr * 255).round() / 255  # what a saved low-res PNG holds: rounding error only, ~(1/255)^2 / 12
    assert sr.consistency(hr, quantised).item() < 2e-6
    # a blurry upscale of the same input is not consistent with it
    blurry = upsample(downsample(hr, 8), (128, 192))
    assert sr.consistency(blurry, lr).item() > 1e-4


def scipy_fid(mu1, s1, mu2, s2):
    """The reference implementation's formula (pytorch-fid / TTUR), with scipy's sqrtm."""
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    diff = mu1 - mu2
    return diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("n,d", [(400, 32), (1000, 128), (60, 32)])
def test_frechet_distance_equals_scipy_sqrtm(n, d):
    rng = np.random.default_rng(d)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    a = rng.normal(size=(n, d)) @ mix
    b = rng.normal(size=(n, d)) @ (mix + 0.3 * np.eye(d)) + 0.2
    stats = [(x.mean(0), np.cov(x, rowvar=False)) for x in (a, b)]
    ours = frechet_distance(*stats[0], *stats[1])
    assert ours == pytest.approx(scipy_fid(*stats[0], *stats[1]), rel=1e-6)
    assert abs(frechet_distance(*stats[0], *stats[0])) < 1e-8 * np.trace(stats[0][1])


def test_frechet_distance_of_gaussians_in_closed_form():
    # diagonal covariances: FID = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    expected = 5.0 + ((np.sqrt(s1) - np.sqrt(s2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_of_rank_deficient_gaussians_in_closed_form():
    # fewer samples than dimensions: covariances of rank < d sharing eigenvectors (a random rotation Q), where
    # Tr (S1 S2)^(1/2) = sum sqrt(s1 s2) over the common eigenvalues, zeros included
    d = 300
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))
    s1, s2 = np.zeros(d), np.zeros(d)
    s1[:7], s2[3:40] = np.linspace(1, 5, 7), np.linspace(0.5, 2, 37)
    mu = np.zeros(d)
    expected = s1.sum() + s2.sum() - 2 * np.sqrt(s1 * s2).sum()
    ours = frechet_distance(mu, (q * s1) @ q.T, mu, (q * s2) @ q.T)
    assert ours == pytest.approx(expected, rel=1e-11)  # all d kept, the sqrt of round-off eigenvalues adds 3e-8
    assert frechet_distance(mu, (q * s2) @ q.T, mu, (q * s1) @ q.T) == pytest.approx(expected, rel=1e-11)


def test_feature_stats_accumulate_like_numpy_and_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(257, 16)) * 3 + 5
    stats = FeatureStats()
    for chunk in np.array_split(x, 5):
        stats.update(torch.from_numpy(chunk))
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-9, atol=1e-12)
    stats.save(tmp_path / "s.npz", source="x")
    loaded = FeatureStats.load(tmp_path / "s.npz")
    assert loaded.count == 257 and loaded.meta["source"] == "x"
    np.testing.assert_array_equal(loaded.cov, stats.cov)


def test_inception_score_equals_the_reference_formula():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(1000, 50)) * 3
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    scores = []
    for part in np.split(probs, 10):  # the reference: consecutive chunks, KL to the chunk's marginal
        py = part.mean(0)
        scores.append(np.exp(np.mean([scipy.stats.entropy(p, py) for p in part])))
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(np.mean(scores), rel=1e-10) and std == pytest.approx(np.std(scores), rel=1e-8)
    # analytic cases: confident and uniform over K classes -> K; always the same class -> 1
    confident = np.eye(10)[np.arange(1000) % 10] * 50
    assert inception_score(confident)[0] == pytest.approx(10, rel=1e-6)
    assert inception_score(np.tile(confident[:1], (1000, 1)))[0] == pytest.approx(1, rel=1e-6)


def test_top_k_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    labels = torch.tensor([0, 2, 0])
    assert top_k_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(logits, labels, 5) == 1.0  # capped at the class count


def test_texture_regions_and_their_hf_energy_equal_scipy_on_a_photo():
    """Smooth / textured regions from the truth's local std of BT.601 luma (scikit-image's rgb2ycbcr,
    scipy's uniform_filter) and each region's Laplacian energy (scipy.ndimage.laplace), in the interior
    where the 7x7 window fits; the photo has both (sky, grass)."""
    import scipy.ndimage as ndi

    photo = skimage.data.astronaut()[::4, ::4][:96, :96]
    noisy = np.clip(photo.astype(np.int16) + np.random.default_rng(0).integers(-6, 7, photo.shape), 0, 255)
    hr = as_tensor(photo)
    smooth, textured = (m[0].numpy() for m in sr.texture_regions(hr))
    y = rgb2ycbcr(photo)[..., 0]
    std = np.sqrt(np.maximum(ndi.uniform_filter(y * y, 7) - ndi.uniform_filter(y, 7) ** 2, 0))[1:-1, 1:-1]
    inner = (slice(2, -2), slice(2, -2))  # >= 3 px from the image's edge: no padding in either
    decided = np.abs(std - sr.SMOOTH_STD) > 1e-6
    np.testing.assert_array_equal(smooth[inner][decided[inner]], (std < sr.SMOOTH_STD)[inner][decided[inner]])
    np.testing.assert_array_equal(textured[inner], (std >= sr.TEXTURED_STD)[inner])
    assert 0.05 < smooth.mean() and 0.05 < textured.mean() and not (smooth & textured).any()

    row = sr.per_image(as_tensor(noisy.astype(np.uint8)), as_tensor(photo[::2, ::2]), hr, 2)
    for image, key in ((noisy, "hf_smooth"), (photo, "hf_smooth_truth")):
        energy = np.stack([ndi.laplace(image[..., c] / 255.0) ** 2 for c in range(3)]).mean(0)[1:-1, 1:-1]
        np.testing.assert_allclose(row[key][0].item(), (energy * smooth).sum(), rtol=1e-9)
    # noise on a smooth region is many times the truth's energy there; on texture it matters less
    summary = sr.summarise({k: [v] for k, v in row.items()})
    assert summary["hf_smooth_vs_truth"] > 3 * summary["hf_textured_vs_truth"] > 3


def test_bench_studies_runs_a_study_and_reruns_one_row(tmp_path):
    """eval/bench_studies.py as documented, on tiny stages: a table per seed, a noise floor, and
    --rows reruns one row while keeping the others (a user checks one row of a study this way)."""
    import json

    from cascade import Pipeline
    from cascade.inference.stage import Stage
    from cascade.kinds.sr3 import Regression
    from conftest import run_in_process, tiny_stage

    for run_name in ("sr3", "sr3_x4", "regression"):
        stage = tiny_stage(64, 2)
        if run_name == "regression":
            stage = Stage(stage.unet, stage.noise_scheduler, Regression(scale=2), stage.defaults)
        Pipeline([stage]).save_pretrained(tmp_path / "runs" / run_name / "pipeline")
    args = ["eval/bench_studies.py", "regression", "--runs", tmp_path / "runs", "--num", "4", "--seeds", "0", "1",
            "--batch-size", "4", "--out", tmp_path / "out"]
    first = run_in_process(*args, "--rows", "regression (", "SR3 (x4")  # the preset's 50 steps: not here
    report = json.loads((tmp_path / "out" / "regression.json").read_text())
    assert set(report["runs"]) == {"0", "1"} and len(report["runs"]["0"]) == 3
    assert report["runs"]["0"]["bicubic"]["psnr_y"] != report["runs"]["1"]["bicubic"]["psnr_y"]  # other crops
    assert " ± " in first.stdout
    kept = "SR3 (x4 + blur), dpm++sde 20"
    report["runs"]["0"][kept]["psnr_y"] = -1.0  # marks a row the rerun must keep
    (tmp_path / "out" / "regression.json").write_text(json.dumps(report))
    run_in_process(*args, "--rows", "regression (")
    again = json.loads((tmp_path / "out" / "regression.json").read_text())["runs"]
    assert again["0"][kept]["psnr_y"] == -1.0 and list(again["0"]) == list(report["runs"]["0"])
    name = "regression (one step, L2; x4 + blur)"
    assert {k: v for k, v in again["0"][name].items() if k != "seconds"} == \
        {k: v for k, v in report["runs"]["0"][name].items() if k != "seconds"}  # the same crops and outputs
    missing = run_in_process(*args[:3], tmp_path / "nowhere", *args[4:], check=False)
    assert missing.returncode == 2 and "regression/pipeline: missing" in missing.stderr.strip().splitlines()[-1]


def test_the_augmentation_study_runs_and_reruns_one_row(tmp_path):
    """The augmentation study (CDM table 2b) on tiny stages: every row at every level, the picture,
    and --rows reruns one row on the same base samples, keeping the others; other levels refused."""
    import json

    from PIL import Image

    from cascade import Pipeline
    from conftest import run_in_process, tiny_stage

    runs = tmp_path / "runs"
    Pipeline([tiny_stage(32, 1, num_classes=10)]).save_pretrained(runs / "base32" / "pipeline")
    Pipeline([tiny_stage(64, 1, num_classes=10, seed=2)]).save_pretrained(runs / "base64" / "pipeline")
    for run_name in ("sr3_x4_noaug", "sr3_x4_blur_only", "sr3_x4_noblur", "sr3_x4", "sr3"):
        Pipeline([tiny_stage(64, 2)]).save_pretrained(runs / run_name / "pipeline")
    args = ["eval/bench_studies.py", "augmentation", "--runs", runs, "--num", "4", "--seeds", "0",
            "--levels", "0.1", "--batch-size", "4", "--cas-per-class", "2", "--cas-epochs", "3", "--out",
            tmp_path / "out"]
    run_in_process(*args)
    report = json.loads((tmp_path / "out" / "augmentation.json").read_text())
    rows = list(report["runs"]["0"])
    assert len(rows) == 3 + 5 and report["levels"] == [0.1]  # one level keeps the test short; the rows per level
    assert "cascade, SR noise + blur, s=0.1" in rows and "cascade, bicubic x2 (no SR stage)" in rows
    assert all(0 <= r["cas_top1"] <= 100 and r["fid"] > 0 for r in report["runs"]["0"].values())
    assert report["runs"]["0"]["cascade, SR noise, s=0.1"] != report["runs"]["0"]["cascade, bicubic x2 (no SR stage)"]
    picture = Image.open(tmp_path / "out" / "augmentation.png")  # 4 samples: base | 5 SR stages | 64 px base
    assert picture.size == (2 * (7 * 64 + 8 * 2), 2 * (4 * 64 + 5 * 2))
    kept = "cascade, SR noise, s=0.1"
    report["runs"]["0"][kept]["fid"] = -1.0  # marks a row the rerun must keep
    (tmp_path / "out" / "augmentation.json").write_text(json.dumps(report))
    run_in_process(*args, "--rows", "bicubic")
    again = json.loads((tmp_path / "out" / "augmentation.json").read_text())["runs"]
    assert again["0"][kept]["fid"] == -1.0 and list(again["0"]) == rows
    name = "cascade, bicubic x2 (no SR stage)"
    assert again["0"][name] == report["runs"]["0"][name]  # the same base samples, the same numbers
    other = run_in_process(*args[:8], "--levels", "0.05", "--batch-size", "4", "--out", tmp_path / "out",
                           "--rows", "bicubic", check=False)
    assert other.returncode == 2 and other.stderr.strip().splitlines()[-1].endswith(
        "augmentation.json: made with --levels 0.1, not --levels 0.05; rerun rows with the same options, "
        "or the whole study without --rows")
    assert "CAS" not in other.stderr  # refused before any work
