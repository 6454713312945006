"""Train an SR3 upsampler stage with CDM's conditioning augmentation.

    accelerate launch train/sr3.py --config configs/sr3_photos.yaml
    accelerate launch train/sr3.py --config configs/sr3_photos.yaml train.max_steps=2000 --resume
    python train/sr3.py --config configs/sr3_one_image.yaml data.path=/my/photo_folder

Each batch of high-res random crops is degraded on the fly into its low-res conditioning:
downsampled by `sr.scale` (antialiased bicubic, cascade.resize), blurred with probability
`sr.blur_prob`, and corrupted by the forward process at a level s ~ U[0, sr.noise_aug_max] that the
model is told (cascade.augment). The UNet sees that image upsampled and concatenated to x_t.

Writes to `train.output_dir`: config.yaml, logs/, samples/step_*.png (rows of held-out crops:
low-res | SR sample | high-res), checkpoints/step_*/, and pipeline/ (the EMA model as an upsampler).
"""

import torch

from cascade import augment, data, diffusion, rng
from cascade.cli import run_cli
from cascade.config import SR3StageConfig
from cascade.images import make_grid
from cascade.pipeline import Stage, StageSettings
from cascade.resize import downsample, upsample
from cascade.training import export_stage, fit, make_accelerator, parse_args
from cascade.unet import UNet


def main(argv=None):
    cfg, args = parse_args(SR3StageConfig, __doc__, argv)
    accelerator = make_accelerator(cfg.train, cfg)
    sr = cfg.sr

    # --- data: high-res random crops; the low-res input is made from each batch in the loss
    source = data.load_source(cfg.data)
    data.check_num_classes(source, cfg.model.num_classes)
    loader = data.make_loader(source, cfg.model.sample_size, cfg.data, cfg.train.batch_size, cfg.train.seed)
    accelerator.print(f"data: {len(source)} images, {len(source.class_names)} classes from {source.name}; "
                      f"{cfg.model.sample_size // sr.scale} px -> {cfg.model.sample_size} px")

    # --- model and forward process
    model = UNet(**vars(cfg.model))
    noise_scheduler = diffusion.make_noise_scheduler(cfg.diffusion, clip_sample=not sr.residual)
    alphas_cumprod = noise_scheduler.alphas_cumprod
    accelerator.print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")

    # --- loss: degrade HR into augmented LR, condition on it upsampled, the simple diffusion loss on HR;
    #     every random draw from the example's own generator (cascade.rng)
    def loss_fn(model, batch):
        hr = batch["image"]
        generators = rng.example_generators(batch["seed"])
        lowres, level = augment.training_lowres(hr, sr.scale, sr.noise_aug_max, sr.blur_prob, tuple(sr.blur_sigma),
                                                alphas_cumprod, generators)
        cond = {"cond_image": upsample(lowres, hr.shape[-2:])}
        # Residual stages learn only what bicubic upsampling of the clean input misses.
        target = (hr - upsample(downsample(hr, sr.scale), hr.shape[-2:])) * sr.residual_scale if sr.residual else hr
        if cfg.model.use_aug_level:
            cond["aug_level"] = level
        if cfg.model.num_classes:
            cond["class_labels"] = diffusion.drop_labels(batch["label"], cfg.model.num_classes, cfg.train.label_dropout,
                                                         generators)
        return diffusion.training_loss(model, noise_scheduler, target, generators, **cond)

    # --- previews: fixed held-out crops as rows of (low-res, nearest-upsampled | SR sample | high-res)
    settings = StageSettings(cfg.sample.sampler, cfg.sample.steps, cfg.sample.guidance_scale, source.class_names,
                             scale=sr.scale, aug_level=cfg.sample.aug_level, residual=sr.residual,
                             residual_scale=sr.residual_scale if sr.residual else 1.0,
                             consistent=cfg.sample.consistent)
    hr_preview = data.fixed_crops(cfg.data, cfg.model.sample_size, cfg.sample.preview_per_class)

    def preview_fn(ema_model, step):
        lowres = downsample(hr_preview, sr.scale)
        stage = Stage(ema_model, noise_scheduler, settings)
        srimg = stage.sample(lowres=lowres.to(stage.device), generator=torch.Generator().manual_seed(0),
                             progress=False).cpu()
        nearest = torch.nn.functional.interpolate(lowres, scale_factor=sr.scale, mode="nearest")
        rows = torch.stack([nearest, srimg.clamp(-1, 1), hr_preview], dim=1).flatten(0, 1)
        return make_grid(rows, nrow=3)

    # --- train, then export the EMA weights as an upsampler pipeline
    ema = fit(accelerator, cfg.train, model, loader, loss_fn, preview_fn, resume=args.resume)
    export_stage(accelerator, Stage(ema.model, noise_scheduler, settings), cfg.train.output_dir)


if __name__ == "__main__":
    run_cli(main)
