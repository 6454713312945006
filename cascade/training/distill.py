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
Loss: pseudo-Huber, sqrt(d^2 + c^2) - c, averaged (LCM's; no LPIPS weights offline). With `adversarial` > 0 a
patch critic (cascade.models.critic) learns to tell the student's f from the real examples, given the stage's
conditioning, by the hinge loss, and the student's loss gets -adversarial x the critic's mean score (ADD's
adversarial term): without it f averages the texture that differs from draw to draw (docs/distillation.md).

`method="progressive"` is progressive distillation instead (Salimans & Ho 2022): in each round a student learns
to do in one DDIM step what its teacher does in two, on DDIM's trailing grid t_i = round(T - i T / N) - 1 (the
last step going to abar = 1), so a 64-step teacher becomes a 4-step student in four rounds (64 -> 32 -> 16 -> 8
-> 4), each round's student the next round's teacher. The target is the clean image x~ for which one DDIM step
from x_t lands where the teacher's two land: x~ = (x'' - (s''/s) x_t) / (a'' - (s''/s) a), with the loss
|x~ - x0|^2 / s^2 (the v-prediction error: SNR + 1 weighting). The student samples with DDIM at the last round's
steps, the timesteps of diffusers' DDIMScheduler (trailing spacing).

The pitfalls, each handled here and tested (tests/test_distill.py):
- the student predicts v (or x0), never epsilon: x0 = (x - sqrt(1 - abar) eps) / sqrt(abar) multiplies any
  error by 1 / sqrt(abar_T) ~ 2e4 at the cosine schedule's last step, the one a 1-step student samples at;
- the grid is exactly the timesteps LCMScheduler samples (for 1..50 steps);
- the target network is a network of its own: an EMA of the student's weights (decay 0.95, LCM's; 0 makes it
  the student itself under stop-gradient), updated after every step and kept in the checkpoints, never the
  slower EMA that is exported (docs/distillation.md: with the student itself as target this stage drifts);
- the loop is the shared one (cascade.training.loop): a resume after a kill is exact, as for every stage (for
  progressive distillation each round is a run of its own, and the next teacher is always read back from the
  round's export, in an uninterrupted run as in a resumed one).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from ..diffusion import rng
from ..io.atomic import write_text
from ..diffusion.sampling import guided
from ..errors import ConfigError
from ..inference.stage import Stage
from ..models.ema import EMA
from ..models.weights import weights_hash
from ..models.critic import critic_condition, critic_input, make_critic
from .examples import describe, recorded_data, stage_examples
from .loop import Adversary, fit, make_accelerator, process_state
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


def ddim_grid(num_train_timesteps: int, steps: int) -> torch.Tensor:
    """DDIM's trailing grid for `steps` steps and where its last step lands, [steps + 1] descending:
    round(T - i T / steps) - 1 for i = 0..steps-1 (DDIMScheduler's timesteps, "trailing"), then -1 (abar = 1).
    Grids of N and 2N steps nest: every other point of the finer one is the coarser one's."""
    import numpy as np

    points = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / steps)).astype(np.int64) - 1
    return torch.cat([torch.from_numpy(points), torch.tensor([-1])])


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


