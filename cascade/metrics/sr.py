"""Super-resolution metrics on images in [0, 1], shaped [N x C x H x W]; each returns one value per image.

- `consistency`: SR3's consistency (Saharia et al. 2021, section 4.2), the MSE between the
  downsampled output and the low-res input, with the downsampler that made the input (cascade.resize).
- `psnr`: 10 log10(1 / MSE).
- `high_frequency_energy`: mean squared response to a 3x3 Laplacian; sharper images have more. An SR
  output that is sharper than bicubic has energy closer to the ground truth's.
- `colour_shift`: per-channel difference of means between output and input (in [0, 1] units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..resize import downsample

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def consistency(sr: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
    """MSE(downsample(sr), lr) per image; the scale factor is read from the shapes."""
    factor = sr.shape[-1] // lr.shape[-1]
    if sr.shape[-2] != lr.shape[-2] * factor or sr.shape[-1] != lr.shape[-1] * factor:
        raise ValueError(f"output {tuple(sr.shape[-2:])} is not an integer multiple of input {tuple(lr.shape[-2:])}")
    return (downsample(sr.double(), factor) - lr.double()).pow(2).mean(dim=(1, 2, 3))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3))
    return 10 * torch.log10(1.0 / mse)


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    kernel = LAPLACIAN.to(x.device, torch.float64).expand(c, 1, 3, 3)
    return F.conv2d(x.double(), kernel, groups=c).pow(2).mean(dim=(1, 2, 3))


def colour_shift(output: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[N x C]: mean of each channel of `output` minus that of `reference` (any sizes)."""
    return output.double().mean(dim=(2, 3)) - reference.double().mean(dim=(2, 3))
