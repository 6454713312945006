"""Sampling: a short loop over any diffusers scheduler; guidance and constraints as denoiser wrappers.

A *denoiser* here is any callable with the UNet's contract, `denoiser(x, t, **cond) -> prediction`
(see `cascade.models.unet`). Guidance wraps a denoiser into another one; the loop never branches on it.
"""

from __future__ import annotations

import inspect
import warnings
from typing import Callable

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       HeunDiscreteScheduler, LCMScheduler, TCDScheduler, UniPCMultistepScheduler)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from tqdm.auto import tqdm

from . import rng
from .schedule import alpha_bar


class PhasedScheduler(TCDScheduler):
    """TCD's step with gamma 0: deterministic DDIM jumps from grid point to grid point with the network's x0 and
    noise, no fresh noise; what a phased student learned (cascade.training.distill, `distill.phases`)."""

    def step(self, model_output, timestep, sample, eta: float = 0.0, generator=None, return_dict: bool = True):
        return super().step(model_output, timestep, sample, eta, generator, return_dict)


# sampler name -> (scheduler class, settings that differ from the training schedule's config)
SAMPLERS: dict[str, tuple[type, dict]] = {
    "ddpm": (DDPMScheduler, {}),  # ancestral sampling (Ho et al. 2020, Alg. 2)
    "ddim": (DDIMScheduler, {}),  # deterministic DDIM, eta = 0 (Song et al. 2021)
    "dpm++": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),  # DPM-Solver++(2M)
    "dpm++sde": (DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
    # EDM's 2nd-order sampler (2 network evaluations per step but the last) on Karras sigmas: with the
    # trailing grid its first step spans sigma 2e4 -> 3 (cosine schedule) and the correction blows up.
    "heun": (HeunDiscreteScheduler, {"use_karras_sigmas": True}),
    # Few-step students (cascade.training.distill): consistency steps on the 50-point grid t = 20 n - 1 the
    # students are trained on (`original_inference_steps`, the schedulers' default); TCD's gamma 0.3 re-noises less,
    # pcm not at all (a phased student's jumps).
    "lcm": (LCMScheduler, {}),
    "tcd": (TCDScheduler, {}),
    "pcm": (PhasedScheduler, {}),
}
STUDENT_SAMPLERS = ("lcm", "tcd", "pcm")  # samplers that take a consistency student's output as the clean image


# The keys of a training schedule that define the noise levels; everything else is the sampler's.
SCHEDULE_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas", "prediction_type",
                 "clip_sample")


