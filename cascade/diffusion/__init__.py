"""The diffusion process around the networks.

- schedule.py: the forward process and the training loss (a diffusers DDPMScheduler holds the schedule)
- sampling.py: the sampling loop over diffusers' schedulers, guidance and constraints as denoiser wrappers
- augment.py: CDM's conditioning augmentation (noise, blur); resize.py: the down/upsamplers and the
  projection onto a low-res image; rng.py: per-example random draws
"""
