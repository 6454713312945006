"""Tiled diffusion: denoise an image of any size as overlapping tiles, jointly at every step.

MultiDiffusion (Bar-Tal et al. 2023): at each sampling step the network predicts every tile of the
current x_t, and the predictions are fused into one full-size prediction by a weighted average
over the tiles covering each pixel; the scheduler then steps the *whole* image. All tiles therefore
share one noise field and one trajectory, and the overlaps agree by construction instead of being
blended after the fact. The weights ramp smoothly (sin^2) from ~0 at a tile's inner edge to 1 at
`overlap` pixels inside it, so no tile's edge (where it lacks context) shows.

How much overlap is enough: OUR-GAN (Oh, Yoon and Kim 2022, arXiv 2202.13799) super-resolves overlapping subregions with the
overlap set to the network's effective receptive field (ERF) radius. `effective_receptive_field`
measures it as Luo et al. 2016 do: the gradient of one output pixel with respect to the inputs,
and the radius of the centred square holding a given fraction of its mass.

Memory: the full-size state (x_t, the fused prediction, the scheduler's history) lives on the host;
only batches of tiles visit the accelerator, so device memory depends on tile size and tile batch,
not on the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from tqdm.auto import tqdm


@dataclass(frozen=True)
class Tile:
    top: int
    left: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Start offsets of tiles of side `tile` covering [0, length) with at least `overlap` pixels shared.

    Offsets are multiples of `multiple` (so every tile sees the strided UNet's pixel grid as the whole
    image does); `length` and `tile` must be multiples of it. A length <= tile is one tile.
    """
    if length <= tile:
        return [0]
    stride = (tile - overlap) // multiple * multiple
    if stride <= 0:
        raise ValueError(f"overlap {overlap} leaves no stride for tile {tile} (multiple of {multiple})")
    count = math.ceil((length - tile) / stride) + 1
    # Spread evenly, round down to the grid: consecutive gaps never exceed `stride`.
    return [(i * (length - tile) // (count - 1)) // multiple * multiple for i in range(count)]


def make_tiles(height: int, width: int, tile: int, overlap: int, multiple: int = 1) -> list[Tile]:
    rows = tile_starts(height, tile, overlap, multiple)
    cols = tile_starts(width, tile, overlap, multiple)
    return [Tile(top, left, min(tile, height), min(tile, width)) for top in rows for left in cols]


def _ramp(length: int, overlap: int, ramp_start: bool, ramp_end: bool) -> torch.Tensor:
    """1D weights: sin^2 from ~0 to 1 over `overlap` pixels at the sides that meet another tile."""
    w = torch.ones(length, dtype=torch.float64)
    n = min(overlap, length // 2)
    if n > 0:
        up = torch.sin(0.5 * math.pi * (torch.arange(n, dtype=torch.float64) + 0.5) / n) ** 2
        if ramp_start:
            w[:n] = up
        if ramp_end:
            w[-n:] = up.flip(0)
    return w


def tile_weight(tile: Tile, height: int, width: int, overlap: int) -> torch.Tensor:
    """[height x width of the tile] fusion weights; no ramp on sides lying on the image border."""
    wy = _ramp(tile.height, overlap, tile.top > 0, tile.top + tile.height < height)
    wx = _ramp(tile.width, overlap, tile.left > 0, tile.left + tile.width < width)
    return (wy[:, None] * wx[None, :]).float()


class TiledDenoiser:
    """A denoiser over full-size host tensors that runs `denoiser` on batches of tiles on `device`.

    Same contract as the network: `tiled(x, t, **cond) -> prediction`, x [N x C x H x W]. Per-image
    conditioning ([N] tensors: class labels, aug level) follows its image; the `spatial` entries
    (images [N x C' x H x W], as the stage's kind names them) are cropped like x. `bar`, if given,
    advances by one per tile evaluated.
    """

    def __init__(self, denoiser: Callable, height: int, width: int, tile: int, overlap: int, multiple: int,
                 batch: int, device: torch.device | str, bar: tqdm | None = None, spatial=("cond_image",)):
        self.denoiser, self.device, self.batch, self.bar = denoiser, torch.device(device), max(1, batch), bar
        self.spatial = tuple(spatial)
        self.tiles = make_tiles(height, width, tile, overlap, multiple)
        self.weights = [tile_weight(t, height, width, overlap) for t in self.tiles]
        self.norm = torch.zeros(height, width)
        for t, w in zip(self.tiles, self.weights):
            self.norm[t.slices] += w

    def __call__(self, x: torch.Tensor, t, **cond) -> torch.Tensor:
        n = x.shape[0]
        fused = torch.zeros(x.shape, dtype=torch.float32)
        jobs = [(i, k) for i in range(n) for k in range(len(self.tiles))]
        for start in range(0, len(jobs), self.batch):
            chunk = jobs[start:start + self.batch]
            index = torch.tensor([i for i, _ in chunk])
            crops = torch.stack([x[i][(slice(None), *self.tiles[k].slices)] for i, k in chunk]).to(self.device)
            tile_cond = {}
            for key, value in cond.items():
                if key in self.spatial:
                    value = torch.stack([value[i][(slice(None), *self.tiles[k].slices)] for i, k in chunk])
                elif isinstance(value, torch.Tensor) and value.ndim > 0:
                    value = value[index]
                tile_cond[key] = value.to(self.device) if isinstance(value, torch.Tensor) else value
            prediction = self.denoiser(crops, t, **tile_cond).float().cpu()
            for (i, k), pred in zip(chunk, prediction):
                fused[i][(slice(None), *self.tiles[k].slices)] += pred * self.weights[k]
            if self.bar is not None:
                self.bar.update(len(chunk))
        return (fused / self.norm).to(x.dtype)


@torch.enable_grad()
def effective_receptive_field(unet, size: int, timesteps: list[int], cond: Callable | None = None,
                              spatial=(), seeds: int = 2, floor_factor: float = 2.0, zero_x: bool = False) -> dict:
    """ERF of `unet` on [1 x C x size x size] Gaussian inputs: the gradient of the centre output pixel
    (summed over channels) with respect to x_t and the `spatial` conditioning images, |.| summed over
    channels, averaged over `timesteps` and `seeds`. `cond(generator)` returns the conditioning of one
    draw (a stage kind's `erf_inputs`). Returns {"radius": in pixels (see below), "rings": mean |grad|
    at each distance relative to the centre's, "global_fraction": the share of the gradient spread
    evenly over the whole input, "size": size}. `zero_x`: x_t is zeros and not an input the gradient
    is taken for (one-evaluation kinds, which always see x_t = 0: cascade.kinds.sr3.Regression).
    """
    params = next(unet.parameters())
    device, dtype = params.device, params.dtype
    cfg = unet.config
    total = torch.zeros(size, size, dtype=torch.float64)
    for seed in range(seeds):
        g = torch.Generator().manual_seed(seed)
        for t in timesteps:
            x = torch.randn(1, cfg.in_channels, size, size, generator=g).to(device, dtype)
            x = torch.zeros_like(x) if zero_x else x.requires_grad_()
            kwargs = dict(cond(g)) if cond is not None else {}
            images = [key for key in spatial if key in kwargs and kwargs[key].is_floating_point()]  # not label IDs
            for key in images:
                kwargs[key] = kwargs[key].to(device, dtype).requires_grad_()
            inputs = [*([] if zero_x else [x]), *(kwargs[key] for key in images)]
            out = unet(x, torch.tensor([t], device=device), **kwargs)
            grads = torch.autograd.grad(out[0, :, size // 2, size // 2].sum(), inputs)
            total += sum(gr.abs().sum(dim=(0, 1)).double().cpu() for gr in grads)
    # Beyond a few pixels |grad| settles on a flat floor: GroupNorm statistics and attention make every
    # output depend a little on every input. Overlap cannot remove that part (it is a property of the
    # tile, not of its edges), so the ERF radius is the last distance before the local part has
    # decayed into the floor: one less than the first ring (pixels at Chebyshev distance r) whose mean
    # |grad| is at most `floor_factor` x the floor, the median ring mean for r >= size / 4.
    c = size // 2
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    distance = torch.maximum((yy - c).abs(), (xx - c).abs())
    rings = torch.stack([total[distance == r].mean() for r in range(c)])
    floor = rings[size // 4:].median()
    radius = next((r for r in range(1, c) if rings[r] <= floor_factor * floor), c) - 1
    return {"radius": radius, "rings": (rings / rings[0]).tolist(), "size": size,
            "global_fraction": (floor * size * size / total.sum()).item()}
