"""Training: `train_stage` (stage.py) builds one stage's data, model, loss and previews and runs the shared
loop (loop.py: Accelerate, AdamW, EMA, previews, resume); checkpoints.py writes them crash-safe;
one_shot.py lays out a one-shot cascade's stages."""

from .loop import fit
from .stage import export_stage, parse_args, train_stage

__all__ = ["export_stage", "fit", "parse_args", "train_stage"]
