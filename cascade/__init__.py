"""cascade: cascaded diffusion image generation and super-resolution (CDM + SR3)."""

__version__ = "0.1.0"

from .config import SampleConfig
from .kinds import SR3, Base, LabelMap, LabelSR3, Regression, StageKind
from .pipeline import Pipeline
from .stage import Stage, Tiling
from .unet import UNet

__all__ = ["Base", "LabelMap", "LabelSR3", "Pipeline", "Regression", "SR3", "SampleConfig", "Stage", "StageKind",
           "Tiling", "UNet"]
