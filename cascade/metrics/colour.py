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
    "luma_p2", "luma_p98"} on 0..255 (float64), for any number of pixels (a 16K render too).

    Computed from exact histograms, a band of rows at a time: each channel's 256 levels, and luma x 1000
    (299 R + 587 G + 114 B, an integer in 0..255000), so the percentiles are the order statistics
    interpolated linearly, as numpy's and torch's `quantile` give them, without a float copy of the image."""
    if images.dtype != torch.uint8:
        raise ValueError(f"colour_stats takes uint8 images, got {images.dtype}")
    x = images[None] if images.ndim == 3 else images
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"colour_stats takes RGB images [N x 3 x H x W] or [3 x H x W], got {list(images.shape)}")
    levels = torch.zeros(3, 256, dtype=torch.int64)
    luma = torch.zeros(255001, dtype=torch.int64)
    weights = torch.tensor([round(w * 1000) for w in LUMA])[:, None]
    for image in x:
        for band in image.split(max(1, 2 ** 22 // max(1, image.shape[-1])), dim=1):  # ~4 M pixels at a time
            pixels = band.reshape(3, -1).long()
            for c in range(3):
                levels[c] += torch.bincount(pixels[c], minlength=256)
            luma += torch.bincount((weights * pixels).sum(0), minlength=255001)
    n = int(levels[0].sum())
    if n == 0:
        raise ValueError("colour_stats of an empty image")
    values = torch.arange(256, dtype=torch.float64)
    mean = (levels * values).sum(1) / n
    std = ((levels * (values - mean[:, None]) ** 2).sum(1) / n).sqrt()
    luma_values = torch.arange(255001, dtype=torch.float64) / 1000
    return {"mean": mean.tolist(), "std": std.tolist(), "luma_mean": float((luma * luma_values).sum() / n),
            "luma_p2": _percentile(luma, luma_values, 0.02), "luma_p98": _percentile(luma, luma_values, 0.98)}


def _percentile(counts: torch.Tensor, values: torch.Tensor, q: float) -> float:
    """The q-quantile of the multiset given by `counts` of `values`: order statistics k and k + 1 around
    q (n - 1), interpolated linearly."""
    cumulative = counts.cumsum(0)
    position = q * (int(cumulative[-1]) - 1)
    low = int(position)
    at = torch.searchsorted(cumulative, torch.tensor([low, min(low + 1, int(cumulative[-1]) - 1)]), right=True)
    a, b = values[at].tolist()
    return a + (b - a) * (position - low)


def colour_shift(stats: dict, reference: dict) -> dict[str, float]:
    """The largest absolute difference of `stats` from `reference` (both from `colour_stats`): over the
    channels' means, over their stds (also as a ratio, std / reference std, farthest from 1), and
    of the two luma percentiles."""
    mean = max(abs(a - b) for a, b in zip(stats["mean"], reference["mean"]))
    std = max(abs(a - b) for a, b in zip(stats["std"], reference["std"]))
    ratio = max((abs(a / b - 1) if b > 0 else float(a > 0)) for a, b in zip(stats["std"], reference["std"]))
    return {"mean": mean, "std": std, "std_ratio": ratio, "luma_p2": abs(stats["luma_p2"] - reference["luma_p2"]),
            "luma_p98": abs(stats["luma_p98"] - reference["luma_p98"])}
