"""Reproducible crops for training previews: held-out ones where the source has a test split (the
built-in photos), else from the training split (a stream's first images)."""

from __future__ import annotations

import torch

from ..config.sections import DataConfig
from ..io.images import pil_to_signed
from .crops import random_resized_crop
from .sources import load_source


def fixed_crops(cfg: DataConfig, size: int, count: int, seed: int = 0) -> torch.Tensor:
    """`count` reproducible crops [count x 3 x size x size] for previews: held-out ones where the
    source has a test split (the built-in photos), else from the training split (a stream's first images)."""
    if cfg.streaming:
        from .streams import first_images

        images, references = first_images(cfg, count), [None] * count
    else:
        source = load_source(cfg, "test" if cfg.source == "photos" else cfg.split)
        index = [i % len(source) for i in range(count)]
        images, references = [source.load(j) for j in index], [source.reference(j) for j in index]
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([pil_to_signed(random_resized_crop(image, size, tuple(cfg.crop_scale), generator, reference=ref))
                        for image, ref in zip(images, references)])
