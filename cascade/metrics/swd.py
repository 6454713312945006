"""Sliced Wasserstein distance between Laplacian-pyramid patches of two image sets (Karras et al. 2018, ProGAN,
appendix D): a distribution distance at every scale that, unlike PSNR, does not reward blur.

For each level of a Laplacian pyramid (`laplacian_pyramid`: binomial 5-tap Gaussian, down by 2; each level
is the image minus its blurred-and-upsampled coarser copy, the last level the coarsest image), `patches`
7x7 neighbourhoods are drawn at random positions of every image; each set's descriptors are normalised per
colour channel (zero mean, unit std over the set: only the structure is compared, as in ProGAN); then
`sliced_wasserstein` averages, over random unit directions, the 1-D Wasserstein-1 distance between the two
sets' projections (sorted and compared element by element: both sets have the same size). ProGAN reports
it x 1e3, per level and averaged; so does `swd`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PATCH = 7  # ProGAN's 7x7 neighbourhoods
KERNEL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=torch.float64) / 16  # cv2.pyrDown's, as ProGAN uses


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = KERNEL.to(x)
    c = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)
    return F.conv2d(x, k.view(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)


def pyramid_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[..., ::2, ::2]


def pyramid_up(x: torch.Tensor, size) -> torch.Tensor:
    up = torch.zeros(*x.shape[:2], size[0], size[1], dtype=x.dtype, device=x.device)
    up[..., ::2, ::2] = x * 4  # zeros in between, then the same blur (x4 keeps the mean)
    return _blur(up)


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """[N x C x H x W] -> `levels` bands, finest first; their sum back up the pyramid is `x` exactly."""
    bands, current = [], x.double()
    for _ in range(levels - 1):
        low = pyramid_down(current)
        bands.append(current - pyramid_up(low, current.shape[-2:]))
        current = low
    return bands + [current]


def reconstruct(bands: list[torch.Tensor]) -> torch.Tensor:
    x = bands[-1]
    for band in reversed(bands[:-1]):
        x = band + pyramid_up(x, band.shape[-2:])
    return x


def descriptors(band: torch.Tensor, patches: int, generator: torch.Generator, size: int = 7) -> torch.Tensor:
    """`patches` random size x size neighbourhoods of each image of `band`: [N * patches x C * size^2]."""
    n, c, h, w = band.shape
    ys = torch.randint(0, h - size + 1, (n, patches), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, patches), generator=generator)
    offsets = torch.arange(size)
    rows = (ys[..., None] + offsets).view(n, patches, size, 1).expand(-1, -1, -1, size)
    cols = (xs[..., None] + offsets).view(n, patches, 1, size).expand(-1, -1, size, -1)
    image = torch.arange(n).view(n, 1, 1, 1).expand_as(rows)
    out = band.permute(0, 2, 3, 1)[image, rows, cols]  # [N x P x size x size x C]
    return out.permute(0, 1, 4, 2, 3).reshape(n * patches, c * size * size)


def normalise(desc: torch.Tensor, channels: int) -> torch.Tensor:
    """Zero mean and unit std per colour channel over the whole set of descriptors."""
    d = desc.view(desc.shape[0], channels, -1)
    mean = d.mean(dim=(0, 2), keepdim=True)
    std = d.std(dim=(0, 2), keepdim=True).clamp(min=1e-12)
    return ((d - mean) / std).view_as(desc)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 512, repeats: int = 4,
                       generator: torch.Generator | None = None) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between the projections of the rows
    of `a` and `b` (the same number of rows)."""
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs sets of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator, dtype=torch.float64)
        dirs /= dirs.norm(dim=0, keepdim=True)
        pa, pb = ((x.double() @ dirs).T.contiguous() for x in (a, b))  # [directions x rows]: sorted along rows,
        total += (pa.sort(dim=1).values - pb.sort(dim=1).values).abs().mean().item()  # 5x faster than columns
    return total / repeats


def swd(images: torch.Tensor, reference: torch.Tensor, levels: int = 3, patches: int = 128, seed: int = 0
        ) -> dict[str, float]:
    """ProGAN's SWD x 1e3 between uint8 image sets [N x 3 x H x W] (the same N): one value per pyramid level
    (finest first, named by its side in px) and their mean ("swd"). Small images get the levels that keep the
    coarsest side at least 7 px (a 16 px set: 16 and 8)."""
    if images.shape != reference.shape:
        raise ValueError(f"swd compares sets of one shape, got {tuple(images.shape)} and {tuple(reference.shape)}")
    side = min(images.shape[-2:])
    if side < PATCH:
        raise ValueError(f"swd needs images of at least {PATCH} px a side, got {tuple(images.shape[-2:])}")
    levels = min(levels, int(math.log2(side / PATCH)) + 1)  # as many as keep the coarsest side >= the patch
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for band_a, band_b in zip(laplacian_pyramid(images.double() / 255, levels),
                              laplacian_pyramid(reference.double() / 255, levels)):
        a = normalise(descriptors(band_a, patches, generator), band_a.shape[1])
        b = normalise(descriptors(band_b, patches, generator), band_b.shape[1])
        out[f"swd_{band_a.shape[-1]}"] = 1e3 * sliced_wasserstein(a, b, generator=generator)
    out["swd"] = sum(out.values()) / len(out)
    return out
