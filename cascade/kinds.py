"""Stage kinds: what a stage's model is conditioned on and what it generates, written once.

Training (`StageKind.loss`), sampling (`Stage.sample`), tiling (`spatial`) and the effective
receptive field (`erf_inputs`) all ask the stage's kind; nothing else in the project knows about
low-res images, residuals or augmentation levels. A kind is a frozen dataclass, saved in stage.json
as {"name": ..., **fields}; every subclass with a `name` is registered in KINDS when it is defined.

- `Base`: generates from noise (class-conditional when the UNet has classes): CDM's base model.
- `SR3`: generates a `scale`-times larger image conditioned on a low-res one, upsampled bicubically
  and concatenated to x_t (Saharia et al. 2021). The low-res input is corrupted by CDM's
  conditioning augmentation (Ho et al. 2021, section 3): in training, blur with probability
  `blur_prob` and noise at a level s ~ U[0, noise_aug_max]; at sampling, noise at a fixed level;
  the UNet is told s (`aug_level`). `residual`: the model generates
  (HR - upsample(LR)) * residual_scale, which sampling divides and adds back (SRDiff).
- `LabelMap` / `LabelSR3`: the same two conditioned on a semantic label map as well (pix2pixHD's job;
  SDM), resized nearest to the stage's output size; see "Label-map kinds" below.
- `Scene` / `OneShotSR3`: a cascade trained on one image (OUR-GAN's and SinGAN's job; SinDDM): the
  whole picture at a coarse size, then upsamplers; see "One-shot kinds" below.

A new kind is a subclass here or in the user's own code (see tests/test_kinds.py): a `name`,
`takes_input`, `cond_channels`, `source_from`, `training_inputs` and `sampling_inputs`; `spatial`
names the conditioning entries that are images of the output's size, which tiles crop.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Callable, ClassVar

import torch
from PIL import Image

from . import augment, diffusion, label_maps, rng, sampling
from .images import signed_grid
from .resize import downsample, project_onto_lowres, upsample

KINDS: dict[str, type["StageKind"]] = {}


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


@dataclass
class Conditioning:
    """A batch's sampling inputs, as a kind builds them for `Stage.sample`."""

    size: tuple[int, int]  # output H, W
    cond: dict  # model inputs besides x_t, t and class labels (e.g. cond_image, aug_level)
    finish: Callable[[torch.Tensor], torch.Tensor] = _identity  # sampler output (model space) -> image
    project: Callable[[torch.Tensor], torch.Tensor] | None = None  # x0 -> nearest x0 consistent with the input
    start: Callable[[torch.Tensor], torch.Tensor] = _identity  # image -> model space (finish's inverse)


