"""Train the class-conditional base model of a cascade.

    accelerate launch train/base.py --config configs/base_photos.yaml
    accelerate launch train/base.py --config configs/base_photos.yaml train.max_steps=200 --resume
    python train/base.py --config configs/base_photos.yaml            # one process, no launcher

Writes to `train.output_dir`: config.yaml, logs/ (TensorBoard), samples/step_*.png (a row per
class, EMA weights), checkpoints/step_*/ (resumable), and pipeline/ (the EMA model, ready for
`cascade.Pipeline.from_pretrained`).
"""

import torch

from cascade import data, diffusion, rng
from cascade.config import BaseStageConfig
from cascade.images import make_grid
from cascade.pipeline import Stage, StageSettings
from cascade.cli import run_cli
from cascade.training import export_stage, fit, make_accelerator, parse_args
from cascade.unet import UNet


def main(argv=None):
    cfg, args = parse_args(BaseStageConfig, __doc__, argv)
    accelerator = make_accelerator(cfg.train, cfg)

    # --- data: random crops at the model's resolution, labels from the source
    source = data.load_source(cfg.data)
    data.check_num_classes(source, cfg.model.num_classes)
    loader = data.make_loader(source, cfg.model.sample_size, cfg.data, cfg.train.batch_size, cfg.train.seed)
    accelerator.print(f"data: {len(source)} images, {len(source.class_names)} classes from {source.name}")

    # --- model and forward process
    model = UNet(**vars(cfg.model))
    noise_scheduler = diffusion.make_noise_scheduler(cfg.diffusion)
    accelerator.print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

    # --- loss: the simple diffusion loss, labels dropped at random for classifier-free guidance;
    #     every random draw from the example's own generator (cascade.rng)
    def loss_fn(model, batch):
        generators = rng.example_generators(batch["seed"])
        cond = {}
        if cfg.model.num_classes:
            cond["class_labels"] = diffusion.drop_labels(batch["label"], cfg.model.num_classes, cfg.train.label_dropout,
                                                         generators)
        return diffusion.training_loss(model, noise_scheduler, batch["image"], generators, **cond)

    # --- previews: a row of samples per class from the EMA weights, same seed every time
    settings = StageSettings(cfg.sample.sampler, cfg.sample.steps, cfg.sample.guidance_scale, source.class_names)

    def preview_fn(ema_model, step):
        stage = Stage(ema_model, noise_scheduler, settings)
        per_row = cfg.sample.preview_per_class
        classes = range(cfg.model.num_classes) if cfg.model.num_classes else [None] * 4
        images = torch.cat([stage.sample(None if c is None else [c] * per_row, num_images=per_row,
                                         generator=torch.Generator().manual_seed(0), progress=False)
                            for c in classes])
        return make_grid(images, nrow=per_row)

    # --- train, then export the EMA weights as a pipeline
    ema = fit(accelerator, cfg.train, model, loader, loss_fn, preview_fn, resume=args.resume)
    export_stage(accelerator, Stage(ema.model, noise_scheduler, settings), cfg.train.output_dir)


if __name__ == "__main__":
    run_cli(main)
