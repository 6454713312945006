"""A small ResNet image classifier for the Classification Accuracy Score (and a non-ImageNet IS).

CAS (Ravuri & Vinyals 2019; CDM table 2): train a classifier only on a generative model's
class-conditional samples and report its accuracy on real held-out images. The same classifier
trained on as many real images gives the upper bound. Architecture: pre-activation ResNet (He et
al. 2016) with `stages` stages of `blocks` basic blocks, widths `width * 2^i`, stride 2 between
stages, global average pooling; any input size. Saved like the UNet (safetensors + config.json).

Training uses random horizontal flips and random translations (reflection padding by 1/8 of the
side), AdamW with cosine decay, seeded; images are uint8 [N x 3 x H x W] tensors held in memory.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import nn
from tqdm import tqdm

from ..io.images import uint8_to_signed
from .weights import Model


class Block(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus a (strided 1x1) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.norm1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        h = F.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(h)
        h = self.conv1(h)
        return skip + self.conv2(F.relu(self.norm2(h)))


class ResNetClassifier(Model):
    """[N x 3 x H x W] in [-1, 1] -> class logits [N x num_classes]."""

    @register_to_config
    def __init__(self, num_classes: int, width: int = 32, stages: int = 3, blocks: int = 2, resolution: int = 32,
                 class_names: list[str] | None = None):
        super().__init__()
        self.stem = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        layers, cin = [], width
        for i in range(stages):
            cout = width * 2 ** i
            for j in range(blocks):
                layers.append(Block(cin, cout, 2 if i > 0 and j == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm(self.layers(self.stem(x))))
        return self.head(h.mean(dim=(2, 3)))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N x 3 x H x W] -> the network's input: [-1, 1], resized (bilinear, antialiased) to `resolution`."""
        x = uint8_to_signed(images).to(self.device)
        size = self.config.resolution
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x


def flip_and_translate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and translation by up to 1/8 of the side (reflection padded)."""
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1).to(x.device), x.flip(-1), x)
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).tolist()
    return torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def train_classifier(model: ResNetClassifier, images: torch.Tensor, labels: torch.Tensor, epochs: int = 30,
                     batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 5e-4, seed: int = 0,
                     desc: str = "classifier") -> ResNetClassifier:
    """Fit `model` to uint8 `images` [N x 3 x H x W] with `labels` [N]; returns it in eval mode."""
    generator = torch.Generator().manual_seed(seed)  # batch order and augmentation; seed the init before building
    x_all = model.prepare(images)
    y_all = labels.to(model.device)

    def loss_of(idx):
        return F.cross_entropy(model(flip_and_translate(x_all[idx], generator)), y_all[idx])

    return fit_batches(model, len(images), batch_size, epochs, loss_of, lr, weight_decay, generator, desc)


def fit_batches(model: nn.Module, count: int, batch_size: int, epochs: int, loss_of, lr: float, weight_decay: float,
                generator: torch.Generator, desc: str) -> nn.Module:
    """The loop of the metrics' small networks: `epochs` passes over `count` examples in a fresh
    order from `generator` each, batches of `batch_size` (a last partial batch dropped), AdamW with
    cosine decay, a progress bar. `loss_of(indices)` is the loss of those examples. Returns the model
    in eval mode."""
    batch_size = min(batch_size, count)
    steps_per_epoch = max(1, count // batch_size)
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    device = next(model.parameters()).device
    model.train()
    with tqdm(total=total, desc=desc, unit="step") as bar:
        for _ in range(epochs):
            order = torch.randperm(count, generator=generator)
            for k in range(steps_per_epoch):
                loss = loss_of(order[k * batch_size:(k + 1) * batch_size].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                bar.update()
    return model.eval()


@torch.no_grad()
def predict_logits(model: ResNetClassifier, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits [N x num_classes] (float64, CPU) of uint8 images."""
    model.eval()
    return torch.cat([model(model.prepare(images[i:i + batch_size])).double().cpu()
                      for i in range(0, len(images), batch_size)])


def top_k_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Fraction of rows whose label is among the k largest logits (k capped at the class count)."""
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels.view(-1, 1).to(logits.device)).any(dim=1)
    return hits.double().mean().item()
