"""The critic of an adversarial distillation (cascade.training.distill, `distill.adversarial`): a patch
discriminator that scores each 26 px window of an image as the data's or the student's.

Two 4x4 convolutions of stride 2 and two 3x3 of stride 1 (widths w, 2w, 4w, 1) with leaky ReLUs and spectral normalisation on
every weight (Miyato et al. 2018), no normalisation layer: a pix2pix/PatchGAN-shaped critic (Isola et al.
2017) whose layers are kept near 1-Lipschitz (one power iteration a step), so the hinge loss needs no gradient
penalty. Conditional stages give it
their conditioning image beside the sample (channels concatenated), so it judges the detail given the input,
not the detail alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchCritic(nn.Module):
    """Patch logits [N x 1 x H/4 x W/4] of images [N x in_channels x H x W] (H, W >= 4)."""

    def __init__(self, in_channels: int, width: int = 64):
        super().__init__()
        widths = [in_channels, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for i, (kernel, stride) in enumerate(((4, 2), (4, 2), (3, 1))):
            layers += [spectral_norm(nn.Conv2d(widths[i], widths[i + 1], kernel, stride, 1)), nn.LeakyReLU(0.2)]
        layers.append(spectral_norm(nn.Conv2d(widths[-1], 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"the critic takes {self.in_channels} channels, got {x.shape[1]}")
        return self.net(x)
