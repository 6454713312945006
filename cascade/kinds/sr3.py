"""SR3 upsamplers (Saharia et al. 2021) with CDM's conditioning augmentation (Ho et al. 2021, section 3),
and SR3's one-step regression baseline.

`SR3` generates a `scale`-times larger image conditioned on a low-res one, upsampled bicubically
and concatenated to x_t. The low-res input is corrupted by CDM's conditioning augmentation: in
training, blur with probability `blur_prob` and noise at a level s ~ U[0, noise_aug_max]; at
sampling, noise at a fixed level; the UNet is told s (`aug_level`). `residual`: the model generates
(HR - upsample(LR)) * residual_scale, which sampling divides and adds back (SRDiff, Li et al. 2022).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from ..diffusion import augment, rng
from ..diffusion.resize import downsample, project_onto_lowres, upsample
from .base import Conditioning, StageKind, _identity


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

    def generate(self, denoiser, scheduler, shape, steps, generators, device, progress, init, strength, cond,
                 resample=1):
        if init is not None:
            raise ValueError("a regression stage has no noise to edit from: init/strength (SDEdit) do not apply")
        out = self.predict(denoiser, **cond)
        if tuple(out.shape) != tuple(shape):
            raise ValueError(f"regression output {tuple(out.shape)} differs from the expected {tuple(shape)}")
        return out
