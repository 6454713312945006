"""Train an SR3 upsampler stage with CDM's conditioning augmentation.

    accelerate launch train/sr3.py --config configs/sr3_photos.yaml
    accelerate launch train/sr3.py --config configs/sr3_photos.yaml train.max_steps=2000 --resume
    python train/sr3.py --config configs/sr3_one_image.yaml data.path=/my/photo_folder

Each batch of high-res random crops is degraded on the fly into its low-res conditioning:
downsampled by `sr.scale` (antialiased bicubic, cascade.diffusion.resize), blurred with probability
`sr.blur_prob`, and corrupted by the forward process at a level s ~ U[0, sr.noise_aug_max] that the
model is told (cascade.diffusion.augment). The UNet sees that image upsampled and concatenated to x_t; with
`sr.residual` it generates (HR - bicubic(LR)) * sr.residual_scale. All of it: cascade.kinds.sr3.SR3.
`sr.kind=regression` trains SR3's regression baseline instead: the same UNet and inputs, an L2 loss
on the output of one evaluation (cascade.kinds.sr3.Regression).

Writes to `train.output_dir`: config.yaml, logs/, samples/step_*.png (rows of held-out crops:
low-res | SR sample | high-res), checkpoints/step_*/, and pipeline/ (the EMA model as an upsampler).
"""

from cascade.cli.common import run_cli
from cascade.config.stages import SR3StageConfig
from cascade.kinds.base import KINDS
from cascade.training import parse_args, train_stage


def main(argv=None):
    cfg, args = parse_args(SR3StageConfig, __doc__, argv)
    train_stage(cfg, KINDS[cfg.sr.kind].from_config(cfg.sr), resume=args.resume)  # data, model, loss, previews, loop, export


if __name__ == "__main__":
    run_cli(main)