@dataclass(frozen=True)
class StageKind:
    """The interface of a kind (subclasses are frozen dataclasses whose fields are saved)."""

    name: ClassVar[str] = ""
    takes_input: ClassVar[bool] = False  # conditioned on an image: the previous stage's output or a user's
    spatial: ClassVar[tuple[str, ...]] = ()  # conditioning entries [N x C x H x W] at the output size
    scale: ClassVar[int] = 1  # output side / input side (kinds with an input may make it a field)
    uses_label_maps: ClassVar[bool] = False  # conditioned on a semantic label map (cascade.label_maps)
    any_size: ClassVar[bool] = False  # samples at any size (trained on crops): chains skip the training-size check
    iterative: ClassVar[bool] = True  # sampled by a diffusion sampler (False: one network evaluation, `generate`)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            KINDS[cls.name] = cls

    @property
    def clip_sample(self) -> bool:
        """Whether DDPM/DDIM may clip the model-space x0 estimate to [-1, 1]."""
        return True

    def cond_channels(self, in_channels: int) -> int:
        """Channels of `cond_image` for a UNet generating `in_channels` channels."""
        return 0

    def source_from(self, image: torch.Tensor) -> torch.Tensor:
        """The clean input this kind is trained to turn into `image` [N x C x H x W] (input kinds)."""
        raise NotImplementedError(f"stage kind {self.name!r} takes no input")

    def training_inputs(self, config, image: torch.Tensor, alphas_cumprod: torch.Tensor,
                        generators: rng.Generators) -> tuple[torch.Tensor, dict]:
        """(what the model generates [N x C x H x W], its conditioning) for training images in [-1, 1];
        `config` is the UNet's config. Class labels are added by `loss`."""
        raise NotImplementedError

    def sampling_inputs(self, stage, source: torch.Tensor | None, settings, generators: rng.Generators,
                        device: torch.device) -> Conditioning:
        """The conditioning of a batch: `source` [N x C x h x w] in [-1, 1] for input kinds, else None."""
        raise NotImplementedError

    def noisy_source(self, stage, source: torch.Tensor, settings, generators: rng.Generators) -> torch.Tensor:
        """The random part of an input kind's conditioning (SR3: noise augmentation of the input), kept
        apart so that the streamed upscaler (cascade.streaming) draws it once per band of the input."""
        return source

    def conditioning(self, stage, source: torch.Tensor, noisy: torch.Tensor, settings, device) -> Conditioning:
        """The deterministic part: the conditioning of `source` and its `noisy_source`. It must be local
        (a window of the input gives the same values as the whole input, away from the window's
        edges), so the streamed upscaler can build it tile by tile."""
        raise NotImplementedError(f"stage kind {self.name!r} cannot be streamed (no `conditioning`)")

    def generate(self, denoiser, scheduler, shape: tuple[int, ...], steps: int, generators: rng.Generators, device,
                 progress: bool, init: torch.Tensor | None, strength: float, cond: dict) -> torch.Tensor:
        """The model-space output of a batch: `steps` steps of the diffusion sampler `scheduler`."""
        return sampling.sample(denoiser, scheduler, shape, steps, generator=generators, device=device,
                               progress=progress, init=init, strength=strength, **cond)

    def erf_inputs(self, config, size: int, generator: torch.Generator, device) -> dict:
        """Conditioning for measuring the ERF at size x size: random images for the `spatial`
        entries (the ERF takes gradients with respect to them too), neutral values for the rest."""
        cond = {key: torch.randn(1, self.cond_channels(config.in_channels), size, size, generator=generator).to(device)
                for key in self.spatial}
        if config.use_aug_level:
            cond["aug_level"] = torch.zeros(1, device=device)
        return cond

    def loss(self, model, config, scheduler, batch: dict, label_dropout: float) -> torch.Tensor:
        """The training loss of a batch {"image", "label", "seed"}; every random draw from the
        example's own generator (cascade.rng). `config` is the (unwrapped) UNet's config."""
        generators = rng.example_generators(batch["seed"])
        x0, cond = self.training_inputs(config, batch["image"], scheduler.alphas_cumprod, generators)
        cond.update(self.batch_conditioning(config, batch, label_dropout, generators))
        return diffusion.training_loss(model, scheduler, x0, generators, **cond)

    def batch_conditioning(self, config, batch: dict, label_dropout: float, generators) -> dict:
        """The conditioning a training batch carries besides its image: class labels, dropped at random
        to the null class for classifier-free guidance."""
        if not config.num_classes:
            return {}
        return {"class_labels": diffusion.drop_labels(batch["label"], config.num_classes, label_dropout, generators)}

    def with_label_maps(self, stage, inputs: Conditioning, label_map, instances, device) -> Conditioning:
        """`inputs` with a label map's conditioning added (label-map kinds only)."""
        if label_map is not None or instances is not None:
            raise ValueError(f"a {self.name} stage takes no label map")
        return inputs

    def at_size(self, stage, inputs: Conditioning, size: tuple[int, int], device) -> Conditioning:
        """`inputs` for an output of `size` (H, W) other than the training size (kinds without an input
        that generate at any size, e.g. the one-shot `Scene`)."""
        raise ValueError(f"a {self.name} stage generates at its training size; size= applies to scene stages")

    def preview(self, stage, images: torch.Tensor, per_row: int) -> Image.Image:
        """A training preview from the EMA stage: input kinds draw rows of (input | sample | truth) for
        the held-out `images`; the others a row of `per_row` samples per class, same seeds each time."""
        if self.takes_input:
            source = self.source_from(images)
            out = stage.sample(source.to(stage.device), seed=0, progress=False).cpu().clamp(-1, 1)
            shown = torch.nn.functional.interpolate(source, size=images.shape[-2:], mode="nearest")
            if shown.shape[1] != images.shape[1]:
                shown = shown.expand(-1, images.shape[1], -1, -1)
            return signed_grid(torch.stack([shown, out, images], dim=1).flatten(0, 1), nrow=3)
        classes = range(stage.unet.config.num_classes) if stage.unet.config.num_classes else [None] * 4
        rows = [stage.sample(class_labels=None if c is None else [c] * per_row, num_images=per_row, seed=0,
                             progress=False) for c in classes]
        return signed_grid(torch.cat(rows), nrow=per_row)

    def to_dict(self) -> dict:
        return {"name": self.name, **asdict(self)}

    @staticmethod
    def from_dict(data: dict) -> "StageKind":
        """The kind saved as `data` (ValueError names an unknown kind or field)."""
        data = dict(data)
        name = data.pop("name", None)
        if name not in KINDS:
            raise ValueError(f"unknown stage kind {name!r} (known: {', '.join(KINDS)}; a kind defined in your "
                             f"own code must be imported before loading)")
        cls = KINDS[name]
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"stage kind {name!r} has no field {unknown[0]!r}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})  # JSON lists -> tuples


