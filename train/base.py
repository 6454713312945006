"""Train the base model of a cascade (class-conditional, or unconditional with model.num_classes=0).

    accelerate launch train/base.py --config configs/base_photos.yaml
    accelerate launch train/base.py --config configs/base_photos.yaml train.max_steps=200 --resume
    python train/base.py --config configs/base_photos.yaml            # one process, no launcher

The model learns to denoise random crops at its resolution (the simple diffusion loss), with class
labels dropped at random (`train.label_dropout`) for classifier-free guidance.

Writes to `train.output_dir`: config.yaml, logs/ (TensorBoard), samples/step_*.png (a row per
class, EMA weights), checkpoints/step_*/ (resumable), and pipeline/ (the EMA model, ready for
`cascade.Pipeline.from_pretrained`).
"""

from cascade.cli.common import run_cli
from cascade.config.stages import BaseStageConfig
from cascade.kinds.base import Base
from cascade.training import parse_args, train_stage


def main(argv=None):
    cfg, args = parse_args(BaseStageConfig, __doc__, argv)
    train_stage(cfg, Base(), resume=args.resume)  # data, model, loss, previews, loop, export: cascade.training


if __name__ == "__main__":
    run_cli(main)
