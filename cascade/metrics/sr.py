"""Super-resolution metrics on images in [0, 1], shaped [N x C x H x W]; each returns one value per image.

- `consistency`: SR3's consistency (Saharia et al. 2021, section 4.2), the MSE between the
  downsampled output and the low-res input, with the downsampler that made the input (cascade.diffusion.resize).
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
- `texture_regions`: where the ground truth is smooth (local standard deviation of its luma below
  SMOOTH_STD grey levels in a 7x7 window: out-of-focus backgrounds, skies, plastic) and where it is
  textured (at least TEXTURED_STD); `per_image` reports the HF energy of the output and the truth
  within each, so a stage that paints texture onto smooth regions shows a smooth-region ratio >> 1.
- `colour_shift`: per-channel difference of means between output and input (in [0, 1] units).
- `seam_ratio`: for tiled outputs, the mean squared difference between neighbouring pixels across
  the tile edges divided by that everywhere else; ~1.0 means the tiling is invisible, a visible
  seam is a jump across the edge and gives a ratio well above 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ..diffusion.resize import downsample
from ..io.images import uint8_to_unit

SMOOTH_STD, TEXTURED_STD, REGION_WINDOW = 3.0, 8.0, 7  # grey levels (0..255 luma), window side
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
    return laplacian_energy_map(x).mean(dim=(1, 2))


def laplacian_energy_map(x: torch.Tensor) -> torch.Tensor:
    """[N x (H-2) x (W-2)]: the squared 3x3 Laplacian response, averaged over channels."""
    c = x.shape[1]
    kernel = LAPLACIAN.to(x.device, torch.float64).expand(c, 1, 3, 3)
    return F.conv2d(x.double(), kernel, groups=c).pow(2).mean(dim=1)


def texture_regions(hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(smooth, textured) bool masks [N x (H-2) x (W-2)] (the Laplacian's valid area) of uint8 truths
    [N x 3 x H x W], from the local standard deviation of their luma (see the module docstring)."""
    y = rgb_to_y(hr)
    pool = lambda v: F.avg_pool2d(v, REGION_WINDOW, 1, REGION_WINDOW // 2, count_include_pad=False)  # noqa: E731
    mean = pool(y)
    std = (pool(y * y) - mean * mean).clamp(min=0).sqrt()[:, 0, 1:-1, 1:-1]
    return std < SMOOTH_STD, std >= TEXTURED_STD


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


def seam_ratio(x: torch.Tensor, rows: list[int], cols: list[int], period: int = 1) -> torch.Tensor:
    """[N] gradient energy across the horizontal lines at `rows` and vertical lines at `cols` (a value p
    means "between pixel p-1 and p"; 0 and the image size are ignored) over that across the other lines
    at positions that are multiples of `period`. Edges of tiles placed on an 8-pixel grid should be
    compared with other lines of the grid: upsampling by k makes the gradient energy k-periodic."""
    x = x.double()
    h, w = x.shape[-2:]
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=(1, 3))  # [N x H-1], entry p-1: between rows p-1, p
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean(dim=(1, 2))  # [N x W-1]
    if any(p % period for p in [*rows, *cols]):
        raise ValueError(f"tile edges {rows}, {cols} are not all multiples of the period {period}")

    def lines(edges, length):
        on = torch.zeros(length - 1, dtype=torch.bool)
        on[[p - 1 for p in set(edges) if 0 < p < length]] = True
        grid = torch.zeros(length - 1, dtype=torch.bool)
        grid[period - 1::period] = True
        return on, grid & ~on

    (on_y, off_y), (on_x, off_x) = lines(rows, h), lines(cols, w)
    if not (on_y.any() or on_x.any()):
        raise ValueError("no tile edge inside the image: one tile covers it")

    def energy(sel_y, sel_x):  # mean over every pixel pair across the selected lines
        return (dy[:, sel_y].sum(1) * w + dx[:, sel_x].sum(1) * h) / (sel_y.sum() * w + sel_x.sum() * h)

    return energy(on_y, on_x) / energy(off_y, off_x)


def per_image(out: torch.Tensor, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
    """Every number above for uint8 output / low-res input / truth [N x 3 x H x W] (eval/sr.py's columns)."""
    row = quality(out, hr, border=scale)
    row["consistency"] = consistency(uint8_to_unit(out), uint8_to_unit(lr))
    row["hf_energy"] = high_frequency_energy(uint8_to_unit(out))
    row["hf_energy_truth"] = high_frequency_energy(uint8_to_unit(hr))
    row["colour_shift"] = colour_shift(out.double(), lr.double()).abs().amax(dim=1)  # on the 0..255 scale
    energy, energy_truth = laplacian_energy_map(uint8_to_unit(out)), laplacian_energy_map(uint8_to_unit(hr))
    for name, mask in zip(("smooth", "textured"), texture_regions(hr)):
        row[f"hf_{name}"] = (energy * mask).sum(dim=(1, 2))  # totals over the region's pixels
        row[f"hf_{name}_truth"] = (energy_truth * mask).sum(dim=(1, 2))
        row[f"{name}_share"] = mask.double().mean(dim=(1, 2))
    return row


def summarise(rows: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Per-image values collected over batches -> means (HF energy: ratio of totals to the truth's)."""
    cat = {k: torch.cat(v) for k, v in rows.items()}
    summary = {k: cat[k].mean().item() for k in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "consistency",
                                                  "colour_shift", "seam_ratio", "psnr_vs_whole") if k in cat}
    summary["hf_energy_vs_truth"] = (cat["hf_energy"].sum() / cat["hf_energy_truth"].sum()).item()
    for name in ("smooth", "textured"):
        if f"hf_{name}" in cat:
            truth = cat[f"hf_{name}_truth"].sum()
            summary[f"hf_{name}_vs_truth"] = (cat[f"hf_{name}"].sum() / truth).item() if truth > 0 else float("nan")
            summary[f"{name}_share"] = cat[f"{name}_share"].mean().item()
    return summary
