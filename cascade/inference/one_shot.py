"""One image in, new images of any size out: a cascade trained on a single photo (OUR-GAN, SinGAN /
ConSinGAN, SinDDM), and what it does: generate, edit (SDEdit), harmonize, and generative-prior SR.

The cascade (`train/one_shot.py`): a scene stage (cascade.kinds.one_shot.Scene) that generates the whole
picture at a coarse size (`scene.long_side` px on the longer side, the photo's aspect ratio), then
two upsamplers (cascade.kinds.one_shot.OneShotSR3): `coarse`, trained on crops of the photo at its output
scale, and `fine`, trained on crops from its output scale up to the photo's own resolution. Larger
outputs repeat `fine` (OUR-GAN super-resolves beyond its training image the same way), every
upsampler denoising in tiles whose overlap is its measured ERF (cascade.inference.tiling).

Sizes (`plan`): an output W x H is made by the scene stage at ceil(H / S) x ceil(W / S), then the
upsamplers (total scale S), then cropped to W x H. The number of repeats of `fine` is the one whose
scene is closest in size (geometric mean of the sides) to the scene the stage was trained on, so an
output covers about as much of the scene as the photo does, whatever its pixel count; another aspect
ratio extends the scene sideways or vertically (SinGAN's arbitrary-size generation). By default every row of
the scene keeps the training photo's mean colour there (`row_profile`, recorded in one_shot.json): its horizons
and bands stay at their heights while everything along the rows is drawn anew.

    from cascade.one_shot import generate, edit
    pipe = Pipeline.from_pretrained("runs/one_shot/pipeline")
    image = generate(pipe, (3840, 2160), seed=0)                  # a PIL image
    out = edit(pipe, Image.open("edited.png"), strength=0.5, mask=Image.open("mask.png"))
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.label_maps import dilate, shrink_mask
from ..diffusion.resize import downsample
from ..io.images import pil_to_signed, signed_to_pil, signed_to_unit, to_rgb, unit_to_pil, user_images_to_signed
from ..kinds.one_shot import Scene
from .photo_rows import (on_this_machine, recorded, recorded_rows, row_profile, rows_to_keep,  # noqa: F401 (the API)
                         scene_rows)
from .pipeline import Pipeline, input_multiple
from .stage import Tiling

MAX_REPEATS = 8  # `fine` is repeated at most this many times (x256 beyond a x2 cascade's own scale)
MAX_SIDE = 65535  # the largest output side (PNG and TIFF writers)
IN_MEMORY_PIXELS = 4096 * 4096  # larger outputs are streamed to disk (cascade.giant), as `upscale` does


@dataclass(frozen=True)
class Plan:
    """How an output is made: the scene stage and its output (H, W), the upsamplers in order, the output's (H, W)."""

    scene_stage: object
    scene: tuple[int, int]
    upsamplers: tuple
    size: tuple[int, int]

    @property
    def scale(self) -> int:
        return math.prod(s.kind.scale for s in self.upsamplers)

    @property
    def full(self) -> tuple[int, int]:
        """The size the cascade makes before the crop to `size`."""
        return self.scene[0] * self.scale, self.scene[1] * self.scale

    def pipeline(self) -> Pipeline:
        return Pipeline([self.scene_stage, *self.upsamplers])


def scene_stage(pipe: Pipeline):
    stage = pipe.stages[0]
    if not isinstance(stage.kind, Scene):
        raise ValueError(f"the pipeline's first stage is a {stage.kind.name} stage, not a one-shot scene stage "
                         f"(train one with train/one_shot.py)")
    return stage


def plan(pipe: Pipeline, size: tuple[int, int]) -> Plan:
    """The plan of a `size` (W, H) output (see the module docstring); ValueError if it cannot be made."""
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"size {width}x{height}: both sides must be >= 1 px")
    if max(width, height) > MAX_SIDE:
        raise ValueError(f"size {width}x{height}: sides are limited to {MAX_SIDE} px (PNG/TIFF)")
    scene = scene_stage(pipe)
    ups = list(pipe.stages[1:])
    trained = math.sqrt(scene.kind.size[0] * scene.kind.size[1])
    best = None
    for repeats in range(MAX_REPEATS + 1 if ups else 1):
        chain = ups + [ups[-1]] * repeats if ups else []
        scale = math.prod(s.kind.scale for s in chain)
        m = math.lcm(scene.size_multiple, input_multiple(chain))  # every stage's output a multiple of its UNet's
        dims = (max(m, math.ceil(height / scale / m) * m), max(m, math.ceil(width / scale / m) * m))
        distance = abs(math.log(math.sqrt(dims[0] * dims[1]) / trained))
        if best is None or distance < best[0] - 1e-9:
            best = (distance, dims, chain)
    _, dims, chain = best
    return Plan(scene, dims, tuple(chain), (height, width))


