"""The stage-kind interface (`StageKind`), the conditioning a kind builds for sampling (`Conditioning`),
the registry of kinds (`KINDS`), and `Base`: CDM's base model, generating from noise.

Training (`StageKind.loss`), sampling (`Stage.sample`), tiling (`spatial`) and the effective
receptive field (`erf_inputs`) all ask the stage's kind; nothing else in the project knows about
low-res images, residuals or augmentation levels. A kind is a frozen dataclass, saved in stage.json
as {"name": ..., **fields}; every subclass with a `name` is registered in KINDS when it is defined.

The kinds (one module each in cascade/kinds/):
- `Base` (here): generates from noise (class-conditional when the UNet has classes).
- `SR3`, `Regression` (sr3.py): upsamplers conditioned on a low-res image, with CDM's conditioning
  augmentation; SR3's one-step regression baseline.
- `LabelMap`, `LabelSR3` (labels.py): the same conditioned on a semantic label map as well.
- `Scene`, `OneShotSR3` (one_shot.py): a cascade trained on one image.

A new kind is a subclass in the user's own code (see tests/test_kinds.py): a `name`, `takes_input`,
`cond_channels`, `source_from`, `training_inputs` and `sampling_inputs`; `spatial` names the
conditioning entries that are images of the output's size, which tiles crop (and which a batch of
one broadcasts to every image).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, ClassVar

import torch
from PIL import Image

from ..diffusion import rng, sampling, schedule
from ..io.images import signed_grid

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
    uses_label_maps: ClassVar[bool] = False  # conditioned on a semantic label map (cascade.data.label_maps)
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
        apart so that the streamed upscaler (cascade.inference.streamed.engine) draws it once per band of the input."""
        return source

    def conditioning(self, stage, source: torch.Tensor, noisy: torch.Tensor, settings, device) -> Conditioning:
        """The deterministic part: the conditioning of `source` and its `noisy_source`. It must be local
        (a window of the input gives the same values as the whole input, away from the window's
        edges), so the streamed upscaler can build it tile by tile."""
        raise NotImplementedError(f"stage kind {self.name!r} cannot be streamed (no `conditioning`)")

    def generate(self, denoiser, scheduler, shape: tuple[int, ...], steps: int, generators: rng.Generators, device,
                 progress: bool, init: torch.Tensor | None, strength: float, cond: dict, resample: int = 1
                 ) -> torch.Tensor:
        """The model-space output of a batch: `steps` steps of the diffusion sampler `scheduler`, each done
        `resample` times (RePaint, for masked edits: cascade.diffusion.sampling.sample)."""
        return sampling.sample(denoiser, scheduler, shape, steps, generator=generators, device=device,
                               progress=progress, init=init, strength=strength, resample=resample, **cond)

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
        example's own generator (cascade.diffusion.rng). `config` is the (unwrapped) UNet's config."""
        generators = rng.example_generators(batch["seed"])
        x0, cond = self.training_inputs(config, batch["image"], scheduler.alphas_cumprod, generators)
        cond.update(self.batch_conditioning(config, batch, label_dropout, generators))
        return schedule.training_loss(model, scheduler, x0, generators, **cond)

    def batch_conditioning(self, config, batch: dict, label_dropout: float, generators) -> dict:
        """The conditioning a training batch carries besides its image: class labels, dropped at random
        to the null class for classifier-free guidance."""
        if not config.num_classes:
            return {}
        return {"class_labels": schedule.drop_labels(batch["label"], config.num_classes, label_dropout, generators)}

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
