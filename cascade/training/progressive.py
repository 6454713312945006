"""Progressive distillation (Salimans & Ho 2022), `train/distill.py distill.method=progressive`: the fallback to
consistency distillation (cascade.training.distill); what they share is in cascade.training.students.

In each round a student learns to do in one DDIM step what its teacher does in two, on DDIM's trailing grid t_i =
round(T - i T / N) - 1 (the last step going to abar = 1), so a 64-step teacher becomes a 4-step student in four
rounds (64 -> 32 -> 16 -> 8 -> 4), each round's student the next round's teacher. The target is the clean image x~
for which one DDIM step from x_t lands where the teacher's two land: x~ = (x'' - (s''/s) x_t) / (a'' - (s''/s) a),
with the loss |x~ - x0|^2 / s^2 (the v-prediction error: SNR + 1 weighting). The student samples with DDIM at the
last round's steps, the timesteps of diffusers' DDIMScheduler (trailing spacing).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..diffusion import rng
from ..errors import ConfigError
from ..inference.stage import Stage
from ..io.atomic import write_text
from ..models.weights import weights_hash
from .loop import process_state
from .students import abar_at, clean_estimate, ddim_step, frozen_denoiser, train_student


def ddim_grid(num_train_timesteps: int, steps: int) -> torch.Tensor:
    """DDIM's trailing grid for `steps` steps and where its last step lands, [steps + 1] descending:
    round(T - i T / steps) - 1 for i = 0..steps-1 (DDIMScheduler's timesteps, "trailing"), then -1 (abar = 1).
    Grids of N and 2N steps nest: every other point of the finer one is the coarser one's."""
    import numpy as np

    points = np.round(np.arange(num_train_timesteps, 0, -num_train_timesteps / steps)).astype(np.int64) - 1
    return torch.cat([torch.from_numpy(points), torch.tensor([-1])])


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


def distill_progressively(teacher: Stage, cfg, output_dir: str, resume: bool, data, source: dict, w: float) -> Stage:
    """`distill_stage` for `distill.method=progressive`: one run per round under OUT/rounds/, the last in OUT;
    each round's teacher read from disk. `source`: the record every round's origin starts from; `w`: the guidance
    baked in during the first round."""
    d = cfg.distill
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
        train_student(stage, cfg, folder, resume, data, progressive, d.sampler or "ddim", steps, record,
                       seed=cfg.train.seed + r, clip=False)
        stage = Pipeline.from_pretrained(folder / "pipeline").stages[0]  # read back, as a resumed run reads it
        seconds.append(stage.origin["distilled"]["seconds"])
    return stage