@dataclass(frozen=True)
class Base(StageKind):
    """Generates from noise; class labels (if the UNet has classes) are its only conditioning."""

    name: ClassVar[str] = "base"

    def training_inputs(self, config, image, alphas_cumprod, generators):
        return image, {}

    def sampling_inputs(self, stage, source, settings, generators, device):
        if source is not None:
            raise ValueError("a base stage takes no input image")
        if settings.consistent:
            raise ValueError("consistent applies to stages that take an input image")
        return Conditioning((stage.resolution, stage.resolution), {})

    def at_size(self, stage, inputs, size, device):
        """The UNet is fully convolutional: at another size it draws its training statistics over a
        larger (or smaller) field (used by generative-prior SR, cascade.one_shot.prior_upscale)."""
        m = stage.size_multiple
        if size[0] < m or size[1] < m or size[0] % m or size[1] % m:
            raise ValueError(f"size {size[1]}x{size[0]} must be positive multiples of {m}")
        return replace(inputs, size=(int(size[0]), int(size[1])))


@dataclass(frozen=True)
class SR3(StageKind):
    """An upsampler from size/scale to size, with CDM's conditioning augmentation (module docstring)."""

    name: ClassVar[str] = "sr3"
    takes_input: ClassVar[bool] = True
    spatial: ClassVar[tuple[str, ...]] = ("cond_image",)

    scale: int = 2  # output side / input side
    residual: bool = False  # the model generates (HR - upsample(LR)) * residual_scale
    residual_scale: float = 1.0
    noise_aug_max: float = 0.2  # training: noise level s ~ U[0, noise_aug_max]
    blur_prob: float = 0.5  # training: blur probability ...
    blur_sigma: tuple[float, float] = field(default=(0.4, 0.6))  # ... with sigma ~ U[this range], low-res px

    @classmethod
    def from_config(cls, sr) -> "SR3":
        """From an `SRConfig` (configs' `sr:` section)."""
        return cls(sr.scale, sr.residual, sr.residual_scale if sr.residual else 1.0, sr.noise_aug_max, sr.blur_prob,
                   tuple(sr.blur_sigma))

    @property
    def clip_sample(self) -> bool:
        return not self.residual  # a scaled residual may leave [-1, 1]

    def cond_channels(self, in_channels: int) -> int:
        return in_channels

    def source_from(self, image):
        return downsample(image, self.scale)

    def condition(self, config, augmented: torch.Tensor, level: torch.Tensor, size) -> dict:
        """The UNet's conditioning, the same in training and sampling: the augmented low-res image
        upsampled to the output size, and its augmentation level if the UNet embeds one."""
        cond = {"cond_image": upsample(augmented, size)}
        if config.use_aug_level:
            cond["aug_level"] = level
        return cond

    def training_inputs(self, config, image, alphas_cumprod, generators):
        size = image.shape[-2:]
        augmented, level = augment.training_lowres(image, self.scale, self.noise_aug_max, self.blur_prob,
                                                   self.blur_sigma, alphas_cumprod, generators)
        # Residual stages learn only what bicubic upsampling of the clean input misses.
        target = (image - upsample(self.source_from(image), size)) * self.residual_scale if self.residual else image
        return target, self.condition(config, augmented, level, size)

    def sampling_inputs(self, stage, source, settings, generators, device):
        if source is None:
            raise ValueError("an upsampler stage needs an input image (`source`)")
        h, w = source.shape[-2:]
        if (h * self.scale) % stage.size_multiple or (w * self.scale) % stage.size_multiple:
            raise ValueError(f"output size {h * self.scale}x{w * self.scale} is not a multiple of "
                             f"{stage.size_multiple}; use Pipeline.upscale, which pads")
        source = source.to(device)
        return self.conditioning(stage, source, self.noisy_source(stage, source, settings, generators), settings,
                                 device)

    def noisy_source(self, stage, source, settings, generators):
        return augment.noise_augment(source, settings.aug_level, stage.noise_scheduler.alphas_cumprod, generators)

    def conditioning(self, stage, source, noisy, settings, device):
        n, (h, w) = source.shape[0], source.shape[-2:]
        size = (h * self.scale, w * self.scale)
        source, noisy = source.to(device), noisy.to(device)
        cond = self.condition(stage.unet.config, noisy, torch.full((n,), float(settings.aug_level), device=device),
                              size)
        offset = upsample(source, size) if self.residual else None
        finish = _identity if offset is None else (lambda x: x / self.residual_scale + offset)
        start = _identity if offset is None else (lambda x: (x - offset) * self.residual_scale)
        project = self._projection(source, offset) if settings.consistent else None
        return Conditioning(size, cond, finish, project=project, start=start)

    def _projection(self, lowres: torch.Tensor, offset: torch.Tensor | None):
        """x0 in the model's space -> the nearest x0 whose image downsamples to `lowres` exactly."""
        if offset is None:
            return lambda x0: project_onto_lowres(x0, lowres, self.scale)
        rs = self.residual_scale
        return lambda x0: (project_onto_lowres(x0 / rs + offset, lowres, self.scale) - offset) * rs


