"""cascade: cascaded diffusion image generation and super-resolution (CDM + SR3)."""

__version__ = "0.1.0"

from .pipeline import Pipeline, Stage, StageSettings
from .unet import UNet

__all__ = ["Pipeline", "Stage", "StageSettings", "UNet"]
