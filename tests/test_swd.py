"""ProGAN's sliced Wasserstein distance (cascade.metrics.swd) against independent references: the pyramid's blur
against scipy's filter, the pyramid against its own reconstruction, the 1-D distance against scipy's."""

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from cascade.metrics import swd as metrics


def test_the_pyramid_blur_is_the_binomial_filter_with_mirrored_borders():
    x = torch.rand(1, 3, 20, 24, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    kernel = np.array([1, 4, 6, 4, 1]) / 16
    reference = ndimage.correlate1d(ndimage.correlate1d(x.numpy(), kernel, axis=2, mode="mirror"), kernel, axis=3,
                                    mode="mirror")
    assert np.allclose(metrics._blur(x).numpy(), reference, atol=1e-12)


def test_a_laplacian_pyramid_adds_back_up_to_the_image():
    x = torch.rand(2, 3, 32, 48, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    bands = metrics.laplacian_pyramid(x, 3)
    assert [b.shape[-1] for b in bands] == [48, 24, 12]
    assert torch.allclose(metrics.reconstruct(bands), x, atol=1e-12)
    flat = torch.full_like(x, 0.3)  # a constant image has no detail: every band but the last is zero
    assert all(b.abs().max() < 1e-12 for b in metrics.laplacian_pyramid(flat, 3)[:-1])


def test_sliced_wasserstein_is_the_1d_distance_along_each_direction():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(300, 5, generator=g, dtype=torch.float64), torch.randn(300, 5, generator=g, dtype=torch.float64) + 0.5
    dirs = torch.randn(5, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    dirs /= dirs.norm(dim=0, keepdim=True)
    expected = np.mean([stats.wasserstein_distance((a @ dirs[:, k]).numpy(), (b @ dirs[:, k]).numpy())
                        for k in range(3)])
    got = metrics.sliced_wasserstein(a, b, directions=3, repeats=1, generator=torch.Generator().manual_seed(9))
    assert got == pytest.approx(expected, rel=1e-12)


def test_descriptors_are_the_neighbourhoods_of_the_band():
    band = torch.arange(2 * 3 * 10 * 12, dtype=torch.float64).view(2, 3, 10, 12)
    g = torch.Generator().manual_seed(3)
    d = metrics.descriptors(band, 4, g)
    g = torch.Generator().manual_seed(3)
    ys, xs = torch.randint(0, 4, (2, 4), generator=g), torch.randint(0, 6, (2, 4), generator=g)
    assert d.shape == (8, 3 * 49)
    assert torch.equal(d[5], band[1, :, ys[1, 1]:ys[1, 1] + 7, xs[1, 1]:xs[1, 1] + 7].reshape(-1))


def test_swd_ranks_a_blurred_set_far_from_the_sharp_one():
    from skimage import data as sk

    photo = torch.from_numpy(sk.astronaut()).permute(2, 0, 1)
    tiles = photo.unfold(1, 32, 32).unfold(2, 32, 32).permute(1, 2, 0, 3, 4).reshape(-1, 3, 32, 32)  # 256 tiles
    sharp, other = tiles[0::2][:64], tiles[1::2][:64]  # two halves of one photo: one distribution
    blurred = torch.from_numpy(ndimage.uniform_filter(other.numpy().astype(float), size=(1, 1, 3, 3))).round()
    near, far = metrics.swd(other, sharp, patches=64), metrics.swd(blurred.to(torch.uint8), sharp, patches=64)
    assert set(near) == {"swd_32", "swd_16", "swd_8", "swd"}
    assert far["swd_32"] > 1.5 * near["swd_32"] and far["swd"] > near["swd"]


def test_small_images_get_the_levels_that_fit_a_patch():
    g = torch.Generator().manual_seed(0)
    a, b = ((torch.rand(8, 3, 16, 16, generator=g) * 255).to(torch.uint8) for _ in range(2))
    assert set(metrics.swd(a, b)) == {"swd_16", "swd_8", "swd"}
    with pytest.raises(ValueError, match="at least 7 px"):
        metrics.swd(a[..., :6, :6], b[..., :6, :6])