@dataclass(frozen=True)
class Regression(SR3):
    """SR3's regression baseline (Saharia et al. 2021, table 2): the same UNet and conditioning as SR3
    (augmentation and residual included), trained with an L2 loss to output the high-res image (or
    the scaled residual) in one evaluation. Its x_t input is zeros and its timestep 0, fixed, so it
    is a plain conditional network; sampling settings (sampler, steps) do not apply. It wins PSNR and
    SSIM, paints no texture and keeps less detail than a diffusion upsampler (docs/studies.md): the
    classic fast baseline. It tiles in memory; streamed (giant) upscaling refuses it."""

    name: ClassVar[str] = "regression"
    iterative: ClassVar[bool] = False

    @staticmethod
    def predict(model, cond_image: torch.Tensor, **cond) -> torch.Tensor:
        """The network's output for the conditioning alone (the same call in training and sampling)."""
        return model(torch.zeros_like(cond_image), torch.tensor(0, device=cond_image.device), cond_image=cond_image,
                     **cond)

    def loss(self, model, config, scheduler, batch, label_dropout):
        generators = rng.example_generators(batch["seed"])
        target, cond = self.training_inputs(config, batch["image"], scheduler.alphas_cumprod, generators)
        cond.update(self.batch_conditioning(config, batch, label_dropout, generators))
        return torch.nn.functional.mse_loss(self.predict(model, **cond).float(), target.float())

    def generate(self, denoiser, scheduler, shape, steps, generators, device, progress, init, strength, cond):
        if init is not None:
            raise ValueError("a regression stage has no noise to edit from: init/strength (SDEdit) do not apply")
        out = self.predict(denoiser, **cond)
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"regression output {tuple(out.shape)} differs from the expected {tuple(shape)}")
        return out


# --------------------------------------------------------------------------------------------------
# Label-map kinds (pix2pixHD's task with a cascade; SDM, Wang et al. 2022)
#
# The label map conditions every stage at that stage's output size (resized nearest, so no new IDs
# appear): the UNet embeds each pixel's ID (cascade.unet, `label_map`) and, with `use_instances`, sees
# pix2pixHD's instance-boundary map as one more channel. Training replaces an example's whole map by
# the learned null map with probability `train.label_dropout`, so guidance on the map works at
# sampling (`guidance_scale`, per stage). Upsamplers keep SR3's low-res conditioning and CDM's
# augmentation. Tiles crop the label map with the image (both are `spatial`).


