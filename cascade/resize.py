"""The resizers of the cascade, documented once and used everywhere (training, sampling, metrics).

- `downsample(hr, factor)`: bicubic (a = -0.5) with antialiasing, i.e. the bicubic kernel stretched
  by `factor` as PIL and MATLAB's `imresize` do; this is how low-res inputs are made from high-res
  crops and how SR3's consistency is measured (downsample the output, compare with the input).
- `upsample(lr, size)`: bicubic interpolation to `size` (SR3 conditions on the low-res image
  upsampled this way), not clamped, so it stays an exact linear map.

Both take and return float tensors [N x C x H x W] in any range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def downsample(hr: torch.Tensor, factor: int) -> torch.Tensor:
    """[N x C x H x W] -> [N x C x H/factor x W/factor]; H and W must be divisible by `factor`."""
    h, w = hr.shape[-2:]
    if factor < 1 or h % factor or w % factor:
        raise ValueError(f"cannot downsample {h}x{w} by {factor}: the size must be divisible by the factor")
    if factor == 1:
        return hr
    return F.interpolate(hr, size=(h // factor, w // factor), mode="bicubic", antialias=True, align_corners=False)


def upsample(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N x C x h x w] -> [N x C x size[0] x size[1]] by bicubic interpolation."""
    if tuple(lr.shape[-2:]) == tuple(size):
        return lr
    return F.interpolate(lr, size=tuple(size), mode="bicubic", align_corners=False)
