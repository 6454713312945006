"""Few-step students: a trained stage of any kind distilled to 1-8 network evaluations (`train/distill.py`).

Consistency distillation in the latent-consistency-model form (Luo et al. 2023, "LCM", algorithm 1; Song et al.
2023, consistency models), in pixel space. The student starts as a copy of the teacher. An example is the kind's
own training input (the same conditioning augmentation, residual and scale as the teacher's training:
cascade.kinds), noised to a timestep t_n of the grid that diffusers' LCMScheduler samples from,
t_n = k n - 1 for n = 1..50 (k = T / 50). The student's consistency function, LCMScheduler's,

    f(x, t) = c_skip(t) x + c_out(t) x0(x, t),   c_skip = s^2 / ((10 t)^2 + s^2), c_out = 10 t / sqrt((10 t)^2 + s^2),

(s = 0.5; x0 from the network's prediction at t) at (x_{t_n}, t_n) is pulled towards the same function of the
student under stop-gradient at (x_{t_{n-1}}, t_{n-1}) (t_0 = 0, where f is x itself), with x_{t_{n-1}}
- `target="teacher"`: one DDIM step of the teacher from x_{t_n} (`eta`: 0 is LCM's ODE step, 1 the ancestral
  one), with its classifier-free guidance baked in (LCM's w-conditioning with one fixed w: the student samples
  unguided, at one evaluation per step);
- `target="data"`: the clean example noised with the same noise to t_{n-1} (consistency training, ECT-style):
  no teacher ODE, so the student does not inherit the deterministic sampler's loss of detail.
Loss: pseudo-Huber, sqrt(d^2 + c^2) - c, averaged (LCM's; no LPIPS weights offline).

The pitfalls, each handled here and tested (tests/test_distill.py):
- the student predicts v (or x0), never epsilon: x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) multiplies any
  error by 1 / sqrt(abar_T) ~ 2e4 at the cosine schedule's last step, the one a 1-step student samples at;
- the grid is exactly the timesteps LCMScheduler samples (for 1..50 steps);
- the target network is a network of its own: an EMA of the student's weights (decay 0.95, LCM's; 0 makes it
  the student itself under stop-gradient), updated after every step and kept in the checkpoints, never the
  slower EMA that is exported (docs/distillation.md: with the student itself as target this stage drifts);
- the loop is the shared one (cascade.training.loop): a resume after a kill is exact, as for every stage.
"""

from __future__ import annotations

import dataclasses
import time

import torch

from ..diffusion import rng
from ..diffusion.sampling import guided
from ..inference.stage import Stage
from ..models.ema import EMA
from ..models.weights import weights_hash
from .examples import describe, stage_examples
from .loop import fit, make_accelerator
from .stage import export_stage

GRID_POINTS = 50  # LCMScheduler's `original_inference_steps`: the student's sampler picks its steps from this grid
SIGMA_DATA, TIMESTEP_SCALING = 0.5, 10.0  # LCMScheduler's boundary-condition constants


def grid(num_train_timesteps: int) -> torch.Tensor:
    """The distillation grid t_n = k n - 1, n = 1..50, ascending [50] long (LCMScheduler's `lcm_origin_timesteps`)."""
    k = num_train_timesteps // GRID_POINTS
    return torch.arange(1, GRID_POINTS + 1) * k - 1