@dataclass(frozen=True)
class LabelMaps:
    """What the label-map kinds share: the map's meaning and the conditioning built from it."""

    uses_label_maps: ClassVar[bool] = True
    any_size: ClassVar[bool] = True  # label-map stages sample at the map's size
    label_names: tuple[str, ...] = ()  # one per ID (for previews and reports)
    ignore_id: int | None = None  # the data's "unlabelled" ID, read as the null map

    def label_conditioning(self, config, label_map: torch.Tensor | None, instances: torch.Tensor | None,
                           size: tuple[int, int], device) -> dict:
        """The UNet's label inputs at `size`, the same in training and sampling: IDs resized nearest
        (None: the null map), and the boundary map of the resized instances (None: no boundaries)."""
        n = None if label_map is None else label_map.shape[0]
        if label_map is None:
            label_map = torch.full((1, 1, *size), config.num_labels, dtype=torch.long)
        cond = {"label_map": label_maps.resize(label_map, size).to(device)}
        if config.use_instances:
            cond["boundary"] = (torch.zeros(n or 1, 1, *size, device=device) if instances is None
                                else label_maps.boundaries(label_maps.resize(instances, size)).to(device))
        return cond

    def batch_conditioning(self, config, batch, label_dropout, generators):
        cond = super().batch_conditioning(config, batch, label_dropout, generators)
        size = tuple(batch["image"].shape[-2:])
        maps = self.label_conditioning(config, batch["label_map"], batch.get("instances"), size, batch["image"].device)
        maps["label_map"], dropped = label_maps.drop(maps["label_map"], config.num_labels, label_dropout, generators)
        if "boundary" in maps:  # a dropped map drops its boundaries too
            maps["boundary"] = maps["boundary"] * ~dropped.view(-1, 1, 1, 1)
        return {**cond, **maps}

    def with_label_maps(self, stage, inputs, label_map, instances, device):
        config = stage.unet.config
        size = inputs.size if self.takes_input or label_map is None else tuple(label_map.shape[-2:])
        if not self.takes_input and (size[0] % stage.size_multiple or size[1] % stage.size_multiple):
            raise ValueError(f"label map size {size[1]}x{size[0]} is not a multiple of {stage.size_multiple}; "
                             f"use the Pipeline, which pads")
        if label_map is not None:
            label_map = label_maps.checked(label_map, config.num_labels, self.ignore_id, "label map", allow_null=True)
        if instances is not None and label_map is not None and instances.shape[-2:] != label_map.shape[-2:]:
            raise ValueError(f"instance map {tuple(instances.shape[-2:])} and label map "
                             f"{tuple(label_map.shape[-2:])} differ in size")
        cond = self.label_conditioning(config, label_map, instances, size, device)
        return replace(inputs, size=size, cond={**inputs.cond, **cond})

    def erf_inputs(self, config, size, generator, device):
        cond = {k: v for k, v in super().erf_inputs(config, size, generator, device).items()
                if k not in ("label_map", "boundary")}
        # Piecewise constant, as label maps are: random IDs on an 8 x 8 grid of blocks.
        blocks = torch.randint(0, config.num_labels, (1, 1, 8, 8), generator=generator)
        cond["label_map"] = label_maps.resize(blocks, (size, size)).to(device)
        if config.use_instances:
            cond["boundary"] = label_maps.boundaries(cond["label_map"]).to(device)
        return cond

    def preview(self, stage, held_out: dict, per_row: int) -> Image.Image:
        """Rows of (label map | sample | truth) for held-out pairs {"image", "label_map", "instances"}."""
        images, maps = held_out["image"], held_out["label_map"]
        source = self.source_from(images).to(stage.device) if self.takes_input else None
        out = stage.sample(source, label_map=maps, instances=held_out.get("instances"), seed=0,
                           progress=False).cpu().clamp(-1, 1)
        shown = label_maps.colourise(maps, stage.unet.config.num_labels)
        return signed_grid(torch.stack([shown, out, images], dim=1).flatten(0, 1), nrow=3)


@dataclass(frozen=True)
class LabelMap(LabelMaps, Base):
    """A base stage conditioned on a label map: generates an image of the map's size."""

    name: ClassVar[str] = "label_map"
    spatial: ClassVar[tuple[str, ...]] = ("label_map", "boundary")


@dataclass(frozen=True)
class LabelSR3(LabelMaps, SR3):
    """An SR3 upsampler (CDM's augmentation of the low-res input) also conditioned on the label map."""

    name: ClassVar[str] = "label_sr3"
    spatial: ClassVar[tuple[str, ...]] = ("cond_image", "label_map", "boundary")

    @classmethod
    def from_config(cls, sr, labels=None) -> "LabelSR3":
        base = SR3.from_config(sr)
        names = tuple(labels.names) if labels is not None else ()
        return cls(**{f.name: getattr(base, f.name) for f in fields(SR3)}, label_names=names,
                   ignore_id=labels.ignore_id if labels is not None else None)


