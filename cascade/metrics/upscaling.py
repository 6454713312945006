"""The SR evaluation protocol, shared by eval/sr.py and eval/bench_sr.py.

A batch of uint8 high-res images is cut to a multiple of the scale (modcrop), downsampled with the
documented downsampler (cascade.diffusion.resize.downsample) and quantised to uint8, as a user's image would
be; each method upscales that input with its own keyword arguments to `Pipeline.upscale`, and its
output is quantised again. `SRScores` collects cascade.metrics.sr's per-image numbers (and, given
the FID network, feature statistics of the outputs and of the truths) over batches and summarises
them per method.
"""

from __future__ import annotations

import time

import torch

from ..diffusion.resize import downsample, upsample
from ..errors import DataError
from ..io.images import uint8_to_unit, unit_to_uint8
from . import sr
from .scores import FeatureStats, fid_from_stats


def low_res(hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N x 3 x H x W] -> (hr cut to multiples of `scale`, its uint8 low-res input)."""
    h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale
    if h == 0 or w == 0:
        raise DataError(f"an image of {tuple(hr.shape[-2:])} px is smaller than the scale x{scale}")
    hr = hr[..., :h, :w]
    return hr, unit_to_uint8(downsample(uint8_to_unit(hr), scale))


def bicubic(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The baseline: bicubic upsampling of the uint8 input (float64, quantised)."""
    return unit_to_uint8(upsample(uint8_to_unit(lr).double(), size))


def upscale_batch(pipe, lr: torch.Tensor, methods: dict[str, dict], seed: int, start_at: int | None = None
                  ) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Every method's uint8 output for the uint8 input `lr`, and its seconds. Image i of the batch
    gets seed `seed + i` (cascade.diffusion.rng.per_image), so a run's numbers do not depend on its batch size."""
    lr_unit = uint8_to_unit(lr, torch.float32)
    outputs, seconds = {}, {}
    for name, kwargs in methods.items():
        start = time.perf_counter()
        out = pipe.upscale(lr_unit, seed=seed, start_at=start_at, output_type="pt", progress=False, **kwargs)
        seconds[name] = time.perf_counter() - start
        outputs[name] = unit_to_uint8(out.cpu())
    return outputs, seconds


class SRScores:
    """Per-image SR numbers of named methods over batches; FID too when given the feature network."""

    def __init__(self, network=None):
        self.network, self.values, self.stats = network, {}, {}
        self.truth = FeatureStats() if network is not None else None
        self.images = 0

    def add_truth(self, hr: torch.Tensor) -> None:
        self.images += hr.shape[0]
        if self.network is not None:
            self.truth.update(self.network(hr)[0])

    def add(self, name: str, out: torch.Tensor, lr: torch.Tensor, hr: torch.Tensor, scale: int, **extra) -> None:
        """One method's uint8 outputs for a batch; `extra`: more per-image columns (tensors [N])."""
        row = {**sr.per_image(out, lr, hr, scale), **extra}
        for key, value in row.items():
            self.values.setdefault(name, {}).setdefault(key, []).append(value)
        if self.network is not None:
            self.stats.setdefault(name, FeatureStats()).update(self.network(out)[0])

    def rows(self) -> dict[str, dict[str, float]]:
        rows = {name: sr.summarise(values) for name, values in self.values.items()}
        for name, stats in self.stats.items():
            rows[name]["fid"] = fid_from_stats(stats, self.truth)
        return rows
