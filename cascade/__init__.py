"""cascade: cascaded diffusion image generation and super-resolution (CDM + SR3)."""

__version__ = "0.1.0"

from .config.sections import SampleConfig
from .inference.pipeline import Pipeline
from .inference.stage import Stage, Tiling
from .inference.streamed import upscale_to_file
from .kinds.base import Base, StageKind
from .kinds.labels import LabelMap, LabelSR3
from .kinds.sr3 import SR3, Regression
from .models.unet import UNet

__all__ = ["Base", "LabelMap", "LabelSR3", "Pipeline", "Regression", "SR3", "SampleConfig", "Stage", "StageKind",
           "Tiling", "UNet", "upscale_to_file"]