def check_resources(p: Plan, streamed: bool, folder: Path) -> None:
    """ValueError when the host cannot hold (in memory) or store (streamed, on disk) the output."""
    h, w = p.full
    if streamed:
        need = h * w * 3 * 4 * 6  # the streamed state: x_t, prediction, history, input (float32), with margin
        free = shutil.disk_usage(folder).free
        if need > free:
            raise ValueError(f"a {p.size[1]}x{p.size[0]} output needs about {need / 2 ** 30:.0f} GiB of disk for its "
                             f"streamed state; {folder} has {free / 2 ** 30:.0f} GiB free")
        return
    need = h * w * 3 * 4 * 8
    free = available_memory()
    if free is None:
        return
    if need > free:
        raise ValueError(f"a {p.size[1]}x{p.size[0]} output needs about {need / 2 ** 30:.1f} GiB of memory; "
                         f"{free / 2 ** 30:.1f} GiB is free")


def available_memory() -> int | None:
    """Bytes of memory the host can give without swapping (Linux MemAvailable; None if unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def photo_at(photo: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """A PIL photo of any mode (as cascade.io.images.to_rgb converts it) resized (antialiased bicubic) to `size`
    (H, W): [1 x 3 x H x W] in [-1, 1]."""
    return pil_to_signed(to_rgb(photo).resize(size[::-1], Image.BICUBIC, reducing_gap=3.0))[None]


def draw_scene(p: Plan, seed: int, progress: bool = True, photo: Image.Image | None = None,
               strength: float = 1.0, rows: torch.Tensor | None = None) -> torch.Tensor:
    """One scene [1 x 3 x h x w] in [-1, 1] for image seed `seed`: drawn from noise, or with `photo` and
    `strength` < 1 from the photo (see `generate`) noised to `strength`; with `rows` (a `row_profile`) every row
    has that mean colour."""
    check_start(photo, strength)
    init = photo_scene(p, photo) if photo is not None and strength < 1 else None
    return p.scene_stage.sample(num_images=1, seed=seed, size=p.scene, init=init, strength=strength,
                                rows=scene_rows(p, rows) if rows is not None else None, progress=progress).clamp(-1, 1)


def photo_scene(p: Plan, photo: Image.Image) -> torch.Tensor:
    """`photo` as the scene of plan `p`: resized to the part of the scene the output keeps (the scene is rounded up
    to what the stages take, and the output cropped from it), the rest replicated from its edges, so the
    photo lies where the output is."""
    h, w = (min(n, max(1, round(side / p.scale))) for n, side in zip(p.scene, p.size))
    return F.pad(photo_at(photo, (h, w)), (0, p.scene[1] - w, 0, p.scene[0] - h), mode="replicate")


def check_start(photo, strength: float) -> None:
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength={strength}: must be in [0, 1]")
    if photo is None and strength < 1:
        raise ValueError(f"strength={strength} starts the scene from a photo: give one (photo=)")


def generate(pipe: Pipeline, size: tuple[int, int], seed: int = 0, tile_size: int | None = None,
             path: str | Path | None = None, progress: bool = True, photo: Image.Image | None = None,
             strength: float = 1.0, keep_rows: bool | torch.Tensor | None = None) -> Image.Image | None:
    """A new image of `size` (W, H) for `seed`, as a PIL image; or written to `path` (streamed for
    outputs above IN_MEMORY_PIXELS, returning None). `tile_size`: the upsamplers' tiles (output px;
    default twice the last upsampler's training size).

    `photo` (PIL) and `strength` < 1: SinGAN's generation from a coarser scale and its paint-to-image: the scene
    starts from `photo` (the training photo, or a painting of its colours) resized to the output's size at
    the scene's scale (stretched if its aspect ratio differs) and noised to `strength`; the upsamplers then
    draw every detail anew. Lower strengths keep more of the photo's layout, higher ones vary it more
    (docs/one_shot.md measures the trade-off); 1 draws the scene from noise, as without a photo.

    `keep_rows`: every row of the scene keeps the mean colour of the photo's row there (`row_profile`, placed as
    the photo above): its horizons and bands stay at their heights, with their colours, while everything along
    the rows is drawn anew (from noise nothing else of the photo is kept). The profile is `photo`'s, else the
    training photo's that the pipeline records (`recorded_rows`), or a profile given as `keep_rows` ([3 x R] in
    [-1, 1], as `row_profile` returns). None (the default): kept when there is one; False: the scene's rows are
    free too (docs/one_shot.md measures both)."""
    p = plan(pipe, size)
    check_start(photo, strength)
    rows = rows_to_keep(pipe, photo, keep_rows)
    streamed = path is not None and p.full[0] * p.full[1] > IN_MEMORY_PIXELS
    check_resources(p, streamed, Path(path).resolve().parent if streamed else Path("."))  # before any work
    scene = draw_scene(p, seed, progress, photo, strength, rows)
    if not p.upsamplers:
        return signed_to_pil(scene[..., :p.size[0], :p.size[1]])[0]
    tile = tile_size or 2 * p.upsamplers[-1].resolution
    chain = p.pipeline()
    if streamed:
        from .streamed.upscale import upscale_to_file

        upscale_to_file(chain, signed_to_unit(scene), path, seed=seed, tile_size=tile, crop=p.size[::-1],
                        progress=progress)
        return None
    out = chain.upscale(signed_to_unit(scene), seed=seed, tile_size=tile, output_type="pt", progress=progress)  # [0, 1]
    return unit_to_pil(out[..., :p.size[0], :p.size[1]])[0]


def edit(pipe: Pipeline, image, strength: float, mask=None, seed: int = 0, margin: int = 0,
         tile_size: int | None = None, progress: bool = True, stages: int | None = None, feather: int = 0,
         resample: int = 1) -> Image.Image:
    """SDEdit with the one-shot cascade: `image` (any size) is noised to `strength` in [0, 1] at a stage's
    scale and denoised again, each upsampler conditioned on the stage before. `stages`: only the finest this
    many stages redraw (the coarser ones pass the image on at their scale; None: every stage).

    With `mask` (nonzero: the region to resample, grown by `margin` px) every stage keeps the rest of the
    image at its scale at every step (the mask shrunk to each scale keeps every masked pixel: the region is
    the same at every scale), and `resample` > 1 repeats each step RePaint-style so the new pixels agree
    with the kept ones (the stages then sample with DDPM at their step count). Without `feather` the output
    equals `image` outside the mask exactly; with it the stages also redraw a band `feather` px wide around
    the mask, blended into the image with weights falling from 1 at the mask to 0 at the band's edge.
    `harmonize` is the edit for a pasted object."""
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength={strength}: must be in [0, 1]")
    if stages is not None and int(stages) < 1:
        raise ValueError(f"stages={stages}: must be >= 1 (the finest stages that redraw) or None for all")
    if feather < 0 or resample < 1:
        raise ValueError(f"feather={feather}, resample={resample}: feather must be >= 0 and resample >= 1")
    if mask is None and (feather > 0 or resample > 1):
        raise ValueError("feather and resample act on a masked edit: give a mask")
    x = torch.cat(user_images_to_signed(image))[:1]  # [1 x 3 x H x W] in [-1, 1]
    h, w = x.shape[-2:]
    p = plan(pipe, (w, h))
    if p.full[0] * p.full[1] > IN_MEMORY_PIXELS:
        raise ValueError(f"{w}x{h}: edits are made in memory, at most {IN_MEMORY_PIXELS // 2 ** 20} MP")
    H, W = p.full
    pad = lambda t, mode="replicate": F.pad(t, (0, W - w, 0, H - h), mode=mode)  # noqa: E731
    region = None
    if mask is not None:
        region = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
        region = region.reshape(1, 1, *region.shape[-2:]) != 0
        if tuple(region.shape[-2:]) != (h, w):
            raise ValueError(f"mask is {region.shape[-1]}x{region.shape[-2]}, the image {w}x{h}")
        region = pad(dilate(region, margin).float(), "constant").bool()
    x = pad(x)
    redrawn = None if region is None else dilate(region, feather)  # the band the blend reaches is redrawn too
    chain = [p.scene_stage, *p.upsamplers]
    first = 0 if stages is None else max(0, len(chain) - int(stages))
    factors = [math.prod(s.kind.scale for s in p.upsamplers[i:]) for i in range(len(chain))]
    tile = tile_size or 2 * p.upsamplers[-1].resolution if p.upsamplers else None
    settings = {"resample": resample, "sampler": "ddpm"} if resample > 1 else None
    out = None
    for i, (stage, k) in enumerate(zip(chain, factors)):
        level = downsample(x, k) if k > 1 else x
        if i < first:  # a coarser scale than the edit's: the image as it is
            out = level
            continue
        keep = None if region is None else (level, shrink_mask(redrawn, tuple(level.shape[-2:])))
        if i == 0:
            out = stage.sample(num_images=1, seed=seed, size=p.scene, init=level, strength=strength, keep=keep,
                               settings=settings, progress=progress)
        else:
            tiling = Tiling(tile) if tile and max(level.shape[-2:]) > tile else None
            out = stage.sample(out.clamp(-1, 1), seed=seed, init=level, strength=strength, keep=keep,
                               tiling=tiling, settings=settings, progress=progress)
        out = out.clamp(-1, 1)
    if feather > 0 and region is not None:
        weight = soft_mask(region, feather)
        out = weight * out + (1 - weight) * x
    return signed_to_pil(out[..., :h, :w])[0]


def harmonize(pipe: Pipeline, image, mask, strength: float = 0.3, stages: int | None = None, feather: int = 4,
              seed: int = 0, progress: bool = True, **kwargs) -> Image.Image:
    """Harmonization of a pasted object (`mask`), ConSinGAN's and SinDDM's application: the object redrawn at a low
    `strength` and blended into the picture over `feather` px, so it keeps its shape and takes on the photo's
    colours and texture. Every scale redraws by default: the upsamplers are conditioned on the scale below and
    keep its colours, so only the scene stage can move the object's colours (`stages=2`, the finest two only,
    changes its texture alone: docs/one_shot.md measures both)."""
    return edit(pipe, image, strength, mask=mask, seed=seed, stages=stages, feather=feather, progress=progress,
                **kwargs)


def soft_mask(region: torch.Tensor, feather: int) -> torch.Tensor:
    """A bool mask [1 x 1 x H x W] as weights in [0, 1]: 1 inside, falling to 0 over `feather` px outside it."""
    grown = dilate(region, feather).float()
    k = 2 * feather + 1
    return F.avg_pool2d(F.pad(grown, (feather,) * 4, mode="replicate"), k, stride=1).clamp(0, 1) * grown


def prior_upscale(stage, lowres: torch.Tensor, factor: int, class_labels=None, seed: int = 0,
                  steps: int | None = None, progress: bool = True) -> torch.Tensor:
    """Generative-prior SR (PULSE's idea with a diffusion prior, no SR training): `stage`, a stage
    without an input (a one-shot scene stage, or a base stage), draws an image of `factor` times the
    size of `lowres` [N x 3 x h x w] in [-1, 1] whose every x0 estimate is projected onto the images
    that downsample to `lowres` exactly (cascade.diffusion.resize.project_onto_lowres). Inputs are padded
    (reflection) to the stage's size multiple and the output cropped back. Returns
    [N x 3 x h*factor x w*factor] in [-1, 1]."""
    if stage.kind.takes_input:
        raise ValueError(f"prior SR needs a generative stage (no input), not a {stage.kind.name} stage")
    n, (h, w) = lowres.shape[0], lowres.shape[-2:]
    m = stage.size_multiple // math.gcd(stage.size_multiple, factor)
    ph, pw = (-h) % m, (-w) % m
    padded = F.pad(lowres, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    out = stage.sample(class_labels=class_labels, num_images=n, seed=seed, lowres=padded,
                       size=(padded.shape[-2] * factor, padded.shape[-1] * factor),
                       settings={"steps": steps} if steps else None, progress=progress)
    return out[..., :h * factor, :w * factor]


def contact_sheet(images: list[Image.Image], thumb: int = 384) -> Image.Image:
    """The images side by side, each resized (antialiased) to `thumb` px on its longer side."""
    small = []
    for image in images:
        k = thumb / max(image.size)
        small.append(image.resize((max(1, round(image.width * k)), max(1, round(image.height * k))), Image.BICUBIC,
                                  reducing_gap=3.0))
    height, width = max(s.height for s in small), max(s.width for s in small)
    sheet = Image.new("RGB", (len(small) * (width + 4) + 4, height + 8), "white")
    for i, s in enumerate(small):
        sheet.paste(s, (4 + i * (width + 4), 4))
    return sheet
