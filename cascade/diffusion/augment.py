"""Conditioning augmentation for SR3 stages (CDM, Ho et al. 2021, section 3).

Training draws a level per example, sampling fixes it; the model is told the noise level through
its `aug_level` embedding (blur is not announced: it is off at sampling time).

- `noise_augment(lowres, level, alphas_cumprod)`: corrupt the low-res image by the stage's forward
  process at a continuous level s in [0, 1]:  z_s = sqrt(abar(s)) x + sqrt(1 - abar(s)) eps,
  where abar(s) interpolates [1, abar_0, ..., abar_{T-1}] at s*T, so s = 0 is exactly the identity
  and s = 1 is the last training timestep (CDM's "Gaussian conditioning augmentation").
- `blur_augment(lowres, sigma)`: Gaussian blur with a per-example sigma (CDM's "Gaussian blur
  augmentation"); `random_blur` applies it with probability p and sigma ~ U[sigma_min, sigma_max].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import rng
from .schedule import alpha_bar


def alpha_bar_at(level: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """abar(s) for levels s [N] in [0, 1]: the schedule at the continuous timestep s*T - 1
    (cascade.diffusion.schedule.alpha_bar), so s = 0 is the clean image and s = 1 the last timestep."""
    t = level.double().cpu().clamp(0, 1) * len(alphas_cumprod) - 1
    return alpha_bar(t, alphas_cumprod).to(level.device)


def noise_augment(lowres: torch.Tensor, level, alphas_cumprod: torch.Tensor,
                  generator: rng.Generators = None) -> torch.Tensor:
    """z_s = sqrt(abar(s)) x + sqrt(1 - abar(s)) eps for lowres [N x C x h x w] and level s (scalar or [N])."""
    n = lowres.shape[0]
    level = torch.as_tensor(level, dtype=torch.float64, device=lowres.device)
    level = level.expand(n) if level.ndim == 0 else level
    if bool((level == 0).all()):
        return lowres
    abar = alpha_bar_at(level, alphas_cumprod).view(n, 1, 1, 1)
    noise = rng.randn(lowres.shape, generator).to(lowres.device, torch.float64)
    return (abar.sqrt() * lowres.double() + (1 - abar).sqrt() * noise).to(lowres.dtype)


def gaussian_kernel1d(sigma: float, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def blur_augment(lowres: torch.Tensor, sigma) -> torch.Tensor:
    """Separable Gaussian blur of [N x C x h x w] with per-example sigma (scalar or [N]); sigma 0 = identity.

    The kernel extends to radius ceil(3 sigma); borders are mirrored (d c b | a b c d), as
    scipy.ndimage.gaussian_filter(mode="mirror") does.
    """
    n = lowres.shape[0]
    sigma = torch.as_tensor(sigma, dtype=torch.float64).cpu()
    sigma = sigma.expand(n) if sigma.ndim == 0 else sigma
    out = lowres.clone()
    for i in range(n):
        s = float(sigma[i])
        if s <= 0:
            continue
        radius = min(max(1, math.ceil(3 * s)), min(lowres.shape[-2:]) - 1)
        k = gaussian_kernel1d(s, radius).to(lowres.device, lowres.dtype)
        x = lowres[i:i + 1]
        c = x.shape[1]
        x = F.pad(x, (radius, radius, 0, 0), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        x = F.pad(x, (0, 0, radius, radius), mode="reflect")
        out[i:i + 1] = F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out


def random_blur(lowres: torch.Tensor, p: float, sigma_range: tuple[float, float],
                generator: rng.Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Blur each example with probability p, sigma ~ U[sigma_range]; returns (images, sigmas with 0 = unblurred)."""
    n = lowres.shape[0]
    apply = rng.rand(n, generator) < p
    sigma = sigma_range[0] + (sigma_range[1] - sigma_range[0]) * rng.rand(n, generator)
    sigma = torch.where(apply, sigma, torch.zeros_like(sigma))
    return blur_augment(lowres, sigma), sigma


def training_lowres(hr: torch.Tensor, scale: int, noise_aug_max: float, blur_prob: float,
                    blur_sigma: tuple[float, float], alphas_cumprod: torch.Tensor,
                    generator: rng.Generators = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The low-res conditioning of an SR3 training batch hr [N x C x H x W] in [-1, 1].

    Downsample by `scale` (cascade.diffusion.resize), blur with probability `blur_prob`, then corrupt at a
    level s ~ U[0, noise_aug_max] per example. Returns (lowres [N x C x H/scale x W/scale], s [N]).
    """
    from .resize import downsample

    lowres = downsample(hr, scale)
    if blur_prob > 0:
        lowres, _ = random_blur(lowres, blur_prob, blur_sigma, generator)
    level = rng.rand(hr.shape[0], generator) * noise_aug_max
    return noise_augment(lowres, level.to(hr.device), alphas_cumprod, generator), level.to(hr.device)
