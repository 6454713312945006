"""The resizers of the cascade, documented once and used everywhere (training, sampling, metrics).

- `downsample(hr, factor)`: bicubic (a = -0.5) with antialiasing, i.e. the bicubic kernel stretched
  by `factor` as PIL and MATLAB's `imresize` do; this is how low-res inputs are made from high-res
  crops and how SR3's consistency is measured (downsample the output, compare with the input).
- `upsample(lr, size)`: bicubic interpolation to `size` (SR3 conditions on the low-res image
  upsampled this way), not clamped, so it stays an exact linear map.
- `project_onto_lowres(image, lowres, factor)`: the nearest image whose `downsample` is `lowres`
  (exact consistency with the user's input; used at every sampling step when a stage asks for it).

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


def downsample_adjoint(lr: torch.Tensor, factor: int) -> torch.Tensor:
    """The transpose of `downsample` (a linear map) applied to lr [N x C x h x w]: [N x C x h*factor x w*factor]."""
    n, c, h, w = lr.shape
    with torch.enable_grad():
        probe = torch.zeros(n, c, h * factor, w * factor, dtype=lr.dtype, device=lr.device, requires_grad=True)
        (adjoint,) = torch.autograd.grad(downsample(probe, factor), probe, lr)
    return adjoint


def project_onto_lowres(image: torch.Tensor, lowres: torch.Tensor, factor: int, iters: int = 100,
                        tol: float = 1e-10) -> torch.Tensor:
    """The image nearest to `image` whose `downsample` is exactly `lowres` (range-space projection).

    x' = x + A^T (A A^T)^-1 (y - A x) with A = downsample(., factor): the correction lives in the
    range of A^T, so the part of x that A cannot see (the detail the model drew) is untouched
    (DDNM, Wang et al. 2023, eq. 6, with the antialiased bicubic A instead of average pooling).
    (A A^T) z = y - A x is solved by conjugate gradients per image and channel, in float64, until
    the residual is below `tol` times its initial norm. Returns the dtype of `image`.
    """
    x, y = image.double(), lowres.double()
    residual = y - downsample(x, factor)
    z = torch.zeros_like(residual)
    r, p = residual.clone(), residual.clone()
    rr = (r * r).sum(dim=(2, 3), keepdim=True)
    stop = tol ** 2 * rr.clamp(min=1e-300)
    for _ in range(iters):
        if bool((rr <= stop).all()):
            break
        ap = downsample(downsample_adjoint(p, factor), factor)
        alpha = rr / (p * ap).sum(dim=(2, 3), keepdim=True).clamp(min=1e-300)
        z, r = z + alpha * p, r - alpha * ap
        rr_new = (r * r).sum(dim=(2, 3), keepdim=True)
        p = r + (rr_new / rr.clamp(min=1e-300)) * p
        rr = rr_new
    return (x + downsample_adjoint(z, factor)).to(image.dtype)