def boundary_scalings(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) at timesteps t (LCMScheduler.get_scalings_for_boundary_condition_discrete)."""
    scaled = t.double() * TIMESTEP_SCALING
    return SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2), scaled / (scaled ** 2 + SIGMA_DATA ** 2).sqrt()


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


def student_schedule(teacher: Stage):
    """The student's noise schedule: the teacher's, predicting v where the teacher predicts epsilon."""
    from diffusers import DDPMScheduler

    config = dict(teacher.noise_scheduler.config)
    if config["prediction_type"] == "epsilon":
        config["prediction_type"] = "v_prediction"
    return DDPMScheduler.from_config(config)


class ConsistencyDistillation:
    """The loss of a student of `teacher` (module docstring): one object holding the grid, the scalings and
    the teacher's guided denoiser; `loss(model, batch)` is what the shared loop calls."""

    def __init__(self, teacher: Stage, student_config, student_prediction: str, target: str = "teacher",
                 guidance_scale: float = 1.0, huber_c: float = 0.001, target_net=None, eta: float = 0.0):
        self.teacher, self.kind, self.config = teacher, teacher.kind, student_config
        self.target, self.huber_c, self.prediction = target, huber_c, student_prediction
        self.target_net = target_net  # None: the student's own weights (stop-gradient); else LCM's EMA of them
        self.eta = eta
        self.alphas_cumprod = teacher.noise_scheduler.alphas_cumprod.double()
        self.grid = grid(len(self.alphas_cumprod))
        unet = teacher.unet
        self.teacher_denoiser = guided(unet, guidance_scale, unet.null_class if unet.config.num_classes else None,
                                       unet.null_label if unet.config.num_labels else None)
        for p in unet.parameters():
            p.requires_grad_(False)

    def consistency(self, model, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """f(x, t) of `model` (student weights) at integer timesteps t [N] (t = 0: x itself)."""
        c_skip, c_out = (c.view(-1, 1, 1, 1).to(x) for c in boundary_scalings(t))
        x0 = clean_estimate(model(x, t, **cond), x, self.alphas_cumprod[t.cpu()], self.prediction)
        return c_skip * x + c_out * x0

    def teacher_step(self, x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, cond: dict,
                     generators: rng.Generators) -> torch.Tensor:
        """x_{t_prev} from x_t by one DDIM step of the guided teacher (Song et al. 2021, eq. 12), with `eta`:
        sigma^2 = eta^2 (1 - a') / (1 - a) (1 - a / a') for a = abar_t, a' = abar_{t_prev}; x0 clipped as the
        teacher's DDIM sampler clips it (not a residual): diffusers' DDIMScheduler.step, checked in the tests."""
        abar, abar_prev = (self.alphas_cumprod[s.cpu()].view(-1, 1, 1, 1).to(x_t) for s in (t, t_prev))
        prediction = self.teacher_denoiser(x_t, t, **cond)
        x0 = clean_estimate(prediction, x_t, abar.flatten().cpu(), self.teacher.noise_scheduler.config.prediction_type)
        eps = (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()  # from the unclipped x0, as diffusers' DDIM step
        if self.kind.clip_sample:
            x0 = x0.clamp(-1, 1)
        sigma = self.eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)).clamp(min=0).sqrt()
        x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev - sigma ** 2).clamp(min=0).sqrt() * eps
        if self.eta > 0:
            x_prev = x_prev + sigma * rng.randn(x_t.shape, generators).to(x_t.device, x_t.dtype)
        return x_prev

    def loss(self, model, batch: dict) -> torch.Tensor:
        generators = rng.example_generators(batch["seed"])
        x0, cond = self.kind.training_inputs(self.config, batch["image"], self.alphas_cumprod.float(), generators)
        cond.update(self.kind.batch_conditioning(self.config, batch, 0.0, generators))  # labels never dropped
        n = x0.shape[0]
        index = rng.randint(GRID_POINTS, n, generators)
        t = self.grid[index].to(x0.device)
        t_prev = (t - (self.grid[0] + 1)).clamp(min=0)  # the grid point below (t_0 = 0: f is the identity there)
        noise = rng.randn(x0.shape, generators).to(x0.device, x0.dtype)
        abar, abar_prev = (self.alphas_cumprod[s.cpu()].view(-1, 1, 1, 1).to(x0) for s in (t, t_prev))
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        predicted = self.consistency(model, x_t, t, cond)
        with torch.no_grad():
            if self.target == "teacher":  # one DDIM step of the guided teacher: t_n -> t_{n-1}
                x_prev = self.teacher_step(x_t, t, t_prev, cond, generators)
            else:  # consistency training: the same example and noise, one grid point less noisy
                x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * noise
            net = model if self.target_net is None else self.target_net  # never the exported EMA
            target = self.consistency(net, x_prev, t_prev, cond)
        d = (predicted.float() - target.float())
        return ((d ** 2 + self.huber_c ** 2).sqrt() - self.huber_c).mean()


