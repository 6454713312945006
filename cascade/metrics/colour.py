"""Colour statistics of uint8 images: what a washed-out or darkened output changes first.

`colour_stats` gives each channel's mean and standard deviation and the 2nd / 98th percentiles of
luma (ITU-R BT.601: Y = 0.299 R + 0.587 G + 0.114 B, on 0..255), over every pixel of every image.
`colour_shift` compares two sets of statistics: the largest absolute difference of each kind. An
output read in the wrong range moves all of them (a [0, 1] image saved as [-1, 1] maps each pixel q
to (255 + q) / 2: the 2nd luma percentile jumps above 127).
"""

from __future__ import annotations

import torch

LUMA = (0.299, 0.587, 0.114)


def colour_stats(images: torch.Tensor) -> dict[str, list[float] | float]:
    """uint8 [N x 3 x H x W] or [3 x H x W] -> {"mean": [R, G, B], "std": [R, G, B], "luma_mean",
    "luma_p2", "luma_p98"} on 0..255 (float64)."""
    if images.dtype != torch.uint8:
        raise ValueError(f"colour_stats takes uint8 images, got {images.dtype}")
    x = images[None] if images.ndim == 3 else images
    pixels = x.double().permute(1, 0, 2, 3).reshape(3, -1)  # [3 x all pixels]
    luma = (torch.tensor(LUMA, dtype=torch.float64)[:, None] * pixels).sum(0)
    p2, p98 = torch.quantile(luma, torch.tensor([0.02, 0.98], dtype=torch.float64)).tolist()
    return {"mean": pixels.mean(1).tolist(), "std": pixels.std(1, correction=0).tolist(),
            "luma_mean": float(luma.mean()), "luma_p2": p2, "luma_p98": p98}


def colour_shift(stats: dict, reference: dict) -> dict[str, float]:
    """The largest absolute difference of `stats` from `reference` (both from `colour_stats`): over the
    channels' means, over their stds (also as a ratio, std / reference std, farthest from 1), and
    of the two luma percentiles."""
    mean = max(abs(a - b) for a, b in zip(stats["mean"], reference["mean"]))
    std = max(abs(a - b) for a, b in zip(stats["std"], reference["std"]))
    ratio = max((abs(a / b - 1) if b > 0 else float(a > 0)) for a, b in zip(stats["std"], reference["std"]))
    return {"mean": mean, "std": std, "std_ratio": ratio, "luma_p2": abs(stats["luma_p2"] - reference["luma_p2"]),
            "luma_p98": abs(stats["luma_p98"] - reference["luma_p98"])}
