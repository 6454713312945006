"""Metrics of one-shot generation (SinGAN's protocol, plus two checks of our own), on uint8 images.

- `sifid`: SinGAN's single-image FID (Shaham et al. 2019, section 4): the Fréchet distance between
  the Inception activations at every spatial position of the generated image and of the training
  image, taken before the network's second pooling layer (64 channels, after its first max pool),
  with the images at their own size (no resize to 299), as SinGAN's SIFID code does. Same weights
  as eval/fid.py (cascade.metrics.inception), and the same Fréchet distance (cascade.metrics.scores).
- `diversity`: SinGAN's: the standard deviation of each pixel's values over the samples, averaged
  over pixels and channels, divided by the standard deviation of the training image's values.
- `nearest_patch`: for each `patch` x `patch` patch of an image (on a grid of `stride` px), the RMS
  distance (0..255) to its nearest patch anywhere in the training image (every offset). A copy of
  the training image, shifted or not, scores ~0; new content scores well above it.
- `layout`: the Pearson correlation between the row-wise mean colour of an image and of the training
  image (both resized to the same height): ~1 when things stay at their height (sky up, ground down).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .scores import frechet_distance


@torch.no_grad()
def early_features(network, image: torch.Tensor) -> np.ndarray:
    """uint8 [1 x 3 x H x W] -> the activations before the second pooling layer, [positions x 64] float64."""
    model = network.model
    device = next(model.parameters()).device
    x = (image.to(device).float() - 128.0) / 128.0  # the graph's input range (cascade.metrics.inception.preprocess)
    x = model.Conv2d_2b_3x3(model.Conv2d_2a_3x3(model.Conv2d_1a_3x3(x)))
    x = F.max_pool2d(x, 3, stride=2)
    return x[0].flatten(1).T.double().cpu().numpy()


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def sifid(network, image: torch.Tensor, reference: torch.Tensor) -> float:
    """SIFID between uint8 [1 x 3 x H x W] images (they may differ in size)."""
    return frechet_distance(*_stats(early_features(network, image)), *_stats(early_features(network, reference)))


def diversity(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """SinGAN's diversity of uint8 samples [N x 3 x H x W] (N >= 2) of one size, against the training image."""
    if samples.shape[0] < 2:
        raise ValueError("diversity needs at least two samples")
    return float(samples.double().std(dim=0).mean() / reference.double().std())


def nearest_patch(image: torch.Tensor, reference: torch.Tensor, patch: int = 8, stride: int = 4,
                  chunk: int = 1024) -> torch.Tensor:
    """RMS distance (0..255) of each patch of uint8 `image` [1 x 3 x H x W] (grid `stride`) to its
    nearest patch of `reference` [1 x 3 x H' x W'] (all offsets): [patches] float64."""
    queries = F.unfold(image.double(), patch, stride=stride)[0].T  # [Q x 3 p^2]
    keys = F.unfold(reference.double(), patch, stride=1)[0].T  # [K x 3 p^2]
    keys_sq = (keys ** 2).sum(1)
    best = []
    for q in queries.split(chunk):
        d2 = (q ** 2).sum(1, keepdim=True) - 2 * q @ keys.T + keys_sq  # ||q - k||^2
        best.append(d2.min(dim=1).values.clamp(min=0))
    return (torch.cat(best) / queries.shape[1]).sqrt()


def row_profile(image: torch.Tensor, height: int) -> torch.Tensor:
    """The mean colour of each row, at `height` rows: uint8 [1 x 3 x H x W] -> [height x 3] float64."""
    rows = image.double().mean(dim=-1, keepdim=True)  # [1 x 3 x H x 1]
    return F.interpolate(rows, size=(height, 1), mode="area")[0, :, :, 0].T


def layout(image: torch.Tensor, reference: torch.Tensor, height: int = 64) -> float:
    """Pearson correlation of the row-wise mean colours (all rows and channels) of two uint8 images."""
    a, b = row_profile(image, height).flatten(), row_profile(reference, height).flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp(min=1e-12))


def patch_shuffle(image: torch.Tensor, grid: int, generator: torch.Generator) -> torch.Tensor:
    """The baseline that keeps every patch and breaks the layout: `image` cut into grid x grid cells
    (the remainder rows/columns kept in place), shuffled. uint8 [1 x 3 x H x W] -> the same shape."""
    h, w = image.shape[-2] // grid, image.shape[-1] // grid
    out = image.clone()
    cells = [(i, j) for i in range(grid) for j in range(grid)]
    order = torch.randperm(len(cells), generator=generator).tolist()
    for (i, j), k in zip(cells, order):
        si, sj = cells[k]
        out[..., i * h:(i + 1) * h, j * w:(j + 1) * w] = image[..., si * h:(si + 1) * h, sj * w:(sj + 1) * w]
    return out