class ConsistencyDistillation:
    """The loss of a student of `teacher` (module docstring): one object holding the grid, the scalings and
    the teacher's guided denoiser; `loss(model, batch)` is what the shared loop calls."""

    def __init__(self, teacher: Stage, student_config, student_prediction: str, target: str = "teacher",
                 guidance_scale: float = 1.0, huber_c: float = 0.001, target_net=None, eta: float = 0.0,
                 critic=None, adversarial: float = 0.0):
        self.teacher, self.kind, self.config = teacher, teacher.kind, student_config
        self.target, self.huber_c, self.prediction, self.eta = target, huber_c, student_prediction, eta
        self.target_net = target_net  # None: the student's own weights (stop-gradient); else LCM's EMA of them
        self.critic, self.adversarial = critic, adversarial  # a PatchCritic and the weight of its term, or None
        self.seen, self.terms = None, {}  # the last loss call's (real, student's, conditioning), what the critic
        # learns from, and its terms, for the log (the loss is their weighted sum)
        self.alphas_cumprod = teacher.noise_scheduler.alphas_cumprod.double()
        self.grid = grid(len(self.alphas_cumprod))
        self.teacher_denoiser = frozen_denoiser(teacher, guidance_scale)

    def consistency(self, model, x: torch.Tensor, t: torch.Tensor, cond: dict) -> torch.Tensor:
        """f(x, t) of `model` (student weights) at integer timesteps t [N] (t = 0: x itself)."""
        c_skip, c_out = (c.view(-1, 1, 1, 1).to(x) for c in boundary_scalings(t))
        x0 = clean_estimate(model(x, t, **cond), x, self.alphas_cumprod[t.cpu()], self.prediction)
        return c_skip * x + c_out * x0

    def teacher_step(self, x_t: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, cond: dict,
                     generators: rng.Generators) -> torch.Tensor:
        """x_{t_prev} from x_t by one DDIM step of the guided teacher, with `eta` (`ddim_step`)."""
        return ddim_step(self.teacher_denoiser, self.teacher.noise_scheduler.config.prediction_type,
                         self.kind.clip_sample, self.alphas_cumprod, x_t, t, t_prev, cond, self.eta, generators)

    def loss(self, model, batch: dict) -> torch.Tensor:
        generators = rng.example_generators(batch["seed"])
        x0, cond = self.kind.training_inputs(self.config, batch["image"], self.alphas_cumprod.float(), generators)
        cond.update(self.kind.batch_conditioning(self.config, batch, 0.0, generators))  # labels never dropped
        index = rng.randint(GRID_POINTS, x0.shape[0], generators)
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
        loss = ((d ** 2 + self.huber_c ** 2).sqrt() - self.huber_c).mean()
        if self.critic is None:
            return loss
        given, classes = critic_condition(cond, self.config.num_labels), cond.get("class_labels")
        self.seen = (x0.detach(), predicted.detach(), given, classes)
        critic_params = list(self.critic.parameters())
        for p in critic_params:  # the student's term moves the student only
            p.requires_grad_(False)
        try:
            scores = self.critic(critic_input(predicted, given), classes)
        finally:
            for p in critic_params:
                p.requires_grad_(True)
        self.terms = {"consistency_loss": loss.detach(), "critic_score": scores.float().mean().detach()}
        return loss - self.adversarial * scores.float().mean()  # hinge GAN's generator term

    def critic_loss(self, critic) -> torch.Tensor:
        """The critic's hinge loss on the last loss call's examples (real) and the student's f at them (fake)."""
        real, fake, given, classes = self.seen
        return (torch.relu(1 - critic(critic_input(real, given), classes).float()).mean()
                + torch.relu(1 + critic(critic_input(fake, given), classes).float()).mean())