def distill_stage(teacher: Stage, cfg, output_dir: str, resume: bool = False, teacher_source: str | None = None,
                  data=None) -> Stage:
    """Train and export a student of `teacher` (a DistillConfig `cfg`; its train section with `output_dir`).
    Data: `data` (a DataConfig), else the teacher's own training data as its origin records it."""
    if not teacher.kind.iterative:
        from ..errors import ConfigError

        raise ConfigError(f"a {teacher.kind.name} stage samples in one network evaluation already: nothing to distil")
    train = dataclasses.replace(cfg.train, output_dir=str(output_dir))
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

    # --- student: the teacher's weights and kind, v-prediction, sampled by LCM at few steps, guidance baked in
    w = cfg.distill.guidance_scale if cfg.distill.guidance_scale is not None else teacher.defaults.guidance_scale
    schedule = student_schedule(teacher)
    student_unet = type(teacher.unet).from_config(teacher.unet.config)
    student_unet.load_state_dict(teacher.unet.state_dict())
    defaults = teacher.defaults.replace({"sampler": cfg.distill.sampler, "steps": cfg.distill.steps,
                                         "guidance_scale": 1.0})
    teacher.unet.to(accelerator.device).eval()
    averages = {"target": EMA(student_unet, cfg.distill.target_decay, warmup=False)} if cfg.distill.target_decay else {}
    objective = ConsistencyDistillation(teacher, student_unet.config, schedule.config.prediction_type,
                                        cfg.distill.target, w if teacher.guided else 1.0, cfg.distill.huber_c,
                                        averages["target"].model if averages else None, cfg.distill.eta)
    accelerator.print(f"student of a {teacher.kind.name} stage ({sum(p.numel() for p in student_unet.parameters()) / 1e6:.2f}"
                      f" M parameters): target {cfg.distill.target}, guidance {w:g} baked in, sampled with "
                      f"{defaults.sampler} x{defaults.steps}")

    def preview_fn(ema_model, step):
        stage = Stage(ema_model, schedule, found.kind, defaults, teacher.class_names)
        return found.kind.preview(stage, found.shown, defaults.preview_per_class)

    started = time.perf_counter()
    ema = fit(accelerator, train, student_unet, found.loader, objective.loss, preview_fn, resume=resume,
              averages=averages)
    origin = {"distilled": {"teacher": weights_hash(teacher.unet), "teacher_source": teacher_source,
                            "method": cfg.distill.method, "target": cfg.distill.target, "iterations": train.max_steps,
                            "target_decay": cfg.distill.target_decay, "eta": cfg.distill.eta, "lr": train.lr,
                            "guidance_scale": w if teacher.guided else 1.0, "grid": GRID_POINTS,
                            "data": found.what, "seconds": round(time.perf_counter() - started, 1)}}
    if trained:
        origin["trained"] = trained  # the teacher's training: the data and the run the student's knowledge comes from
    student = Stage(ema.model, schedule, found.kind, defaults, teacher.class_names, origin)
    export_stage(accelerator, student, train.output_dir)
    return student


def recorded_data(trained: dict):
    """The DataConfig a stage was trained on, from its origin (ConfigError when none is recorded)."""
    from ..config.loading import from_dict
    from ..config.sections import DataConfig
    from ..errors import ConfigError

    raw = trained.get("config", {}).get("data")
    if raw is None:
        raise ConfigError("the teacher records no training data (a stage trained before stage.json kept its origin): "
                          "give the data in the config's `data` section")
    return from_dict(DataConfig, raw, "the teacher's stage.json (origin.trained.config.data)")
