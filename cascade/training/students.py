"""What every few-step student shares, whatever the method (cascade.training.distill: consistency; .progressive):
the clean image a prediction implies, the teacher's DDIM step with its guidance baked in, the student's schedule
(v-prediction), and one student run of a teacher exported as a stage."""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import torch

from ..diffusion import rng
from ..diffusion.sampling import guided
from ..errors import ConfigError
from ..inference.stage import Stage
from .examples import describe, recorded_data, stage_examples
from .loop import fit, make_accelerator
from .stage import export_stage


def clean_estimate(prediction: torch.Tensor, x: torch.Tensor, abar: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """x0 implied by a network's prediction at x_t, abar [N] (epsilon, v or sample)."""
    a, s = abar.sqrt().view(-1, 1, 1, 1).to(x), (1 - abar).sqrt().view(-1, 1, 1, 1).to(x)
    if prediction_type == "epsilon":
        return (x - s * prediction) / a
    if prediction_type == "v_prediction":
        return a * x - s * prediction
    if prediction_type == "sample":
        return prediction
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def abar_at(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """abar at integer timesteps t [N] (float64), 1 where t < 0 (DDIM's last step lands on the clean image:
    diffusers' `set_alpha_to_one`)."""
    t = t.cpu()
    return torch.where(t >= 0, alphas_cumprod[t.clamp(min=0)], torch.ones((), dtype=alphas_cumprod.dtype))


def ddim_step(denoiser, prediction_type: str, clip: bool, alphas_cumprod: torch.Tensor, x_t: torch.Tensor,
              t: torch.Tensor, t_prev: torch.Tensor, cond: dict, eta: float = 0.0,
              generators: rng.Generators | None = None) -> torch.Tensor:
    """x_{t_prev} from x_t by one DDIM step of `denoiser` (Song et al. 2021, eq. 12), with `eta`:
    sigma^2 = eta^2 (1 - a') / (1 - a) (1 - a / a') for a = abar_t, a' = abar_{t_prev} (t_prev < 0: a' = 1); x0
    clipped to [-1, 1] where `clip` (the stage's sampler does; a residual is not clipped): diffusers'
    DDIMScheduler.step, checked in the tests."""
    abar, abar_prev = (abar_at(alphas_cumprod, s).view(-1, 1, 1, 1).to(x_t) for s in (t, t_prev))
    x0 = clean_estimate(denoiser(x_t, t, **cond), x_t, abar.flatten().cpu(), prediction_type)
    eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()  # from the unclipped x0, as diffusers' DDIM step
    x0 = x0.clamp(-1, 1) if clip else x0
    sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp(min=0).sqrt()
    x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
    if eta > 0:
        x_prev = x_prev + sigma * rng.randn(x_t.shape, generators).to(x_t.device, x_t.dtype)
    return x_prev


def student_schedule(teacher: Stage, clip: bool | None = None):
    """The student's noise schedule: the teacher's, predicting v where the teacher predicts epsilon; `clip`:
    whether its sampler clips x0 (None: as the teacher's; a progressive student's never does, because its
    target is the clean image that the unclipped DDIM step needs, which may leave [-1, 1])."""
    from diffusers import DDPMScheduler

    config = dict(teacher.noise_scheduler.config)
    if config["prediction_type"] == "epsilon":
        config["prediction_type"] = "v_prediction"
    if clip is not None:
        config["clip_sample"] = clip
    return DDPMScheduler.from_config(config)


def frozen_denoiser(teacher: Stage, guidance_scale: float):
    """The teacher's network with its classifier-free guidance at `guidance_scale`, its weights frozen."""
    unet = teacher.unet
    for p in unet.parameters():
        p.requires_grad_(False)
    return guided(unet, guidance_scale, unet.null_class if unet.config.num_classes else None,
                  unet.null_label if unet.config.num_labels else None)


def train_student(teacher: Stage, cfg, output_dir: Path, resume: bool, data, objective, sampler: str, steps: int,
                   record: dict, seed: int | None = None, clip: bool | None = None) -> Stage:
    """One student run of `teacher` into `output_dir`: `objective(teacher, student_unet, prediction)` gives the loss,
    the averages it reads, a description and an adversary (or None); `record` goes into origin.distilled."""
    try:  # the student's sampling defaults (final timestep: the config's, null for progressive), checked first
        with warnings.catch_warnings():  # a phased teacher's edges are not the student's
            warnings.simplefilter("ignore")
            wanted = dataclasses.replace(teacher.defaults, sampler=sampler, steps=steps, guidance_scale=1.0,
                                         final_timestep=cfg.distill.final_timestep)
            defaults = teacher.checked(wanted, where="distill")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    train = dataclasses.replace(cfg.train, output_dir=str(output_dir), seed=cfg.train.seed if seed is None else seed)
    accelerator = make_accelerator(train, cfg)
    model_config = teacher.unet.config

    # --- data: the teacher's own (its recipe or data section), or the config's
    trained = teacher.origin.get("trained", {})
    examples, data_cfg = None, data
    if data_cfg is None and trained.get("recipe"):
        from ..data.one_image import one_image_data

        examples = one_image_data(trained["recipe"])
    elif data_cfg is None:
        data_cfg = recorded_data(trained)
    found = stage_examples(data_cfg, model_config, teacher.kind, train.batch_size, train.seed,
                           teacher.defaults.preview_per_class, accelerator, examples)
    accelerator.print(describe(found, model_config, model_config.sample_size))

    # --- student: the teacher's weights and kind, v-prediction, sampled at few steps, guidance baked in
    schedule = student_schedule(teacher, clip)
    student_unet = type(teacher.unet).from_config(teacher.unet.config)
    student_unet.load_state_dict(teacher.unet.state_dict())
    teacher.unet.to(accelerator.device).eval()
    loss, averages, what, adversary = objective(teacher, student_unet, schedule.config.prediction_type)
    accelerator.print(f"student of a {teacher.kind.name} stage ({sum(p.numel() for p in student_unet.parameters()) / 1e6:.2f}"
                      f" M parameters): {what}, sampled with {sampler} x{steps}")

    def preview_fn(ema_model, step):
        stage = Stage(ema_model, schedule, found.kind, defaults, teacher.class_names)
        return found.kind.preview(stage, found.shown, defaults.preview_per_class)

    started = time.perf_counter()
    ema = fit(accelerator, train, student_unet, found.loader, loss, preview_fn, resume=resume, averages=averages,
              adversary=adversary)
    origin = {"distilled": {**record, "data": found.what, "seconds": round(time.perf_counter() - started, 1)}}
    if trained:
        origin["trained"] = trained  # the teacher's training: the data and the run the student's knowledge comes from
    student = Stage(ema.model, schedule, found.kind, defaults, teacher.class_names, origin)
    export_stage(accelerator, student, train.output_dir)
    return student
