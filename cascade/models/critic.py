"""The critic of an adversarial distillation (cascade.training.distill, `distill.adversarial`): a patch
discriminator that scores each 26 px window of an image as the data's or the student's, and what it is shown.

Two 4x4 convolutions of stride 2 and two 3x3 of stride 1 (widths w, 2w, 4w, 1) with leaky ReLUs and spectral
normalisation on every weight (Miyato et al. 2018), no normalisation layer: a pix2pix/PatchGAN-shaped critic
(Isola et al. 2017) whose layers are kept near 1-Lipschitz (one power iteration a step), so the hinge loss needs
no gradient penalty. It sees a sample beside what the stage is conditioned on (`critic_condition`: an upsampler's
input, a scene's row positions, a label map one-hot), so it judges the detail given the input, not alone. A
class-conditional stage's critic is told the class by projection (Miyato & Koyama 2018): each patch's logit gains
the inner product of its last features with a learned (spectrally normalised) embedding of the class, so a sample
that looks real but not of its class scores low; a class-free critic has no such parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchCritic(nn.Module):
    """Patch logits [N x 1 x H/4 x W/4] of images [N x in_channels x H x W] (H, W >= 4), given their classes
    [N] (long, in [0, num_classes]; num_classes is the null class) where `num_classes` > 0."""

    def __init__(self, in_channels: int, width: int = 64, num_classes: int = 0):
        super().__init__()
        widths = [in_channels, width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        for i, (kernel, stride) in enumerate(((4, 2), (4, 2), (3, 1))):
            layers += [spectral_norm(nn.Conv2d(widths[i], widths[i + 1], kernel, stride, 1)), nn.LeakyReLU(0.2)]
        layers.append(spectral_norm(nn.Conv2d(widths[-1], 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)
        self.in_channels, self.num_classes = in_channels, num_classes
        self.class_embed = spectral_norm(nn.Embedding(num_classes + 1, widths[-1])) if num_classes else None

    def forward(self, x: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[1] != self.in_channels:
            raise ValueError(f"the critic takes {self.in_channels} channels, got {x.shape[1]}")
        if (class_labels is None) != (self.class_embed is None):
            raise ValueError(f"a critic built with num_classes={self.num_classes} was called "
                             f"{'without' if class_labels is None else 'with'} class labels")
        features = self.net[:-1](x)
        logits = self.net[-1](features)
        if self.class_embed is None:
            return logits
        projection = (self.class_embed(class_labels.to(x.device))[:, :, None, None] * features).sum(1, keepdim=True)
        return logits + projection


def critic_condition(cond: dict, num_labels: int) -> torch.Tensor | None:
    """What the critic is given beside a sample: the stage's conditioning image (an upsampler's upsampled input,
    a scene's row positions) and its label map one-hot (num_labels + 1 channels, the last the null label), where
    it has them; None for a stage with neither (a class-conditional base: its critic judges the image alone)."""
    parts = [cond["cond_image"]] if cond.get("cond_image") is not None else []
    if cond.get("label_map") is not None:
        parts.append(F.one_hot(cond["label_map"][:, 0].long(), num_labels + 1).permute(0, 3, 1, 2).float())
    return torch.cat(parts, 1) if parts else None


def critic_input(x: torch.Tensor, given: torch.Tensor | None) -> torch.Tensor:
    """What the critic judges: the stage's output space (a residual stage's scaled residual), with what the
    stage is conditioned on beside it (`critic_condition`)."""
    return x if given is None else torch.cat([x, given.to(x.dtype)], 1)


def make_critic(teacher, lr: float):
    """The critic of an adversarial student of `teacher` (a Stage) and its optimizer (AdamW, betas (0.5, 0.999),
    as GANs train theirs)."""
    config = teacher.unet.config
    given = config.cond_channels + (config.num_labels + 1 if config.num_labels else 0)  # as critic_condition
    critic = PatchCritic(config.out_channels + given, num_classes=config.num_classes)
    return critic, torch.optim.AdamW(critic.parameters(), lr=lr, betas=(0.5, 0.999), weight_decay=0.0)
