"""One-shot kinds (OUR-GAN, ConSinGAN, SinDDM: a cascade trained on a single image; cascade.inference.one_shot).

`Scene` generates the whole picture at a coarse size. It is trained on random crops of the training
image at that size (with scale jitter), with a fully convolutional denoiser, so a sample is a new
arrangement of the image's parts, of any size (SinGAN's arbitrary-size generation). `positional`
adds OUR-GAN's vertical positional embedding: one input channel holding each row's height in the
picture, so structure stays where it is in the image (sky up, ground down) while the horizontal
arrangement is free. `OneShotSR3` upsamplers are SR3 stages trained on crops of the same image at
their scales, and chain after any stage, themselves included.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from ..data.one_image import row_positions
from ..io.images import signed_grid
from .base import Conditioning, StageKind
from .sr3 import SR3


@dataclass(frozen=True)
class Scene(StageKind):
    """A one-shot scene stage: generates a whole picture like the training image at a coarse size."""

    name: ClassVar[str] = "scene"
    any_size: ClassVar[bool] = True
    spatial: ClassVar[tuple[str, ...]] = ("cond_image",)  # the positional channel: an image of the output's size

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
