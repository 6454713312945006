"""Upscaling to images larger than memory: the full-size state on disk, the output streamed to a file.

`Stage.sample(tiling=...)` keeps about ten float32 copies of a stage's output in host memory. Here
every full-size array lives in a file of a state folder (the stage's input and its noise-augmented
copy, x_t before and after each step, each band's scheduler history) and is read and written by
row bands, so host memory depends on the image's width and the tile, not on its area:

- Each step visits the tiles row by row. A tile row's weighted predictions (cascade.inference.tiling's fusion
  weights) are added into a buffer of rows; the rows above the next tile row are then complete (no
  later tile covers them), so they are normalised, stepped and written to x_{t-1} at once.
- The sum is exact in any order: each weighted prediction is rounded to a multiple of 2^-32 and
  summed as int64 (integer addition is associative). With N processes each one evaluates every
  N-th batch of a tile row (the batches are the same for any N, so each network call computes the
  same numbers), the band buffers are summed with a collective, and process 0 steps: the output
  is the one-process output, bit for bit.
- A band is stepped by the sampler's diffusers scheduler with that band's history: the scheduler's
  per-pixel tensors (4-D: DPM-Solver's model_outputs, UniPC's last_sample, Heun's derivative) are
  kept per band in the state folder, and its scalar state (step index, solver order), the same for
  every band, is advanced once per step. The schedulers' updates are elementwise, so a band stepped
  alone equals the same rows of the whole image stepped at once (tests/test_streaming.py).
- Noise (x_T, the input's augmentation, stochastic samplers) is drawn per band from generators
  seeded by (seed, stage, step, band): the same for any number of processes and across a resume.
- After every step a progress record is written atomically; `resume=True` continues after the last
  completed step, with the output an uninterrupted run gives.
- The last stage's bands are finished (the kind's residual, [0, 1], uint8) and written to the output
  file as they are produced (cascade.inference.streamed.files), under OUT.partial, renamed at the end.

The conditioning comes from the stage's kind (`noisy_source` once per band of the input, then
`conditioning` on a window of the input around each tile). The result is not the in-memory tiled
path's image for the same seed (that one draws its noise for the whole image at once), but a
sample of the same model with the same tiles.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
from dataclasses import dataclass
from typing import Iterator

import torch

from ...diffusion import rng
from ...diffusion.sampling import guided, make_sampler
from ..tiling import Tile, make_tiles, tile_weight
from .state import StateFolder

FIXED_POINT = 2.0 ** 32  # weighted predictions are summed as integers in units of 2^-32
MARGIN = 4  # input pixels around a tile's window (bicubic upsampling reads 2 on each side)
INPUT_BAND = 64  # rows of the input augmented at a time


# ---------------------------------------------------------------- schedulers by band


def _step_kwargs(scheduler, generator) -> dict:
    return {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}


class BandScheduler:
    """One diffusers scheduler stepping many bands of an image, each with its own history.

    `shadow` holds the scalar state (stepped once per step on a 1 x 1 placeholder); a band's step
    runs on a copy of it whose 4-D tensors are the band's (`state`), and returns the band's new
    ones. Every scheduler in cascade.diffusion.sampling.SAMPLERS updates pixels independently, so bands
    stepped apart equal the whole image stepped at once."""

    def __init__(self, scheduler, channels: int):
        self.shadow, self.dummy = scheduler, torch.zeros(1, channels, 1, 1)

    def scale_model_input(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.shadow.scale_model_input(x, t)

    def step(self, prediction, t, x, state: dict, generator) -> tuple[torch.Tensor, dict]:
        band = copy.copy(self.shadow)
        band.__dict__ = {k: _substitute(k, v, state) for k, v in self.shadow.__dict__.items()}
        out = band.step(prediction, t, x, **_step_kwargs(band, generator)).prev_sample
        return out, _per_pixel(band.__dict__)

    def advance(self, t) -> None:
        """After every band of the step at `t`: the scalar state moves on."""
        self.shadow.scale_model_input(self.dummy, t)
        self.shadow.step(self.dummy, t, self.dummy, **_step_kwargs(self.shadow, torch.Generator().manual_seed(0)))


def _is_pixels(value) -> bool:
    return isinstance(value, torch.Tensor) and value.ndim == 4


def _substitute(key, value, state: dict):
    if _is_pixels(value):
        return state[key]
    if isinstance(value, list):
        return [state[f"{key}.{i}"] if _is_pixels(v) else v for i, v in enumerate(value)]
    return value


def _per_pixel(values: dict) -> dict:
    out = {}
    for key, value in values.items():
        if _is_pixels(value):
            out[key] = value
        elif isinstance(value, list):
            out.update({f"{key}.{i}": v for i, v in enumerate(value) if _is_pixels(v)})
    return out


def history_copies(sampler: str, train_config, steps: int) -> int:
    """Full-size per-pixel tensors the scheduler keeps between steps (for the disk estimate)."""
    scheduler = make_sampler(sampler, train_config)
    scheduler.set_timesteps(steps)
    bands, most = BandScheduler(scheduler, 1), 0
    for t in list(scheduler.timesteps)[:4]:
        bands.advance(t)
        most = max(most, len(_per_pixel(scheduler.__dict__)))
    return most


# ---------------------------------------------------------------- processes


class Processes:
    """This process's rank among those `accelerate launch` started (one when run plainly)."""

    def __init__(self):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        if self.world > 1:
            from ...training.loop import process_state

            process_state()  # torch.distributed as the runs' Accelerators set it up (gloo on CPUs, also under torchrun)
            self.rank = torch.distributed.get_rank()
            self.cpu_group = torch.distributed.new_group(backend="gloo")  # host tensors, any device
        else:
            self.rank = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over processes, on process 0 (exact: the tensors are integers)."""
        if self.world > 1:
            torch.distributed.reduce(tensor, dst=0, group=self.cpu_group)
        return tensor

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier(group=self.cpu_group)

    def share(self, value):
        """Process 0's `value` on every process."""
        if self.world == 1:
            return value
        box = [value]
        torch.distributed.broadcast_object_list(box, src=0, group=self.cpu_group)
        return box[0]