def label_kind(cfg) -> StageKind:
    """The kind of a `LabelStageConfig`: an upsampler when it has an `sr` section, else a base stage."""
    if cfg.sr is not None:
        return LabelSR3.from_config(cfg.sr, cfg.labels)
    return LabelMap(tuple(cfg.labels.names), cfg.labels.ignore_id)


# --------------------------------------------------------------------------------------------------
# One-shot kinds (OUR-GAN, ConSinGAN, SinDDM: a cascade trained on a single image; cascade.one_shot)
#
# The scene stage generates the whole picture at a coarse size. It is trained on random crops of the
# training image at that size (with scale jitter), and its denoiser is fully convolutional with a
# receptive field smaller than the picture, so a sample is a new arrangement of the image's parts, of
# any size (SinGAN's arbitrary-size generation). `positional` adds OUR-GAN's vertical positional
# embedding: one input channel holding each row's height in the picture, so structure stays where it
# is in the image (sky up, ground down) while the horizontal arrangement is free. The upsamplers are
# SR3 stages trained on crops of the same image at their scales.


def row_positions(top: torch.Tensor, rows: int, height: torch.Tensor) -> torch.Tensor:
    """The vertical position of `rows` rows starting at `top` in a picture `height` rows tall, in
    [-1, 1] (pixel centres; -1 is the top edge): [N] x3 -> [N x rows]."""
    index = torch.arange(rows, dtype=torch.float32)
    return ((top.view(-1, 1).float() + index + 0.5) / height.view(-1, 1).float()) * 2 - 1


@dataclass(frozen=True)
class Scene(StageKind):
    """A one-shot scene stage: generates a whole picture like the training image at a coarse size."""

    name: ClassVar[str] = "scene"
    any_size: ClassVar[bool] = True

    size: tuple[int, int] = (48, 64)  # (H, W) of the training image at this stage's scale: the default output
    positional: bool = True  # OUR-GAN's vertical positional embedding (one input channel)

    def cond_channels(self, in_channels: int) -> int:
        return 1 if self.positional else 0

    def position(self, rows: torch.Tensor, width: int) -> torch.Tensor:
        """The positional channel [N x 1 x H x width] of rows' positions [N x H] (see `row_positions`)."""
        return rows.view(rows.shape[0], 1, -1, 1).expand(-1, -1, -1, width)

    def training_inputs(self, config, image, alphas_cumprod, generators):
        return image, {}

    def batch_conditioning(self, config, batch, label_dropout, generators):
        cond = super().batch_conditioning(config, batch, label_dropout, generators)
        if self.positional:  # the crop's rows, where they are in the (scale-jittered) picture
            cond["cond_image"] = self.position(batch["rows"].to(batch["image"].device), batch["image"].shape[-1])
        return cond

    def sampling_inputs(self, stage, source, settings, generators, device):
        if source is not None:
            raise ValueError("a scene stage takes no input image")
        if settings.consistent:
            raise ValueError("consistent applies to stages that take an input image")
        return self.at_size(stage, Conditioning(tuple(self.size), {}), tuple(self.size), device)

    def at_size(self, stage, inputs, size, device):
        h, w = int(size[0]), int(size[1])
        m = stage.size_multiple
        if h < m or w < m or h % m or w % m:
            raise ValueError(f"scene size {w}x{h} must be positive multiples of {m}")
        cond = dict(inputs.cond)
        if self.positional:  # the picture spans [-1, 1] vertically at any height
            rows = row_positions(torch.zeros(1), h, torch.tensor([float(h)]))
            cond["cond_image"] = self.position(rows, w).to(device)
        return replace(inputs, size=(h, w), cond=cond)

    def erf_inputs(self, config, size, generator, device):
        cond = {}
        if self.positional:
            rows = row_positions(torch.zeros(1), size, torch.tensor([float(size)]))
            cond["cond_image"] = self.position(rows, size).to(device)
        return cond

    def preview(self, stage, images, per_row):
        """The training image at the scene's size, then `per_row` samples (same seeds each time)."""
        samples = stage.sample(num_images=per_row, seed=0, progress=False).cpu().clamp(-1, 1)
        return signed_grid(torch.cat([images[:1].to(samples), samples]), nrow=per_row + 1)


@dataclass(frozen=True)
class OneShotSR3(SR3):
    """An SR3 upsampler trained on crops of one image at a range of scales. It may follow any stage,
    itself included: the one-shot cascade repeats its last upsampler beyond the training image's size."""

    name: ClassVar[str] = "one_shot_sr3"
    any_size: ClassVar[bool] = True