def make_sampler(name: str, train_config, timestep_spacing: str = "trailing",
                 final_timestep: int | None = None) -> SchedulerMixin:
    """A fresh scheduler `name` for a model trained with the schedule in `train_config`.

    Built from the schedule's keys only, never with `from_config`: diffusers replaces every key that
    a config lists in `_use_default_values` by the target class's default, which made a freshly
    trained model and the same model reloaded from disk sample with different timesteps.
    "trailing" spacing starts every step count at the last training timestep (Lin et al. 2024).
    `final_timestep`: the students' samplers (lcm, tcd, pcm) end 2+ steps there (`ending_at`); the others ignore it.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}")
    cls, extra = SAMPLERS[name]
    if name not in ("ddpm", "ddim", *STUDENT_SAMPLERS) and train_config["prediction_type"] == "epsilon":
        # x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar) amplifies any eps error by 1/sqrt(abar_T), and these
        # solvers do not clip x0: with the cosine schedule (abar_T ~ 2e-9) samples explode.
        abar_T = DDPMScheduler(**_schedule_kwargs(DDPMScheduler, train_config)).alphas_cumprod[-1].item()
        if abar_T < 1e-6:
            warnings.warn(f"sampler {name!r} on an epsilon-prediction model whose schedule ends at abar_T={abar_T:.1e} "
                          "is numerically unstable; use prediction_type v_prediction, or sampler ddpm/ddim", stacklevel=2)
    if name in STUDENT_SAMPLERS:  # their own spacing: a subset of the distillation grid, whatever `timestep_spacing`
        scheduler = cls(**_schedule_kwargs(cls, train_config), **extra)
        return scheduler if final_timestep is None else ending_at(scheduler, final_timestep)
    return cls(**_schedule_kwargs(cls, train_config), timestep_spacing=timestep_spacing, **extra)


def ending_at(scheduler, final: int):
    """A students' scheduler (LCM's, TCD's) whose timesteps for 2+ steps end at `final` instead of at their own
    last one, when `final` is lower (LCM's 4 steps on the 50-point grid end at t = 259, a quarter of the way up
    the schedule, and the last step's clean estimate keeps fine grain from that noise: docs/distillation.md).
    `final` must be a point of the grid the students are trained on (t = k n - 1, k = T / 50)."""
    config = scheduler.config
    k = config.num_train_timesteps // config.original_inference_steps
    if not (final + 1) % k == 0 or not 0 < final + 1 <= config.num_train_timesteps:
        raise ValueError(f"final_timestep={final} is not on the students' grid t = {k} n - 1 ({k - 1}, "
                         f"{2 * k - 1}, ..., {config.num_train_timesteps - 1})")
    own = scheduler.set_timesteps

    def set_timesteps(num_inference_steps=None, device=None, **kwargs):
        own(num_inference_steps, device=device, **kwargs)
        listed = [int(t) for t in scheduler.timesteps]
        if len(listed) > 1 and final < listed[-1] and kwargs.get("timesteps") is None:
            own(device=device, timesteps=listed[:-1] + [final])

    scheduler.set_timesteps = set_timesteps
    return scheduler


def off_phases(edges, sampler: str, steps: int, train_config, final_timestep: int | None = None) -> str | None:
    """Why sampling a phased student (its phases' `edges`, descending, the last 0) with `sampler` at `steps` leaves
    the jumps it learned, or None when it follows them: pcm through exactly its edges (cascade.training.distill).
    None too where `edges` is not a list of timesteps (a stage that is no phased student)."""
    if not (isinstance(edges, list) and len(edges) > 1 and all(type(t) is int for t in edges)):
        return None
    own = edges[:-1]
    if sampler != "pcm":
        return f"{sampler} is not its sampler (pcm at {len(own)} steps, timesteps {own})"
    taken = sampler_timesteps("pcm", train_config, steps, final_timestep)
    return None if taken == own else f"pcm at {steps} steps takes timesteps {taken}, not its edges {own}"


def sampler_timesteps(name: str, train_config, steps: int, final_timestep: int | None = None) -> list[int]:
    """The training timesteps sampler `name` evaluates the network at in `steps` steps."""
    scheduler = make_sampler(name, train_config, final_timestep=final_timestep)
    scheduler.set_timesteps(steps)
    return [int(t) for t in scheduler.timesteps]


def _schedule_kwargs(cls: type, train_config) -> dict:
    accepted = inspect.signature(cls.__init__).parameters
    return {k: train_config[k] for k in SCHEDULE_KEYS if k in accepted and k in train_config}


def guided(denoiser: Callable, scale: float, null_class: int | None, null_label: int | None = None) -> Callable:
    """Classifier-free guidance (Ho & Salimans 2022): pred_u + scale * (pred_c - pred_u).

    The unconditional branch replaces the class labels by `null_class` and, for label-map stages,
    the label map by the null map (`null_label` everywhere, no instance boundaries). scale = 1
    returns the conditional denoiser unchanged; scale = 0 is the unconditional one. The conditional
    and unconditional passes run as one batch of 2N.
    """
    if scale == 1.0 or (null_class is None and null_label is None):
        return denoiser

    def guided_denoiser(x, t, **cond):
        null = dict(cond)
        if null_class is not None and cond.get("class_labels") is not None:
            null["class_labels"] = torch.full_like(cond["class_labels"], null_class)
        if null_label is not None and cond.get("label_map") is not None:
            null["label_map"] = torch.full_like(cond["label_map"], null_label)
            if cond.get("boundary") is not None:
                null["boundary"] = torch.zeros_like(cond["boundary"])
        changed = [k for k in cond if null[k] is not cond[k]]
        if not changed:
            return denoiser(x, t, **cond)
        doubled = {k: torch.cat([v, null[k]]) if isinstance(v, torch.Tensor) and v.ndim > 0 else v
                   for k, v in cond.items()}
        t2 = torch.cat([t, t]) if isinstance(t, torch.Tensor) and t.ndim > 0 else t
        pred_c, pred_u = denoiser(torch.cat([x, x]), t2, **doubled).chunk(2)
        return pred_u + scale * (pred_c - pred_u)

    return guided_denoiser


def constrained(denoiser: Callable, project: Callable, alphas_cumprod: torch.Tensor, prediction_type: str) -> Callable:
    """Wrap a denoiser so that the clean image it implies, x0, is replaced by `project(x0)` at every step.

    The prediction is converted to x0 with the training schedule (x_t = a x0 + s eps, a^2 = abar_t,
    s^2 = 1 - abar_t), projected, and converted back to the same prediction type given the same x_t,
    so any scheduler steps from the projected estimate (DDNM/ILVR-style guidance; see
    `cascade.diffusion.resize.project_onto_lowres`). Timesteps between grid points interpolate abar linearly
    (cascade.diffusion.schedule.alpha_bar).
    """
    def constrained_denoiser(x, t, **cond):
        prediction = denoiser(x, t, **cond)
        abar = alpha_bar(torch.as_tensor(t, dtype=torch.float64).clamp(min=0), alphas_cumprod)
        abar = abar.view(-1, 1, 1, 1).to(x.device) if abar.ndim else abar.item()
        a, s = abar ** 0.5, (1 - abar) ** 0.5
        xd, pd = x.double(), prediction.double()
        if prediction_type == "epsilon":
            x0 = project((xd - s * pd) / a)
            return ((xd - a * x0) / s).to(prediction.dtype)
        if prediction_type == "v_prediction":
            x0 = project(a * xd - s * pd)
            return ((a * xd - x0) / s).to(prediction.dtype)
        if prediction_type == "sample":
            return project(pd).to(prediction.dtype)
        raise ValueError(f"unknown prediction_type {prediction_type!r}")

    return constrained_denoiser


@torch.no_grad()
def sample(denoiser: Callable, scheduler: SchedulerMixin, shape: tuple[int, ...], steps: int,
           generator: rng.Generators = None, device: torch.device | str = "cpu",
           progress: bool = True, init: torch.Tensor | None = None, strength: float = 1.0, resample: int = 1,
           **cond) -> torch.Tensor:
    """Draw samples [shape] by running `scheduler` for `steps` network evaluations.

    `generator`: one torch.Generator for the batch, or one per image (cascade.diffusion.rng), which makes
    every image independent of the batch it is in: the initial noise and the noise that stochastic
    schedulers inject draw from it (diffusers' `randn_tensor` takes a list of generators, one per
    image). Noise is drawn on the CPU, so a seed gives the same images on any device. `cond`
    (class_labels, cond_image, aug_level) is passed to the denoiser at every step.

    `init` (in the model's space) and `strength`: SDEdit. The last round(strength * steps) steps run,
    from `init` noised to the first of them by the scheduler's own forward process (`add_noise`),
    as diffusers' image-to-image pipelines do; strength 0 returns `init`.

    `resample` (RePaint, Lugmayr et al. 2022, with jump length 1): every step but the last is done
    `resample` times, x_{t-1} noised back to t by the forward process between them, so the regenerated
    pixels of a masked edit (a constraint on x0: cascade.inference.stage) agree with the kept ones. It
    needs a scheduler whose step depends on t alone (DDPM, DDIM).
    """
    check_resample(scheduler, resample)
    # 1. choose the timesteps t_1 > ... > t_steps
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    # 2. x_T ~ N(0, sigma_max^2 I)  (sigma_max = 1 for variance-preserving schedulers), or init noised to t_start
    noise = rng.randn(shape, generator).to(device)
    if init is None:
        x = noise * scheduler.init_noise_sigma
    else:
        start = (steps - min(steps, round(strength * steps))) * scheduler.order
        timesteps = timesteps[start:]
        if len(timesteps) == 0:
            return init.to(device)
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        x = scheduler.add_noise(init.to(device), noise, timesteps[:1])
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(scheduler.step).parameters else {}
    for i, t in enumerate(tqdm(timesteps, desc="sampling", leave=False, disable=not progress)):
        for r in range(resample if i + 1 < len(timesteps) else 1):
            if r:  # 5. RePaint: back from where the step went to t_i by the forward process, to be denoised again
                x = renoise(scheduler, x, stepped_to(scheduler, t, timesteps[i + 1]), t, generator)
            # 3. predict with the network (some schedulers rescale x_t first), then 4. step to t_{i+1}
            prediction = denoiser(scheduler.scale_model_input(x, t), t, **cond)
            x = scheduler.step(prediction, t, x, **step_kwargs).prev_sample
    return x


def check_resample(scheduler, resample: int) -> None:
    """ValueError unless `scheduler` can be resampled RePaint-style `resample` times per step."""
    if resample > 1 and type(scheduler).__name__ not in ("DDPMScheduler", "DDIMScheduler"):
        raise ValueError(f"resample={resample} needs the ddpm or ddim sampler (a {type(scheduler).__name__} keeps "
                         f"state from step to step)")


def stepped_to(scheduler, t, listed_next):
    """The timestep `scheduler.step` at `t` lands on: DDPM goes to the next listed timestep, DDIM to
    t - T // steps (diffusers), which differs from the listed one wherever the listed gaps are not T // steps
    ("trailing" spacing when `steps` does not divide T; "linspace" nearly always)."""
    if type(scheduler).__name__ == "DDIMScheduler":
        return max(0, int(t) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps)
    return int(listed_next)


def renoise(scheduler, x: torch.Tensor, t_from, t_to, generator: rng.Generators) -> torch.Tensor:
    """x at timestep t_from noised forward to t_to > t_from: q(x_{t_to} | x_{t_from})."""
    ratio = (scheduler.alphas_cumprod[int(t_to)] / scheduler.alphas_cumprod[int(t_from)]).double()
    noise = rng.randn(x.shape, generator).to(x.device, torch.float64)
    return (ratio.sqrt() * x.double() + (1 - ratio).sqrt() * noise).to(x.dtype)
