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

With `phases` = P (phased consistency, Wang et al. 2024, "PCM") the trajectory is cut at the P timesteps the
student samples at (LCMScheduler's for P steps: 999, 759, 499, 259 for 4) and where its last step lands (t = 0),
and f maps x_t to the phase's lower edge s < t along the ODE instead of to the clean image: the DDIM jump
f(x, t) = sqrt(abar_s) x0 + sqrt(1 - abar_s) eps(x, t), the identity at t = s. Sampling is then deterministic,
from edge to edge (the `pcm` sampler: TCD's step with gamma 0), exactly the jumps it learned; LCM's sampler
instead draws fresh noise at every step.

`method="progressive"` is progressive distillation instead (cascade.training.progressive).

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

from pathlib import Path

import torch

from ..diffusion import rng
from ..diffusion.sampling import sampler_timesteps
from ..errors import ConfigError
from ..inference.stage import Stage
from ..models.critic import critic_condition, critic_input, make_critic
from ..models.ema import EMA
from ..models.weights import weights_hash
from .loop import Adversary
from .progressive import distill_progressively
from .students import clean_estimate, ddim_step, frozen_denoiser, train_student

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


def phase_edges(train_config, phases: int, final_timestep: int | None = None) -> torch.Tensor:
    """The edges of a phased student's phases, descending: the timesteps its sampler (pcm) takes at `phases` steps,
    then t = 0, where its last step lands (TCD's; 999, 759, 499, 259, 0 for 4 at 1000 training timesteps)."""
    return torch.tensor(sampler_timesteps("pcm", train_config, phases, final_timestep) + [0])


class ConsistencyDistillation:
    """The loss of a student of `teacher` (module docstring): one object holding the grid, the scalings and
    the teacher's guided denoiser; `loss(model, batch)` is what the shared loop calls."""

    def __init__(self, teacher: Stage, student_config, student_prediction: str, target: str = "teacher",
                 guidance_scale: float = 1.0, huber_c: float = 0.001, target_net=None, eta: float = 0.0,
                 critic=None, adversarial: float = 0.0, edges: torch.Tensor | None = None):
        self.teacher, self.kind, self.config = teacher, teacher.kind, student_config
        self.edges = None if edges is None else edges.sort().values  # phased: the phases' lower edges, ascending
        self.target, self.huber_c, self.prediction, self.eta = target, huber_c, student_prediction, eta
        self.target_net = target_net  # None: the student's own weights (stop-gradient); else LCM's EMA of them
        self.critic, self.adversarial = critic, adversarial  # a PatchCritic and the weight of its term, or None
        self.seen, self.terms = None, {}  # the last loss call's (real, student's, conditioning), what the critic
        # learns from, and its terms, for the log (the loss is their weighted sum)
        self.alphas_cumprod = teacher.noise_scheduler.alphas_cumprod.double()
        self.grid = grid(len(self.alphas_cumprod))
        self.teacher_denoiser = frozen_denoiser(teacher, guidance_scale)

    def boundary(self, t: torch.Tensor) -> torch.Tensor:
        """Phased: the lower edge s < t of each timestep's phase [N]."""
        return self.edges[torch.searchsorted(self.edges, t.cpu()) - 1].to(t.device)

    def consistency(self, model, x: torch.Tensor, t: torch.Tensor, cond: dict,
                    s: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(x, t), the clean estimate x0) of `model` (student weights) at integer timesteps t [N]: LCM's f (t = 0:
        x itself), or with the phases' edges s [N] the DDIM jump from t to s (t = s: x itself)."""
        abar = self.alphas_cumprod[t.cpu()]
        x0 = clean_estimate(model(x, t, **cond), x, abar, self.prediction)
        if s is None:
            c_skip, c_out = (c.view(-1, 1, 1, 1).to(x) for c in boundary_scalings(t))
            return c_skip * x + c_out * x0, x0
        a, a_s = abar.view(-1, 1, 1, 1).to(x), self.alphas_cumprod[s.cpu()].view(-1, 1, 1, 1).to(x)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return torch.where((t == s).view(-1, 1, 1, 1), x, a_s.sqrt() * x0 + (1 - a_s).sqrt() * eps), x0

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
        s = None if self.edges is None else self.boundary(t)  # phased: where the phase ends
        predicted, x0_hat = self.consistency(model, x_t, t, cond, s)
        with torch.no_grad():
            if self.target == "teacher":  # one DDIM step of the guided teacher: t_n -> t_{n-1}
                x_prev = self.teacher_step(x_t, t, t_prev, cond, generators)
            else:  # consistency training: the same example and noise, one grid point less noisy
                x_prev = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * noise
            net = model if self.target_net is None else self.target_net  # never the exported EMA
            target = self.consistency(net, x_prev, t_prev, cond, s)[0]
        d = (predicted.float() - target.float())
        loss = ((d ** 2 + self.huber_c ** 2).sqrt() - self.huber_c).mean()
        if self.critic is None:
            return loss
        given, classes = critic_condition(cond, self.config.num_labels), cond.get("class_labels")
        fake = predicted if s is None else x0_hat  # a phased f is the sample at its edge: the critic sees x0
        self.seen = (x0.detach(), fake.detach(), given, classes)
        critic_params = list(self.critic.parameters())
        for p in critic_params:  # the student's term moves the student only
            p.requires_grad_(False)
        try:
            scores = self.critic(critic_input(fake, given), classes)
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
                                                averages["target"].model if averages else None, d.teacher_eta(), critic,
                                                adversarial, edges)
            adversary = (Adversary(critic, optimizer, objective.critic_loss, terms=lambda: objective.terms)
                         if critic is not None else None)
            what = f"target {d.target}, guidance {w:g} baked in" + (
                f", a patch critic at weight {adversarial:g}" if critic is not None else "")
            return objective.loss, averages, what, adversary

        record = {**source, "target": d.target, "iterations": cfg.train.max_steps, "target_decay": d.target_decay,
                  "eta": d.teacher_eta(), "grid": GRID_POINTS}
        if adversarial:
            record.update(adversarial=adversarial, critic_lr=d.critic_lr)
        edges = None
        if d.phases:
            try:  # a final timestep off the grid: one line, before anything runs
                edges = phase_edges(teacher.noise_scheduler.config, d.phases, d.final_timestep)
            except ValueError as e:
                raise ConfigError(f"distill: {e}") from None
            record.update(phases=d.phases, phase_edges=edges.tolist())
        return train_student(teacher, cfg, Path(output_dir), resume, data, consistency,
                             d.sampler or ("pcm" if d.phases else "lcm"), d.steps, record)

    return distill_progressively(teacher, cfg, output_dir, resume, data, source, w)
