"""Metrics of one-shot generation (SinGAN's protocol, plus checks of our own), on uint8 images.

- `sifid`: SinGAN's single-image FID (Shaham et al. 2019, section 4): the Fréchet distance between the
  Inception activations at every spatial position of a generated image and of the training image, "at
  the output of the convolutional layer just before the second pooling layer": `Conv2d_4a_3x3`, 192
  channels (`SIFID_LAYER`). Input as SinGAN's code gives it: x / 255, then 2x - 1, at the images' own size
  (no resize to 299). SinGAN's released code (SIFID/sifid_score.py) passes 64 channels, which in its own
  inception.py is `Conv2d_2b_3x3`, before the *first* pooling: `layer="Conv2d_2b_3x3"` computes that
  variant, the one its published numbers (0.09 / 0.05 on Places50) and later papers' come from.
  Weights: torchvision's ImageNet Inception-v3 (what SinGAN loads) when a file of them is present offline
  (`sifid_network`), else the FID Inception weights (TF graph of 2015-12-05) of eval/fid.py, which have the
  same layers but other values: SIFIDs are comparable only between runs that name the same weights.
- `diversity`: SinGAN's: the std of each pixel's intensity (luma) over the samples, averaged over pixels,
  divided by the std of the training image's intensity. `pairwise`: an LPIPS-free alternative, the RMS
  distance between two samples averaged over every pair, over the same std (LPIPS weights are not offline).
- `nearest_patch`: for each `patch` x `patch` patch of an image (on a grid of `stride` px), the RMS
  distance (0..255) to its nearest patch anywhere in the training image (every offset). A copy of
  the training image, shifted or not, scores ~0; new content scores well above it.
- `edge_ratio`: the gradient energy of an edit along its mask's boundary over that of the same boundary in
  the photo: ~1 when the regenerated region joins its surroundings, above 1 where a seam shows.
- `octave_energy`: the mean square of each of the finest octaves of an image's intensity (a Laplacian pyramid,
  `cascade.metrics.swd`): over the training image's, it says at which scale an image has less detail than the
  photo (soft) or more (grain).
- `layout`: the Pearson correlation between the row-wise mean colour of an image and of the training
  image (both resized to the same height): ~1 when things stay at their height (sky up, ground down).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .colour import LUMA
from .scores import frechet_distance
from .swd import laplacian_pyramid

SIFID_LAYER = "Conv2d_4a_3x3"  # "just before the second pooling layer" (the paper); "Conv2d_2b_3x3": SinGAN's code
LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3")
TORCHVISION_FILES = ("inception_v3_google-0cc3c7bd.pth", "inception_v3_google-1a9a5a14.pth")


@torch.no_grad()
def early_features(model, image: torch.Tensor, layer: str = SIFID_LAYER) -> np.ndarray:
    """uint8 [1 x 3 x H x W] -> the activations of Inception's `layer` (Conv2d_2b_3x3 or Conv2d_4a_3x3, after its
    ReLU), one row per spatial position: [positions x channels] float64. `model`: a FeatureNetwork or its
    FIDInceptionV3 (only the first layers run)."""
    model = getattr(model, "model", model)
    if layer not in ("Conv2d_2b_3x3", "Conv2d_4a_3x3"):
        raise ValueError(f"layer {layer!r}: SIFID is taken at Conv2d_2b_3x3 or Conv2d_4a_3x3")
    device = next(model.parameters()).device
    x = image.to(device).float() / 255 * 2 - 1  # SinGAN: imread / 255, then normalize_input's 2x - 1
    x = model.Conv2d_2b_3x3(model.Conv2d_2a_3x3(model.Conv2d_1a_3x3(x)))
    if layer == "Conv2d_4a_3x3":
        x = model.Conv2d_4a_3x3(model.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
    return x[0].flatten(1).T.double().cpu().numpy()


def _stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return features.mean(axis=0), np.cov(features, rowvar=False)


def sifid(network, image: torch.Tensor, reference: torch.Tensor, layer: str = SIFID_LAYER) -> float:
    """SIFID between uint8 [1 x 3 x H x W] images (they may differ in size)."""
    return frechet_distance(*_stats(early_features(network, image, layer)),
                            *_stats(early_features(network, reference, layer)))


def sifid_network(path: str | None = None, device: str | torch.device = "cpu"):
    """(the network SIFID runs, the weights' name): torchvision's ImageNet Inception-v3 weights from `path` or
    torch hub's cache (what SinGAN used), else the FID weights (cascade.metrics.inception.load_feature_network)."""
    import os
    from pathlib import Path

    from .inception import FIDInceptionV3, load_feature_network

    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    found = [Path(path)] if path else [hub / name for name in TORCHVISION_FILES if (hub / name).is_file()]
    if found:
        state = torch.load(found[0], map_location="cpu", weights_only=True)
        wanted = {k: v for k, v in state.items() if k.split(".")[0] in LAYERS}
        if not wanted:
            raise ValueError(f"{found[0]}: no Inception-v3 layers ({', '.join(LAYERS)}) in it")
        model = FIDInceptionV3()
        missing = [k for k in model.state_dict() if k.split(".")[0] in LAYERS and k not in wanted
                   and not k.endswith("num_batches_tracked")]  # older torchvision files lack the counter
        if missing:
            raise ValueError(f"{found[0]}: misses {missing[0]} (a torchvision Inception-v3 state dict was expected)")
        model.load_state_dict(wanted, strict=False)
        return model.eval().to(device), f"torchvision ImageNet Inception-v3 ({found[0].name})"
    network = load_feature_network(None, device)
    return network.model, "FID Inception (TF 2015-12-05; torchvision's ImageNet weights not found offline)"


def intensity(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N x 3 x H x W] -> luma [N x H x W] float64 (BT.601, as cascade.metrics.colour)."""
    return (torch.tensor(LUMA, dtype=torch.float64).view(1, 3, 1, 1) * images.double()).sum(1)


def diversity(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """SinGAN's diversity of uint8 samples [N x 3 x H x W] (N >= 2) of one size, against the training image."""
    if samples.shape[0] < 2:
        raise ValueError("diversity needs at least two samples")
    return float(intensity(samples).std(dim=0, correction=0).mean() / intensity(reference).std(correction=0))


def octave_energy(images: torch.Tensor, octaves: int = 3) -> torch.Tensor:
    """uint8 [N x 3 x H x W] -> [N x octaves]: the mean square of the intensity's Laplacian bands, finest first
    (octave k holds wavelengths of about 2^k to 2^(k+1) px)."""
    bands = laplacian_pyramid(intensity(images)[:, None], octaves + 1)[:octaves]
    return torch.stack([band.pow(2).mean((1, 2, 3)) for band in bands], 1)


def pairwise(samples: torch.Tensor, reference: torch.Tensor) -> float:
    """The RMS distance between two samples (RGB, 0..255), averaged over every pair, over the training image's
    intensity std (an LPIPS-free diversity)."""
    n = samples.shape[0]
    if n < 2:
        raise ValueError("pairwise diversity needs at least two samples")
    x = samples.double().flatten(1)
    d2 = (x ** 2).sum(1, keepdim=True) - 2 * x @ x.T + (x ** 2).sum(1)
    rms = (d2.clamp(min=0) / x.shape[1]).sqrt()
    return float(rms[torch.triu_indices(n, n, 1).unbind()].mean() / intensity(reference).std(correction=0))


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


def row_shuffle(image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The baseline that keeps the layout exactly and varies all else a layout-keeping sampler can: each row of
    uint8 `image` [1 x 3 x H x W] with its pixels in a random order (its row profile, and so `layout`, unchanged;
    every colour the photo's row's). Its `diversity` is about what a sampler that keeps each row's colours can
    reach: the photo's within-row spread, not more."""
    h, w = image.shape[-2:]
    order = torch.argsort(torch.rand(h, w, generator=generator), dim=1)
    return torch.gather(image, 3, order.expand_as(image))


def edge_ratio(image: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor, width: int = 1) -> float:
    """Mean squared intensity gradient of uint8 `image` [1 x 3 x H x W] on the `width`-px band either side of
    the boundary of bool `mask` [H x W], over the same in `reference` (the image before the edit)."""
    m = mask.reshape(1, 1, *mask.shape[-2:]).float()
    k = 2 * width + 1
    grown = F.max_pool2d(m, k, stride=1, padding=width)
    shrunk = -F.max_pool2d(-m, k, stride=1, padding=width)
    band = (grown - shrunk)[0, 0] > 0

    def energy(x):
        y = intensity(x)[0]
        gy, gx = torch.zeros_like(y), torch.zeros_like(y)
        gy[:-1], gx[:, :-1] = y[1:] - y[:-1], y[:, 1:] - y[:, :-1]
        return float((gy ** 2 + gx ** 2)[band].mean())

    return energy(image) / max(energy(reference), 1e-12)
