"""Stage kinds: what a stage's model is conditioned on and what it generates, written once per kind.

- base.py: the `StageKind` interface, `Conditioning`, the `KINDS` registry, and `Base` (CDM's base model)
- sr3.py: `SR3` upsamplers with CDM's conditioning augmentation, and the one-step `Regression` baseline
- labels.py: `LabelMap` / `LabelSR3`, conditioned on a semantic label map (pix2pixHD's job)
- one_shot.py: `Scene` / `OneShotSR3`, a cascade trained on one image (OUR-GAN, SinGAN)
"""

from .base import KINDS, Base, Conditioning, StageKind
from .labels import LabelMap, LabelSR3, label_kind
from .one_shot import OneShotSR3, Scene
from .sr3 import SR3, Regression

__all__ = ["KINDS", "SR3", "Base", "Conditioning", "LabelMap", "LabelSR3", "OneShotSR3", "Regression", "Scene",
           "StageKind", "label_kind"]