# ---------------------------------------------------------------- one stage


@dataclass
class Geometry:
    size: tuple[int, int]  # output H, W (padded)
    tiles: list[Tile]
    tops: list[int]  # the tile rows
    bands: list[tuple[int, int]]  # rows complete after each tile row


def geometry(height: int, width: int, tile: int, overlap: int, multiple: int) -> Geometry:
    tiles = make_tiles(height, width, tile, overlap, multiple)
    tops = sorted({t.top for t in tiles})
    ends = [*tops[1:], height]
    return Geometry((height, width), tiles, tops, list(zip([0, *ends[:-1]], ends)))


def _seed(*key) -> int:
    return int.from_bytes(hashlib.sha256(json.dumps(key).encode()).digest()[:8], "little") & (2 ** 63 - 1)


def _generator(*key) -> torch.Generator:
    return torch.Generator().manual_seed(_seed(*key))


def _window(start: int, stop: int, scale: int, length: int) -> tuple[int, int]:
    """Input rows (or columns) around output rows [start, stop), with MARGIN, inside [0, length)."""
    return max(0, start // scale - MARGIN), min(length, -(-stop // scale) + MARGIN)


class StreamedStage:
    """One stage of a streamed upscale: its tiles, bands, scheduler and the kind's conditioning."""

    def __init__(self, index: int, stage, settings, source_size: tuple[int, int], tile_size: int,
                 overlap: int | None, tile_batch: int, seed: int):
        if settings.consistent:
            raise ValueError("consistent (the exact-consistency projection) needs the whole image; "
                             "streamed upscaling does not offer it")
        if not stage.kind.iterative:
            raise ValueError(f"a {stage.kind.name} stage is one network evaluation, not a sampler that streams "
                             f"tile by tile; upscale it in memory with tiles (Pipeline.upscale(tile_size=...))")
        self.index, self.stage, self.settings, self.seed = index, stage, settings, seed
        self.kind, self.batch = stage.kind, max(1, tile_batch)
        self.source_size = source_size
        h, w = source_size
        tile, self.overlap = stage.tile_geometry(tile_size, overlap)
        self.geo = geometry(h * self.kind.scale, w * self.kind.scale, tile, self.overlap, stage.size_multiple)
        self.channels = stage.unet.config.in_channels
        self.scheduler = make_sampler(settings.sampler, stage.noise_scheduler.config,
                                      final_timestep=settings.final_timestep)
        self.scheduler.set_timesteps(settings.steps)
        self.timesteps = list(self.scheduler.timesteps)
        null = stage.unet.null_class if stage.unet.config.num_classes else None
        self.denoiser = guided(stage.unet, settings.guidance_scale, null)
        self.labels = stage.label_tensor(None, 1)
        self.device = stage.device
        self.bands = BandScheduler(self.scheduler, self.channels)
        self.rows = {top: [t for t in self.geo.tiles if t.top == top] for top in self.geo.tops}
        self.weights = {}
        self.completed = 0  # steps the scheduler's scalar state has been advanced through

    @property
    def evaluations(self) -> int:
        return len(self.timesteps) * len(self.geo.tiles)

    def names(self, step: int) -> tuple[str, str]:
        """The x_t files read and written by `step`."""
        return f"x{self.index}_{step % 2}", f"x{self.index}_{(step + 1) % 2}"

    def start(self, folder: StateFolder, source) -> None:
        """Process 0: the noise-augmented input and x_T, band by band."""
        h, w = self.source_size
        noisy = folder.array(f"noisy{self.index}", (source.shape[0], h, w), create=True)
        for r0 in range(0, h, INPUT_BAND):
            rows = slice(r0, min(h, r0 + INPUT_BAND))
            band = source.read(rows)[None]
            generator = [_generator(self.seed, self.index, "aug", r0)]
            noisy.write(rows, self.kind.noisy_source(self.stage, band, self.settings, generator)[0])
        x = folder.array(self.names(0)[0], (self.channels, *self.geo.size), create=True)
        for b, (r0, r1) in enumerate(self.geo.bands):
            shape = (1, self.channels, r1 - r0, self.geo.size[1])
            x.write(slice(r0, r1), rng.randn(shape, _generator(self.seed, self.index, "init", b))[0]
                    * self.scheduler.init_noise_sigma)

    def conditioning(self, source, noisy, rows: tuple[int, int], cols: tuple[int, int]):
        """The kind's conditioning of output region rows x cols, from a window of the input:
        (cond entries cropped to the region, a function finishing x of the region)."""
        (h, w), s = self.source_size, self.kind.scale
        (y0, y1), (x0, x1) = _window(*rows, s, h), _window(*cols, s, w)
        window = (slice(y0, y1), slice(x0, x1))
        made = self.kind.conditioning(self.stage, source.read(*window)[None], noisy.read(*window)[None],
                                      self.settings, self.device)
        box = (slice(rows[0] - y0 * s, rows[1] - y0 * s), slice(cols[0] - x0 * s, cols[1] - x0 * s))
        cond = {k: v[(..., *box)] if k in self.kind.spatial else v for k, v in made.cond.items()}

        def finish(x: torch.Tensor) -> torch.Tensor:
            full = torch.zeros(x.shape[0], x.shape[1], *made.size, dtype=x.dtype, device=x.device)
            full[(..., *box)] = x
            return made.finish(full)[(..., *box)]

        return cond, finish

    @torch.no_grad()
    def predict(self, x_in, source, noisy, tiles: list[Tile], t, bands: BandScheduler) -> torch.Tensor:
        """The network's prediction for a batch of tiles [N x C x th x tw] (float32, CPU)."""
        crops = torch.stack([x_in.read(*tile.slices) for tile in tiles])
        conds = [self.conditioning(source, noisy, (tile.top, tile.top + tile.height),
                                   (tile.left, tile.left + tile.width))[0] for tile in tiles]
        cond = {k: torch.cat([c[k] for c in conds]) for k in conds[0]}
        if self.labels is not None:
            cond["class_labels"] = self.labels.expand(len(tiles)).to(self.device)
        model_in = bands.scale_model_input(crops, t).to(self.device)
        return self.denoiser(model_in, t.to(self.device), **cond).float().cpu()

    def run_step(self, step: int, folder: StateFolder, source, procs: Processes, bar) -> Iterator:
        """One sampling step over every tile; yields (rows, finished band) on the last step (process 0)."""
        t, last = self.timesteps[step], step == len(self.timesteps) - 1
        name_in, name_out = self.names(step)
        shape = (self.channels, *self.geo.size)
        x_in, x_out = folder.array(name_in, shape), folder.array(name_out, shape, create=procs.main)
        noisy = folder.array(f"noisy{self.index}", (source.shape[0], *self.source_size))
        while self.completed < step:  # after a resume: replay the scalar state on the placeholder
            self.bands.advance(self.timesteps[self.completed])
            self.completed += 1
        bands = self.bands
        acc = _Rows(self.channels, self.geo.size[1])
        for i, top in enumerate(self.geo.tops):
            row = self.rows[top]
            batches = [row[j:j + self.batch] for j in range(0, len(row), self.batch)]
            for chunk in batches[procs.rank::procs.world]:
                for tile, pred in zip(chunk, self.predict(x_in, source, noisy, chunk, t, bands)):
                    acc.add(tile, pred.double() * self._weight(tile).double())
            r0, r1 = self.geo.bands[i]
            summed = procs.reduce(acc.take(r0, r1))
            bar.update(len(row))
            if not procs.main:
                continue
            fused = (summed.double() / FIXED_POINT / self._norm(r0, r1)).float()[None]
            state = folder.load_band(f"band{self.index}_{i}_{step % 2}")
            x, state = bands.step(fused, t, x_in.read(slice(r0, r1))[None], state,
                                  _generator(self.seed, self.index, "step", step, i))
            folder.save_band(f"band{self.index}_{i}_{(step + 1) % 2}", state)
            x_out.write(slice(r0, r1), x[0])
            if last:
                finish = self.conditioning(source, noisy, (r0, r1), (0, self.geo.size[1]))[1]
                yield (r0, r1), finish(x.to(self.device)).cpu()
        bands.advance(t)
        self.completed = step + 1

    def _weight(self, tile: Tile) -> torch.Tensor:
        (h, w), t = self.geo.size, tile
        key = (t.height, t.width, t.top > 0, t.left > 0, t.top + t.height < h, t.left + t.width < w)
        if key not in self.weights:  # the weights depend on the tile's size and which sides meet others
            self.weights[key] = tile_weight(tile, h, w, self.overlap)
        return self.weights[key]

    def _norm(self, r0: int, r1: int) -> torch.Tensor:
        """Sum of the tiles' weights over output rows [r0, r1) [rows x W] (float64)."""
        norm = torch.zeros(r1 - r0, self.geo.size[1], dtype=torch.float64)
        for tile in (t for top in self.geo.tops if top < r1 for t in self.rows[top]):
            a, b = max(r0, tile.top), min(r1, tile.top + tile.height)
            if a < b:
                w = self._weight(tile).double()
                norm[a - r0:b - r0, tile.left:tile.left + tile.width] += w[a - tile.top:b - tile.top]
        return norm


class _Rows:
    """Integer sums of weighted predictions over a sliding range of rows [top, top + len)."""

    def __init__(self, channels: int, width: int):
        self.top, self.buf = 0, torch.zeros(channels, 0, width, dtype=torch.int64)

    def _cover(self, stop: int) -> None:
        need = stop - self.top - self.buf.shape[1]
        if need > 0:
            self.buf = torch.cat([self.buf, self.buf.new_zeros(self.buf.shape[0], need, self.buf.shape[2])], dim=1)

    def add(self, tile: Tile, value: torch.Tensor) -> None:
        self._cover(tile.top + tile.height)
        rows = slice(tile.top - self.top, tile.top - self.top + tile.height)
        self.buf[:, rows, tile.left:tile.left + tile.width] += torch.round(value * FIXED_POINT).to(torch.int64)

    def take(self, start: int, stop: int) -> torch.Tensor:
        if start != self.top:
            raise ValueError(f"rows taken out of order: {start} after {self.top}")
        self._cover(stop)
        out, self.buf, self.top = self.buf[:, :stop - start].clone(), self.buf[:, stop - start:], stop
        return out
