"""The forward process and the training objective (Ho et al. 2020, eq. 4 and 14; Salimans & Ho 2022).

One diffusers `DDPMScheduler` holds the noise schedule: training noises with it (`add_noise`), and
every sampler is built from its config (`cascade.diffusion.sampling`), so the schedule a model was trained
with is the one it is sampled with.

    x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps                     (forward process, DDPM eq. 4)
    target = eps                        (prediction_type "epsilon")
    target = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0   ("v_prediction", Salimans & Ho 2022)
    loss = mean || model(x_t, t, cond) - target ||^2                  (DDPM eq. 14, "simple" loss)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from . import rng

SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}  # our names -> diffusers' beta_schedule


def make_noise_scheduler(cfg, clip_sample: bool = True) -> DDPMScheduler:
    """The training-time forward process for `cfg` (a cascade.config DiffusionConfig: this module is imported by
    the config's checks, so it does not import the config); samplers are built from its `.config`.

    `clip_sample`: DDPM/DDIM clip their x0 estimate to [-1, 1], right for images; residual SR
    stages generate a scaled residual that may leave that range, and turn it off.
    """
    return DDPMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=SCHEDULES[cfg.schedule],
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        prediction_type=cfg.prediction_type,
        clip_sample=clip_sample,
    )


def alpha_bar(t, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """abar at continuous timesteps t (scalar or [N], float64, CPU): linear interpolation on the grid
    [1, abar_0, ..., abar_{T-1}] placed at t = -1, 0, ..., T-1, so t = -1 is the clean image (abar = 1)
    and integer t gives the schedule's own value. The one interpolation that conditioning
    augmentation (levels between the timesteps) and the consistency projection (any sampler's t) use."""
    grid = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod.double().cpu()])
    pos = (torch.as_tensor(t, dtype=torch.float64).cpu() + 1).clamp(0, len(grid) - 1)
    lo = pos.floor().long().clamp(max=len(grid) - 2)
    return grid[lo] + (grid[lo + 1] - grid[lo]) * (pos - lo)


def add_noise(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for integer timesteps t [N] (q(x_t | x_0))."""
    return scheduler.add_noise(x0, noise, t.to(x0.device))


def target(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the network is trained to output at (x_0, eps, t)."""
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(x0, noise, t.to(x0.device))


def training_loss(model, scheduler: DDPMScheduler, x0: torch.Tensor, generator: rng.Generators = None,
                  **cond) -> torch.Tensor:
    """The simple MSE loss at one random timestep per example. `cond` goes to the model as is.

    x0 [N x C x H x W] in [-1, 1]. Randomness comes from `generator`: one, one per example, or
    None for torch's global one (cascade.diffusion.rng).
    """
    n = x0.shape[0]
    t = rng.randint(scheduler.config.num_train_timesteps, n, generator).to(x0.device)
    noise = rng.randn(x0.shape, generator).to(x0.device, x0.dtype)
    xt = add_noise(scheduler, x0, noise, t)
    prediction = model(xt, t, **cond)
    return F.mse_loss(prediction.float(), target(scheduler, x0, noise, t).float())


def drop_labels(labels: torch.Tensor, null_class: int, p: float, generator: rng.Generators = None) -> torch.Tensor:
    """Replace each label [N] by `null_class` with probability p (classifier-free guidance training)."""
    if p <= 0:
        return labels
    drop = rng.rand(labels.shape[0], generator).to(labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)
