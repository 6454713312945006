"""Inference: a cascade is an ordered list of stages; each stage owns its model and sampling settings.

A base stage draws images from class labels; an upsampler (SR3) stage draws a `scale`-times larger
image conditioned on a low-res one, which it first corrupts to its noise-augmentation level
(CDM's non-truncated conditioning augmentation) and upsamples bicubically.

Folder layout written by `Pipeline.save_pretrained` and read by `Pipeline.from_pretrained`:

    pipeline/
      cascade.json                 {"format": "cascade", "version": 1, "stages": ["stage_0", ...]}
      stage_0/
        stage.json                 sampler, steps, guidance_scale, scale, aug_level, class_names
        unet/config.json, unet/diffusion_pytorch_model.safetensors
        scheduler/scheduler_config.json   the training noise schedule (samplers are built from it)

Usage:
    pipe = Pipeline.from_pretrained("runs/cascade_photos")
    images = pipe(class_labels=[0, 1, 2], generator=torch.Generator().manual_seed(0))  # final PIL images
    big = pipe.upscale(Image.open("photo.png"))                                      # SR only
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image
from tqdm.auto import tqdm

from .augment import noise_augment
from .errors import CheckpointError
from .images import from_unit, to_pil, to_rgb, to_unit
from .resize import project_onto_lowres, upsample
from .sampling import SAMPLERS, constrained, guided, make_sampler, sample
from .tiling import TiledDenoiser, effective_receptive_field
from .unet import UNet

CASCADE_FILE = "cascade.json"
STAGE_FILE = "stage.json"


@dataclass
class StageSettings:
    """How a stage samples; saved as stage.json and changeable at any time (`stage.settings.steps = 50`)."""

    sampler: str = "dpm++"  # a key of cascade.sampling.SAMPLERS
    steps: int = 25  # network evaluations per image (x2 with guidance)
    guidance_scale: float = 1.0  # classifier-free guidance weight; 1 disables it
    class_names: list[str] = field(default_factory=list)  # label index -> name (empty: unconditional)
    scale: int = 1  # 1: a base stage; k > 1: an upsampler from size/k to size
    aug_level: float = 0.0  # upsamplers: noise-augmentation level s of the low-res input, in [0, 1]
    residual: bool = False  # upsamplers: the model generates (HR - upsample(LR)) * residual_scale
    residual_scale: float = 1.0  # ... which is divided by this and added to upsample(LR) after sampling
    consistent: bool = False  # upsamplers: project every step's x0 estimate so that it downsamples to the input


class Stage:
    """One model of the cascade with its noise schedule and sampling settings."""

    def __init__(self, unet: UNet, noise_scheduler: DDPMScheduler, settings: StageSettings | None = None):
        self.unet, self.noise_scheduler = unet, noise_scheduler
        self.settings = settings or StageSettings()
        self.erf: dict | None = None  # the UNet's effective receptive field, measured by tile_overlap()
        if self.is_upsampler != bool(unet.config.cond_channels):
            raise ValueError(f"stage scale={self.settings.scale} does not fit a UNet with cond_channels="
                             f"{unet.config.cond_channels} (upsamplers need both)")

    @property
    def is_upsampler(self) -> bool:
        return self.settings.scale > 1

    @property
    def resolution(self) -> int:
        """The output size the stage was trained at."""
        return self.unet.config.sample_size

    @property
    def input_resolution(self) -> int:
        """The low-res size the stage was trained on (upsamplers)."""
        return self.resolution // self.settings.scale

    @property
    def size_multiple(self) -> int:
        """Output sides must be multiples of this (2 to the number of the UNet's downsamplings)."""
        return self.unet.size_multiple

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def label_tensor(self, class_labels, n: int | None) -> torch.Tensor | None:
        """Class indices or names -> long tensor [N]; None for an unconditional model."""
        num_classes = self.unet.config.num_classes
        if class_labels is None:
            return None if not num_classes else torch.full((n or 1,), self.unet.null_class, dtype=torch.long)
        if not num_classes:
            raise ValueError("class_labels given, but this stage is unconditional (num_classes=0)")
        labels = []
        for label in (class_labels.tolist() if isinstance(class_labels, torch.Tensor) else class_labels):
            if isinstance(label, str):
                if label not in self.settings.class_names:
                    raise ValueError(f"unknown class name {label!r}; known: {', '.join(self.settings.class_names)}")
                label = self.settings.class_names.index(label)
            if not 0 <= int(label) < num_classes:
                raise ValueError(f"class label {label} out of range [0, {num_classes})")
            labels.append(int(label))
        return torch.tensor(labels, dtype=torch.long)

    def tile_overlap(self) -> int:
        """Default overlap of tiles: the UNet's measured ERF radius, rounded up to `size_multiple`.

        Measured once per stage (cascade.tiling.effective_receptive_field, at twice the training size)
        and cached; `self.erf` keeps the measurement.
        """
        if self.erf is None:
            t = self.noise_scheduler.config.num_train_timesteps
            cond = {"aug_level": torch.zeros(1, device=self.device)} if self.unet.config.use_aug_level else {}
            if self.unet.config.num_classes:
                cond["class_labels"] = torch.full((1,), self.unet.null_class, device=self.device)
            self.erf = effective_receptive_field(self.unet, 2 * self.resolution, [t // 10, t // 2, 9 * t // 10],
                                                 cond, seeds=4)
        m = self.size_multiple
        return max(m, math.ceil(self.erf["radius"] / m) * m)

    @torch.no_grad()
    def sample(self, class_labels=None, num_images: int | None = None, generator: torch.Generator | None = None,
               steps: int | None = None, guidance_scale: float | None = None, sampler: str | None = None,
               lowres: torch.Tensor | None = None, aug_level: float | None = None, tile_size: int | None = None,
               overlap: int | None = None, tile_batch: int = 8, consistent: bool | None = None,
               progress: bool = True) -> torch.Tensor:
        """Images [N x 3 x H x W] in [-1, 1]. Arguments left as None take the stage's settings.

        Upsamplers need `lowres` [N x 3 x h x w] in [-1, 1]; they return (h*scale) x (w*scale)
        images, where h*scale and w*scale must be multiples of `size_multiple`.
        Upsamplers only:
        - `tile_size`: denoise jointly in overlapping tiles of this side (output pixels), `tile_batch`
          tiles at a time, keeping the full-size state on the CPU (cascade.tiling); `overlap`
          defaults to `tile_overlap()`. None: the whole image at once on the stage's device.
        - `consistent`: at every step, project the clean-image estimate so that downsampling it gives
          `lowres` exactly (cascade.resize.project_onto_lowres); None: `settings.consistent`.
        """
        steps = steps or self.settings.steps
        tiled = self.is_upsampler and tile_size is not None
        device = torch.device("cpu") if tiled else self.device  # where the full-size images live
        if self.is_upsampler:
            n, size, cond, offset, project = self._upsampler_inputs(lowres, aug_level, consistent, generator, device)
        elif tile_size is not None or consistent:
            raise ValueError("tile_size and consistent apply to upsampler stages only")
        else:
            n, size, cond, offset, project = None, (self.resolution, self.resolution), {}, None, None
        labels = self.label_tensor(class_labels, num_images or n)
        n = n or (len(labels) if labels is not None else (num_images or 1))
        if labels is not None:
            if len(labels) != n:
                raise ValueError(f"{len(labels)} class labels for {n} images")
            cond["class_labels"] = labels.to(device)
        scale = self.settings.guidance_scale if guidance_scale is None else guidance_scale
        denoiser = guided(self.unet, scale, self.unet.null_class if self.unet.config.num_classes else None)
        scheduler = make_sampler(sampler or self.settings.sampler, self.noise_scheduler.config)
        bar = None
        if tiled:
            tile, overlap = self.tile_geometry(tile_size, overlap)
            denoiser = TiledDenoiser(denoiser, *size, tile, overlap, self.size_multiple, tile_batch, self.device)
            scheduler.set_timesteps(steps)
            evaluations = len(scheduler.timesteps)  # steps, or more for second-order schedulers
            denoiser.bar = bar = tqdm(total=evaluations * n * len(denoiser.tiles), unit="tile", leave=False,
                                      desc=f"{len(denoiser.tiles)} tiles x {evaluations} steps", disable=not progress)
        if project is not None:
            config = self.noise_scheduler.config
            denoiser = constrained(denoiser, project, self.noise_scheduler.alphas_cumprod, config.prediction_type)
        shape = (n, self.unet.config.in_channels, *size)
        try:
            images = sample(denoiser, scheduler, shape, steps, generator=generator, device=device,
                            progress=progress and not tiled, **cond)
        finally:
            if bar is not None:
                bar.close()
        if project is not None:  # the last step's output is the last x0 estimate up to round-off: make it exact
            images = project(images)
        return images if offset is None else images / self.settings.residual_scale + offset

    def _upsampler_inputs(self, lowres, aug_level, consistent, generator, device):
        """(batch size, output size, UNet conditioning, residual offset or None, x0 projection or None)
        of an upsampler for `lowres`: the noise-augmented low-res image upsampled to the output size
        (SR3 + CDM conditioning augmentation) and the level it was augmented at."""
        if lowres is None:
            raise ValueError("an upsampler stage needs `lowres` images")
        n, (h, w) = lowres.shape[0], lowres.shape[-2:]
        size = (h * self.settings.scale, w * self.settings.scale)
        if size[0] % self.size_multiple or size[1] % self.size_multiple:
            raise ValueError(f"output size {size[0]}x{size[1]} is not a multiple of {self.size_multiple}; "
                             f"use Pipeline.upscale, which pads")
        level = self.settings.aug_level if aug_level is None else aug_level
        lowres = lowres.to(device)
        offset = upsample(lowres, size) if self.settings.residual else None
        augmented = noise_augment(lowres, level, self.noise_scheduler.alphas_cumprod, generator)
        cond = {"cond_image": upsample(augmented, size)}
        if self.unet.config.use_aug_level:
            cond["aug_level"] = torch.full((n,), float(level), device=device)
        consistent = self.settings.consistent if consistent is None else consistent
        project = self._projection(lowres, offset) if consistent else None
        return n, size, cond, offset, project

    def tile_geometry(self, tile_size: int, overlap: int | None) -> tuple[int, int]:
        """(tile side rounded down to `size_multiple`, overlap or the default), checked."""
        m = self.size_multiple
        tile = int(tile_size) // m * m
        if tile < m:
            raise ValueError(f"tile_size={tile_size}: must be at least {m} (tiles are multiples of {m} px)")
        overlap = self.tile_overlap() if overlap is None else int(overlap)
        if not 0 <= overlap < tile:
            raise ValueError(f"overlap={overlap}: must be in [0, tile_size) with tile_size {tile}")
        return tile, overlap

    def _projection(self, lowres: torch.Tensor, offset: torch.Tensor | None):
        """x0 in the model's space -> the nearest x0 whose image downsamples to `lowres` exactly."""
        factor, rs = self.settings.scale, self.settings.residual_scale
        if offset is None:
            return lambda x0: project_onto_lowres(x0, lowres, factor)
        return lambda x0: (project_onto_lowres(x0 / rs + offset, lowres, factor) - offset) * rs

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(folder / "unet")
        self.noise_scheduler.save_config(folder / "scheduler")
        (folder / STAGE_FILE).write_text(json.dumps(asdict(self.settings), indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> "Stage":
        folder = Path(folder)
        for needed in (STAGE_FILE, "unet/config.json", "scheduler/scheduler_config.json"):
            if not (folder / needed).is_file():
                raise CheckpointError(f"{folder}: not a cascade stage (missing {needed})")
        try:
            settings = StageSettings(**json.loads((folder / STAGE_FILE).read_text()))
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{folder / STAGE_FILE}: invalid stage settings ({e})") from None
        if settings.sampler not in SAMPLERS:
            raise CheckpointError(f"{folder / STAGE_FILE}: unknown sampler {settings.sampler!r}")
        try:
            kind = json.loads((folder / "unet" / "config.json").read_text()).get("_class_name")
        except ValueError as e:
            raise CheckpointError(f"{folder / 'unet' / 'config.json'}: not valid JSON ({e})") from None
        if kind != UNet.__name__:
            raise CheckpointError(f"{folder / 'unet' / 'config.json'}: a {kind} model, not a cascade {UNet.__name__}")
        weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
        if not weights.is_file():  # never fall back to a pickled .bin
            raise CheckpointError(f"{weights}: missing (stage weights are read from safetensors only)")
        try:
            unet = UNet.from_pretrained(folder / "unet", use_safetensors=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{folder / 'unet'}: cannot load weights ({' '.join(str(e).split())[:200]})") from None
        scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        try:
            return cls(unet.eval(), scheduler, settings)
        except ValueError as e:
            raise CheckpointError(f"{folder}: {e}") from None


class Pipeline:
    """An ordered list of stages: optionally a base stage, then upsamplers. Call it to generate."""

    def __init__(self, stages: Sequence[Stage], offload_device: torch.device | str | None = None):
        if not stages:
            raise ValueError("a Pipeline needs at least one stage")
        self.stages = list(stages)
        for i, stage in enumerate(self.stages[1:], start=1):
            if not stage.is_upsampler:
                raise ValueError(f"stage {i} is a base stage; only stage 0 may be one")
            before = self.stages[i - 1]
            if before.resolution != stage.input_resolution:
                raise ValueError(f"stage {i} upsamples {stage.input_resolution} px -> {stage.resolution} px, "
                                 f"but stage {i - 1} outputs {before.resolution} px")
        # Offload: keep every stage on the CPU and move each to this device only while it runs.
        self.offload_device = torch.device(offload_device) if offload_device is not None else None

    @property
    def base(self) -> Stage | None:
        return None if self.stages[0].is_upsampler else self.stages[0]

    @property
    def upsamplers(self) -> list[Stage]:
        return [s for s in self.stages if s.is_upsampler]

    @property
    def class_names(self) -> list[str]:
        return self.stages[0].settings.class_names

    def to(self, device: torch.device | str) -> "Pipeline":
        for stage in self.stages:
            stage.unet.to(device)
        return self

    def enable_offload(self, device: torch.device | str) -> "Pipeline":
        """Run each stage on `device` in turn, keeping the others on the CPU (for small GPUs)."""
        self.offload_device = torch.device(device)
        return self.to("cpu")

    def _run(self, stage: Stage, **kwargs) -> torch.Tensor:
        if self.offload_device is not None:
            stage.unet.to(self.offload_device)
        try:
            return stage.sample(**kwargs)
        finally:
            if self.offload_device is not None:
                stage.unet.to("cpu")

    def _cascade(self, stages: list[Stage], images: torch.Tensor | None, class_labels, num_images, generator, steps,
                 guidance_scale, progress, aug_level=None, **upsampling) -> list[torch.Tensor]:
        outputs = []
        for stage in stages:
            labels = class_labels if stage.unet.config.num_classes else None
            extra = upsampling if stage.is_upsampler else {}
            images = self._run(stage, class_labels=labels, num_images=num_images, generator=generator, steps=steps,
                               guidance_scale=guidance_scale, lowres=None if images is None else images.clamp(-1, 1),
                               aug_level=aug_level, progress=progress, **extra)
            outputs.append(images.clamp(-1, 1))
        return outputs

    def __call__(self, class_labels=None, num_images: int | None = None, generator: torch.Generator | None = None,
                 steps: int | None = None, guidance_scale: float | None = None, output_type: str = "pil",
                 return_intermediates: bool = False, progress: bool = True):
        """Generate: the base stage from `class_labels` (indices or names; or `num_images` for an
        unconditional model), then every upsampler. `steps` / `guidance_scale` override all stages.

        Returns the final images as PIL (`output_type="pil"`) or a tensor [N x 3 x H x W] in [0, 1]
        ("pt"); with `return_intermediates`, a list with every stage's output instead.
        """
        _check_output_type(output_type)
        if self.base is None:
            raise ValueError("this pipeline has no base stage; use pipe.upscale(images)")
        outputs = self._cascade(self.stages, None, class_labels, num_images, generator, steps, guidance_scale, progress)
        converted = [_convert(o, output_type) for o in outputs]
        return converted if return_intermediates else converted[-1]

    def upscale(self, images, class_labels=None, generator: torch.Generator | None = None, steps: int | None = None,
                guidance_scale: float | None = None, aug_level: float | None = None, start_at: int | None = None,
                tile_size: int | None = None, overlap: int | None = None, tile_batch: int = 8,
                consistent: bool | None = None, output_type: str = "pil", return_intermediates: bool = False,
                progress: bool = True):
        """Super-resolve the user's images with the upsamplers from `start_at` (default: the first).

        `images`: a PIL image, an HxWx3 array (uint8, or float in [0, 1]), a [3 x H x W] or
        [N x 3 x H x W] tensor in [0, 1], or a list of these; any size (inputs are padded by
        reflection to a size the UNet takes, and the output cropped back). `aug_level` overrides
        the stages' noise-augmentation level. Returns one output per input.

        Large images: `tile_size` (output pixels of each stage) denoises overlapping tiles jointly at
        every step, `tile_batch` at a time, so accelerator memory depends on the tile, not the image
        (the full-size state stays on the CPU); `overlap` defaults to each stage's measured ERF radius
        (`Stage.tile_overlap()`). `consistent` (default: each stage's setting) makes every output
        downsample exactly to its input (see `Stage.sample`).
        """
        _check_output_type(output_type)
        if not self.upsamplers:
            raise ValueError(f"this pipeline has no upsampler, only a {self.stages[0].resolution} px base stage; "
                             f"upscale with a pipeline that has an SR3 stage (e.g. runs/sr3_photos/pipeline)")
        start = start_at if start_at is not None else (1 if self.base is not None else 0)
        if not 0 <= start < len(self.stages) or not self.stages[start].is_upsampler:
            raise ValueError(f"start_at={start_at}: stage {start} is not an upsampler")
        stages = self.stages[start:]
        # Every stage's output side must be a multiple of its UNet's size_multiple: pad the input so.
        multiple, scale = 1, 1
        for stage in stages:
            scale *= stage.settings.scale
            multiple = math.lcm(multiple, stage.size_multiple // math.gcd(stage.size_multiple, scale))
        results = []
        for batch in _as_batches(images):
            n, (h, w) = batch.shape[0], batch.shape[-2:]
            outputs = self._cascade(stages, _pad_to_multiple(batch, multiple), class_labels, n, generator, steps,
                                    guidance_scale, progress, aug_level, tile_size=tile_size, overlap=overlap,
                                    tile_batch=tile_batch, consistent=consistent)
            scale, cropped = 1, []
            for stage, out in zip(stages, outputs):
                scale *= stage.settings.scale
                cropped.append(out[..., :h * scale, :w * scale])
            results.append(cropped if return_intermediates else cropped[-1:])
        per_stage = [[r[i] for r in results] for i in range(len(results[0]))]
        converted = [_convert_list(outs, output_type) for outs in per_stage]
        return converted if return_intermediates else converted[-1]

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        names = [f"stage_{i}" for i in range(len(self.stages))]
        for name, stage in zip(names, self.stages):
            stage.save_pretrained(folder / name)
        (folder / CASCADE_FILE).write_text(json.dumps({"format": "cascade", "version": 1, "stages": names}, indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: torch.device | str | None = None) -> "Pipeline":
        """Load a cascade folder (see the module docstring)."""
        return cls(_load_stages(folder)).to(device) if device is not None else cls(_load_stages(folder))

    @classmethod
    def from_stages(cls, items: Sequence[Stage | str | Path], device: torch.device | str | None = None) -> "Pipeline":
        """Assemble separately trained stages: Stage objects, stage folders or pipeline folders (all their stages)."""
        stages = []
        for item in items:
            if isinstance(item, Stage):
                stages.append(item)
            elif (Path(item) / CASCADE_FILE).is_file():
                stages.extend(_load_stages(item))
            else:
                stages.append(Stage.from_pretrained(item))
        try:
            pipe = cls(stages)
        except ValueError as e:
            raise CheckpointError(f"cannot chain {', '.join(map(str, items))}: {e}") from None
        return pipe.to(device) if device is not None else pipe


def _load_stages(folder: str | Path) -> list[Stage]:
    folder = Path(folder)
    index = folder / CASCADE_FILE
    if not index.is_file():
        raise CheckpointError(f"{folder}: not a cascade pipeline folder (missing {CASCADE_FILE})")
    try:
        names = json.loads(index.read_text())["stages"]
        assert isinstance(names, list) and names
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CheckpointError(f"{index}: invalid cascade file (expected {{'stages': [...]}})") from None
    for name in names:
        if not (folder / name).is_dir():
            raise CheckpointError(f"{folder}: stage folder {name!r} listed in {CASCADE_FILE} is missing")
    return [Stage.from_pretrained(folder / name) for name in names]


def _check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "pt"):
        raise ValueError(f"output_type={output_type!r}: use 'pil' or 'pt'")


def _convert(images: torch.Tensor, output_type: str):
    return to_pil(images) if output_type == "pil" else to_unit(images).cpu()


def _convert_list(batches: list[torch.Tensor], output_type: str):
    if output_type == "pil":
        return [img for b in batches for img in to_pil(b)]
    tensors = [to_unit(b).cpu() for b in batches]
    same = len({tuple(t.shape[-2:]) for t in tensors}) == 1
    return torch.cat(tensors) if same else [t for b in tensors for t in b]


def _as_batches(images) -> list[torch.Tensor]:
    """User images -> list of [-1, 1] tensors [n x 3 x h x w], one per distinct input."""
    if isinstance(images, (list, tuple)):
        return [b for item in images for b in _as_batches(item)]
    if isinstance(images, Image.Image):
        tensor = torch.from_numpy(np.asarray(to_rgb(images), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    elif isinstance(images, np.ndarray):
        array = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3:
            raise ValueError(f"expected an HxWx3 array, got shape {images.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    elif isinstance(images, torch.Tensor):
        tensor = images[None] if images.ndim == 3 else images
        if tensor.ndim != 4:
            raise ValueError(f"expected a [3 x H x W] or [N x 3 x H x W] tensor, got shape {tuple(images.shape)}")
        tensor = tensor.float()
    else:
        raise ValueError(f"cannot upscale a {type(images).__name__}; give PIL images, arrays or tensors")
    if tensor.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got {tensor.shape[1]} (shape {tuple(tensor.shape)})")
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0 or tensor.shape[0] == 0:
        raise ValueError(f"empty image (shape {tuple(tensor.shape)})")
    if not torch.isfinite(tensor).all():
        raise ValueError("the image contains NaN or infinite values")
    return [from_unit(tensor.clamp(0, 1))]


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
