"""Exponential moving average of model weights (the weights that are sampled and exported)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """`ema = decay * ema + (1 - decay) * weights` after every optimizer step.

    With `warmup`, the decay is min(decay, (1 + n) / (10 + n)) at update n, so the average is not
    dominated by the random initial weights early in short runs. Buffers are copied, not averaged.
    Checkpoints keep `model`'s weights and `updates` (cascade.training.checkpoints).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach().to(ema_p.dtype), 1.0 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1
