"""A small semantic segmenter for scoring label-map synthesis (pix2pixHD's and SDM's protocol).

The protocol: segment the generated images with a network trained on real images, and compare its
prediction with the label map the images were generated from (mIoU, pixel accuracy). The same
network on real held-out images gives the upper bound. pix2pixHD used PSPNet and SDM DRN/UperNet;
at our scale a small fully-convolutional net written here does the job: a stride-2 stem, residual
blocks with growing dilation (context without losing resolution, as DRN does), a 1x1 head,
bilinear upsampling of the logits to the input size. Saved like the UNet (safetensors + config.json).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..io.images import uint8_to_signed
from .classifier import fit_batches
from .weights import Model


class DilatedBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=dilation,
                                                                     dilation=dilation, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(channels), nn.Conv2d(channels, channels, 3, padding=1, bias=False)

    def forward(self, x):
        return x + self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class Segmenter(Model):
    """[N x 3 x H x W] in [-1, 1] -> per-pixel logits [N x num_labels x H x W]."""

    @register_to_config
    def __init__(self, num_labels: int, width: int = 48, dilations: tuple[int, ...] = (1, 2, 4, 8, 1),
                 label_names: list[str] | None = None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, 1, 1, bias=False))
        self.blocks = nn.Sequential(*(DilatedBlock(width, d) for d in dilations))
        self.norm = nn.BatchNorm2d(width)
        self.head = nn.Conv2d(width, num_labels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.head(F.relu(self.norm(self.blocks(self.stem(x)))))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


def train_segmenter(model: Segmenter, images: torch.Tensor, maps: torch.Tensor, epochs: int = 20,
                    batch_size: int = 32, lr: float = 2e-3, seed: int = 0) -> Segmenter:
    """Fit `model` to uint8 `images` [N x 3 x H x W] and label maps [N x 1 x H x W] (the null ID
    `num_labels` is ignored), with random flips; AdamW, cosine decay. Returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    x_all, y_all = uint8_to_signed(images).to(model.device), maps[:, 0].to(model.device)

    def loss_of(idx):
        x, y = x_all[idx], y_all[idx]
        flip = (torch.rand(len(idx), generator=generator) < 0.5).to(model.device)
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
        return F.cross_entropy(model(x), y, ignore_index=model.config.num_labels)

    return fit_batches(model, len(images), batch_size, epochs, loss_of, lr, 1e-4, generator, "segmenter")


@torch.no_grad()
def segment(model: Segmenter, images: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Predicted label maps [N x 1 x H x W] long (CPU) of uint8 images."""
    model.eval()
    return torch.cat([model(uint8_to_signed(images[i:i + batch_size]).to(model.device)).argmax(1, keepdim=True).cpu()
                      for i in range(0, len(images), batch_size)])


def confusion(predicted: torch.Tensor, truth: torch.Tensor, num_labels: int) -> torch.Tensor:
    """Confusion matrix [truth x predicted] (int64) over the pixels whose truth is a label (not null)."""
    valid = (truth >= 0) & (truth < num_labels)
    index = truth[valid] * num_labels + predicted[valid].clamp(0, num_labels - 1)
    return torch.bincount(index.flatten(), minlength=num_labels ** 2).view(num_labels, num_labels)


def scores(matrix: torch.Tensor) -> dict:
    """mIoU (mean over the classes present in the truth or the prediction), pixel accuracy, per-class IoU."""
    m = matrix.double()
    tp = m.diag()
    union = m.sum(0) + m.sum(1) - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return {"miou": iou[present].mean().item(), "pixel_accuracy": (tp.sum() / m.sum().clamp(min=1)).item(),
            "iou": iou.tolist()}
