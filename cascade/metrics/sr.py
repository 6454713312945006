"""Super-resolution metrics on images in [0, 1], shaped [N x C x H x W]; each returns one value per image.

- `consistency`: SR3's consistency (Saharia et al. 2021, section 4.2), the MSE between the
  downsampled output and the low-res input, with the downsampler that made the input (cascade.resize).
- `psnr`: 10 log10(1 / MSE) on float images (a quick number for training previews).
- `quality`: the numbers SR papers report: PSNR and SSIM on uint8 images with a border of `scale`
  pixels cropped, on RGB and on the luma channel Y of ITU-R BT.601 (what MATLAB's `rgb2ycbcr`
  and scikit-image's `rgb2ycbcr` give: Y in [16, 235], not rounded). SSIM is Wang et al. 2004 with
  an 11x11 Gaussian window of sigma 1.5, population covariances, C1 = (0.01 L)^2, C2 = (0.03 L)^2,
  and the mean taken over the map without the 5-pixel band the window cannot fill: scikit-image's
  `structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`.
  The maths is torchmetrics'; its own mean includes the padded band and differs by ~0.015, hence
  the crop here (tests/test_metrics.py compares with scikit-image).
- `high_frequency_energy`: mean squared response to a 3x3 Laplacian; sharper images have more. An SR
  output that is sharper than bicubic has energy closer to the ground truth's.
- `colour_shift`: per-channel difference of means between output and input (in [0, 1] units).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ..resize import downsample

BT601_Y = (65.481, 128.553, 24.966)  # R, G, B weights for values in [0, 1]; Y = 16 + ... on the 0..255 scale
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
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


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """[N x 3 x H x W] on the 0..255 scale -> luma [N x 1 x H x W] in [16, 235] (float64)."""
    w = torch.tensor(BT601_Y, dtype=torch.float64, device=x.device).view(1, 3, 1, 1)
    return 16.0 + (x.double() / 255.0 * w).sum(dim=1, keepdim=True)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """SSIM per image of float [N x C x H x W] images (see the module docstring)."""
    pad = (SSIM_WINDOW - 1) // 2
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} px after the border crop, got {tuple(a.shape[-2:])}")
    _, full = structural_similarity_index_measure(a.double(), b.double(), gaussian_kernel=True, sigma=SSIM_SIGMA,
                                                  kernel_size=SSIM_WINDOW, data_range=data_range,
                                                  return_full_image=True, reduction="none")
    return full[..., pad:-pad, pad:-pad].mean(dim=(1, 2, 3))


def quality(sr: torch.Tensor, hr: torch.Tensor, border: int) -> dict[str, torch.Tensor]:
    """PSNR (dB) and SSIM per image, on RGB and on Y, of uint8 [N x 3 x H x W] images after cropping
    `border` pixels from every side (SR papers crop the scale factor)."""
    if sr.dtype != torch.uint8 or hr.dtype != torch.uint8:
        raise TypeError("quality() compares uint8 images: quantise first, as a saved PNG would be")
    if sr.shape != hr.shape:
        raise ValueError(f"output {tuple(sr.shape)} and reference {tuple(hr.shape)} differ in shape")
    if border:
        sr, hr = sr[..., border:-border, border:-border], hr[..., border:-border, border:-border]
    sr, hr = sr.double(), hr.double()
    sr_y, hr_y = rgb_to_y(sr), rgb_to_y(hr)
    return {
        "psnr_rgb": peak_signal_noise_ratio(sr, hr, data_range=255.0, dim=(1, 2, 3), reduction="none"),
        "ssim_rgb": ssim(sr, hr),
        "psnr_y": peak_signal_noise_ratio(sr_y, hr_y, data_range=255.0, dim=(1, 2, 3), reduction="none"),
        "ssim_y": ssim(sr_y, hr_y),
    }
