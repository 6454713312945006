"""Shared fixtures: tiny seeded models (CPU, a few thousand parameters) and paths."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def tiny_unet(**overrides):
    from cascade.unet import UNet

    kwargs = dict(sample_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                  head_channels=8, dropout=0.0, num_classes=3)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return UNet(**kwargs)


def randomize(model, scale=0.2, seed=1):
    """Give every parameter random values: the zero-initialised output layers otherwise hide the inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


@pytest.fixture
def root():
    return ROOT