class ProgressiveDistillation:
    """The loss of one round of progressive distillation (module docstring): a student at `steps` DDIM steps
    learns two DDIM steps of `teacher` (its guidance baked in) per step of its own."""

    def __init__(self, teacher: Stage, student_config, student_prediction: str, steps: int,
                 guidance_scale: float = 1.0):
        self.teacher, self.kind, self.config, self.prediction = teacher, teacher.kind, student_config, student_prediction
        self.alphas_cumprod = teacher.noise_scheduler.alphas_cumprod.double()
        self.steps, self.fine = steps, ddim_grid(len(self.alphas_cumprod), 2 * steps)  # the teacher's grid
        self.teacher_denoiser = frozen_denoiser(teacher, guidance_scale)

    def teacher_steps(self, x_t: torch.Tensor, i: torch.Tensor, cond: dict) -> torch.Tensor:
        """The teacher's two DDIM steps from x_t at the student's grid point i [N] (the teacher's 2i) to i + 1."""
        x = x_t
        for j in (2 * i, 2 * i + 1):
            x = ddim_step(self.teacher_denoiser, self.teacher.noise_scheduler.config.prediction_type,
                          self.kind.clip_sample, self.alphas_cumprod, x, self.fine[j].to(x.device),
                          self.fine[j + 1].to(x.device), cond)
        return x

    def target(self, x_t: torch.Tensor, x_next: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor) -> torch.Tensor:
        """x~: the clean image from which one DDIM step x_t -> t_next lands on x_next (Salimans & Ho, eq. 8)."""
        abar, abar_next = (abar_at(self.alphas_cumprod, s).view(-1, 1, 1, 1).to(x_t.device) for s in (t, t_next))
        ratio = ((1 - abar_next) / (1 - abar)).sqrt()
        x_t, x_next = x_t.double(), x_next.double()
        return ((x_next - ratio * x_t) / (abar_next.sqrt() - ratio * abar.sqrt())).float()

    def loss(self, model, batch: dict) -> torch.Tensor:
        generators = rng.example_generators(batch["seed"])
        x0, cond = self.kind.training_inputs(self.config, batch["image"], self.alphas_cumprod.float(), generators)
        cond.update(self.kind.batch_conditioning(self.config, batch, 0.0, generators))  # labels never dropped
        i = rng.randint(self.steps, x0.shape[0], generators)
        t, t_next = self.fine[2 * i].to(x0.device), self.fine[2 * i + 2].to(x0.device)
        noise = rng.randn(x0.shape, generators).to(x0.device, x0.dtype)
        abar = abar_at(self.alphas_cumprod, t).view(-1, 1, 1, 1).to(x0)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        with torch.no_grad():
            target = self.target(x_t, self.teacher_steps(x_t, i, cond), t, t_next).to(x0)
        predicted = clean_estimate(model(x_t, t, **cond), x_t, abar.flatten().cpu(), self.prediction)
        return (((predicted.float() - target.float()) / (1 - abar).sqrt()) ** 2).mean()


