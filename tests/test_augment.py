import numpy as np
import pytest
import scipy.ndimage
import torch
from PIL import Image

from cascade.config.sections import DiffusionConfig
from cascade.diffusion import augment
from cascade.diffusion.resize import downsample, upsample
from cascade.diffusion.schedule import make_noise_scheduler

ABAR = make_noise_scheduler(DiffusionConfig(schedule="cosine")).alphas_cumprod


def test_level_zero_is_the_identity():
    x = torch.rand(3, 3, 8, 8) * 2 - 1
    assert augment.noise_augment(x, 0.0, ABAR) is x
    torch.testing.assert_close(augment.noise_augment(x, torch.zeros(3), ABAR), x, rtol=0, atol=0)
    torch.testing.assert_close(augment.blur_augment(x, 0.0), x, rtol=0, atol=0)


@pytest.mark.parametrize("level, index", [(0.1, 100), (0.25, 250), (0.5, 500), (1.0, 1000)])
def test_noise_has_the_forward_process_moments(level, index):
    # At s = k/T the level's alpha-bar is the forward process's abar_{k-1} (timestep k-1 of T).
    abar = ABAR[index - 1].double().item()
    x = torch.full((4000, 3, 4, 4), 0.6)
    z = augment.noise_augment(x, level, ABAR, generator=torch.Generator().manual_seed(0)).double()
    n = z.numel()
    assert abs(z.mean().item() - abar ** 0.5 * 0.6) < 5 * ((1 - abar) / n) ** 0.5
    assert abs(z.var().item() / (1 - abar) - 1) < 5 * (2 / n) ** 0.5


def test_levels_are_per_example_and_monotonic():
    levels = torch.linspace(0, 1, 11)
    abar = augment.alpha_bar_at(levels, ABAR)
    assert abar[0] == 1 and torch.all(abar[1:] < abar[:-1])
    x = torch.zeros(11, 1, 64, 64)
    z = augment.noise_augment(x, levels, ABAR, generator=torch.Generator().manual_seed(0))
    stds = z.flatten(1).std(dim=1)
    assert stds[0] == 0 and torch.all(stds[2:] > stds[1]) and abs(stds[-1].item() - 1) < 0.05


@pytest.mark.parametrize("sigma", [0.4, 0.6, 1.3])
def test_blur_matches_scipy(sigma):
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 16, 13)).astype(np.float64)
    ours = augment.blur_augment(torch.from_numpy(x), sigma).numpy()
    radius = int(np.ceil(3 * sigma))
    for i in range(2):
        for c in range(3):
            ref = scipy.ndimage.gaussian_filter(x[i, c], sigma, mode="mirror", truncate=radius / sigma)
            np.testing.assert_allclose(ours[i, c], ref, atol=1e-12)


def test_random_blur_probability_and_range():
    x = torch.rand(400, 3, 8, 8)
    out, sigma = augment.random_blur(x, 0.5, (0.4, 0.6), torch.Generator().manual_seed(0))
    blurred = sigma > 0
    assert 0.4 < blurred.float().mean() < 0.6
    assert sigma[blurred].min() >= 0.4 and sigma[blurred].max() <= 0.6
    torch.testing.assert_close(out[~blurred], x[~blurred], rtol=0, atol=0)
    assert (out[blurred] - x[blurred]).abs().amax(dim=(1, 2, 3)).min() > 0


def test_training_lowres_with_and_without_augmentation():
    hr = torch.rand(16, 3, 16, 16) * 2 - 1
    clean, level = augment.training_lowres(hr, 2, 0.0, 0.0, (0.4, 0.6), ABAR, torch.Generator().manual_seed(0))
    torch.testing.assert_close(clean, downsample(hr, 2), rtol=0, atol=0)
    assert (level == 0).all()
    noisy, level = augment.training_lowres(hr, 2, 0.3, 0.5, (0.4, 0.6), ABAR, torch.Generator().manual_seed(0))
    assert noisy.shape == (16, 3, 8, 8)
    assert level.min() >= 0 and level.max() <= 0.3 and level.std() > 0
    assert (noisy - clean).abs().amax(dim=(1, 2, 3)).min() > 0  # every example's conditioning changed


def test_downsample_matches_pil_bicubic():
    rng = np.random.default_rng(0)
    x = rng.random((24, 36)).astype(np.float32)
    ref = np.asarray(Image.fromarray(x, mode="F").resize((12, 8), Image.BICUBIC))
    ours = downsample(torch.from_numpy(x)[None, None], 3)[0, 0].numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_resize_errors_and_shapes():
    with pytest.raises(ValueError, match="cannot downsample 10x12 by 4"):
        downsample(torch.zeros(1, 3, 10, 12), 4)
    assert upsample(torch.zeros(2, 3, 5, 7), (20, 28)).shape == (2, 3, 20, 28)
    const = torch.full((1, 3, 16, 16), 0.3)
    torch.testing.assert_close(downsample(const, 4), torch.full((1, 3, 4, 4), 0.3))