def progressive_rounds(start_steps: int, steps: int) -> list[int]:
    """The student's steps in each round: start_steps / 2, ..., steps (64, 4: [32, 16, 8, 4])."""
    rounds = [start_steps // 2]
    while rounds[-1] > steps:
        rounds.append(rounds[-1] // 2)
    return rounds


def distill_stage(teacher: Stage, cfg, output_dir: str, resume: bool = False, teacher_source: str | None = None,
                  data=None) -> Stage:
    """Train and export a student of `teacher` (a DistillConfig `cfg`; its train section with `output_dir`).
    Data: `data` (a DataConfig), else the teacher's own training data as its origin records it."""
    if not teacher.kind.iterative:
        raise ConfigError(f"a {teacher.kind.name} stage samples in one network evaluation already: nothing to distil")
    d = cfg.distill
    w = d.guidance_scale if d.guidance_scale is not None else teacher.defaults.guidance_scale
    w = w if teacher.guided else 1.0
    source = {"teacher": weights_hash(teacher.unet), "teacher_source": teacher_source, "method": d.method,
              "lr": cfg.train.lr, "guidance_scale": w}
    if d.method == "consistency":
        adversarial = d.critic_weight()
        if adversarial and cfg.train.mixed_precision == "fp16":
            raise ConfigError("distill.adversarial with train.mixed_precision=fp16: the critic's optimizer would "
                              "share the student's loss scaler; use bf16 or no, or distill.adversarial=0")

        def consistency(stage, student, prediction):
            averages = {"target": EMA(student, d.target_decay, warmup=False)} if d.target_decay else {}
            critic, optimizer = make_critic(stage, d.critic_lr) if adversarial else (None, None)
            objective = ConsistencyDistillation(stage, student.config, prediction, d.target, w, d.huber_c,
                                                averages["target"].model if averages else None, d.eta, critic,
                                                adversarial)
            adversary = (Adversary(critic, optimizer, objective.critic_loss, terms=lambda: objective.terms)
                         if critic is not None else None)
            what = f"target {d.target}, guidance {w:g} baked in" + (
                f", a patch critic at weight {adversarial:g}" if critic is not None else "")
            return objective.loss, averages, what, adversary

        record = {**source, "target": d.target, "iterations": cfg.train.max_steps, "target_decay": d.target_decay,
                  "eta": d.eta, "grid": GRID_POINTS}
        if adversarial:
            record.update(adversarial=adversarial, critic_lr=d.critic_lr)
        return _train_student(teacher, cfg, Path(output_dir), resume, data, consistency, d.sampler or "lcm", d.steps,
                              record)

    # --- progressive: one run per round under OUT/rounds/, the last in OUT; each round's teacher read from disk
    T = len(teacher.noise_scheduler.alphas_cumprod)
    if T % d.steps or d.start_steps > T:
        raise ConfigError(f"distill.steps={d.steps}, distill.start_steps={d.start_steps}: the student samples with "
                          f"DDIM, whose steps land on the grid only when they divide the teacher's {T} training "
                          "timesteps, and the first round's teacher takes at most one step per timestep")
    from ..inference.pipeline import Pipeline
    from .checkpoints import latest_checkpoint

    rounds, stage, seconds, state = progressive_rounds(d.start_steps, d.steps), teacher, [], process_state()
    for r, steps in enumerate(rounds):
        folder = Path(output_dir) if r == len(rounds) - 1 else Path(output_dir) / "rounds" / f"{steps}_steps"
        expected = {"method": "progressive", "start_steps": d.start_steps, "round": r + 1, "steps": steps,
                    "teacher": weights_hash(stage.unet), "guidance_scale": w if r == 0 else 1.0,
                    "max_steps": cfg.train.max_steps}
        last = latest_checkpoint(folder)
        if resume and last is not None:  # only the run this round was: the same teacher, settings and length
            record = folder / "round.json"
            found = json.loads(record.read_text()) if record.is_file() else None
            if found != expected:
                raise ConfigError(f"--resume: {folder} holds another run ({found or 'not a progressive round'}; this "
                                  f"round is {expected}): give another train.output_dir, or start without --resume")
            if (folder / "pipeline" / "cascade.json").is_file() and int(last.name.split("_")[1]) >= cfg.train.max_steps:
                stage = Pipeline.from_pretrained(folder / "pipeline").stages[0]  # done before the kill
                seconds.append(stage.origin["distilled"]["seconds"])
                state.print(f"round {r + 1} of {len(rounds)} ({steps} steps): done in {folder}")
                continue
        if state.is_main_process:
            folder.mkdir(parents=True, exist_ok=True)
            write_text(folder / "round.json", json.dumps(expected, indent=1))

        def progressive(teacher_now, student, prediction, steps=steps, guidance=expected["guidance_scale"]):
            objective = ProgressiveDistillation(teacher_now, student.config, prediction, steps, guidance)
            return objective.loss, {}, f"round {r + 1} of {len(rounds)}: {2 * steps} -> {steps} DDIM steps", None

        record = {**source, "rounds": rounds, "round": r + 1, "start_steps": d.start_steps,
                  "round_teacher": expected["teacher"], "iterations": cfg.train.max_steps * (r + 1),
                  "earlier_rounds_seconds": list(seconds)}
        _train_student(stage, cfg, folder, resume, data, progressive, d.sampler or "ddim", steps, record,
                       seed=cfg.train.seed + r, clip=False)
        stage = Pipeline.from_pretrained(folder / "pipeline").stages[0]  # read back, as a resumed run reads it
        seconds.append(stage.origin["distilled"]["seconds"])
    return stage


def _train_student(teacher: Stage, cfg, output_dir: Path, resume: bool, data, objective, sampler: str, steps: int,
                   record: dict, seed: int | None = None, clip: bool | None = None) -> Stage:
    """One student run of `teacher` into `output_dir`: `objective(teacher, student_unet, prediction)` gives the loss,
    the averages it reads, a description and an adversary (or None); `record` goes into origin.distilled."""
    try:  # the student's sampling defaults (final timestep: the config's, null for progressive), checked first
        defaults = teacher.checked(dataclasses.replace(teacher.defaults, sampler=sampler, steps=steps,
                                                       guidance_scale=1.0, final_timestep=cfg.distill.final_timestep),
                                   where="distill")
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
