"""The config of `train/distill.py`: a trained stage (or every stage of a pipeline) distilled into a few-step
student (cascade.training.distill). The student's network, schedule, kind and data are the teacher's."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Literal, Optional

from .checks import check
from .sections import DataConfig, TrainConfig


ADVERSARIAL = 0.03  # the critic's weight when `adversarial` is null (consistency distillation)
# progressive distillation's unused keys
CONSISTENCY_ONLY = ("target", "huber_c", "eta", "target_decay", "critic_lr", "final_timestep", "phases")


@dataclass
class DistillSection:
    """How the student learns (cascade.training.distill) and how it samples."""

    method: Literal["consistency", "progressive"] = "consistency"  # consistency: consistency distillation in the latent-consistency-model form (LCM); progressive: Salimans & Ho's rounds, two teacher DDIM steps per student step
    target: Literal["teacher", "data"] = "teacher"  # teacher: one DDIM step of the teacher on the 50-point grid; data: the clean example noised again with the same noise (consistency training, ECT-style)
    huber_c: float = 0.001  # pseudo-Huber loss sqrt(d^2 + c^2) - c on [-1, 1] pixels (LCM's constant)
    eta: Optional[float] = None  # target teacher: DDIM's eta of the teacher's step (0: the ODE, LCM's; 1: ancestral); null: 1 (measured best for the demo SR stage), 0 with phases (a phased student learns the ODE's jumps: docs/distillation.md)
    target_decay: float = 0.95  # the target network: LCM's EMA of the student's weights (a network of its own, never the exported EMA); 0: the student itself under stop-gradient (measured unstable here: docs/distillation.md)
    guidance_scale: Optional[float] = None  # the teacher's classifier-free guidance baked into the student (None: the teacher's sampling default; 1: none)
    sampler: Optional[Literal["lcm", "tcd", "pcm", "ddim"]] = None  # the student's sampler (null: lcm for consistency, pcm with phases, ddim for progressive; its other sampling defaults are the teacher's)
    adversarial: Optional[float] = None  # consistency: weight of a patch critic's hinge loss in the student's loss (adversarial distillation, as ADD does: the critic tells the student's f from real examples given the input; cascade.models.critic); 0: none; null: 0.03 for consistency (measured best on the demo SR stage: docs/distillation.md), none for progressive
    critic_lr: float = 2e-4  # the critic's learning rate (AdamW, betas 0.5, 0.999)
    steps: int = 4  # the student's network evaluations per image
    final_timestep: Optional[int] = None  # consistency: the student's 2+ steps end at this grid point (t = 20 n - 1) if lower than its sampler's own last (LCM's 4: 259); null: the sampler's own (docs/distillation.md)
    phases: Optional[int] = None  # consistency: phased (PCM): f maps to the next of the `steps` timesteps the student samples at, not to the clean image, and it samples deterministically with pcm (equal to steps); null: LCM's one phase
    start_steps: int = 64  # progressive: the teacher's DDIM steps in the first round (halved each round down to `steps`)

    def critic_weight(self) -> float:
        """The critic's weight this run trains with (0: no critic)."""
        if self.adversarial is not None:
            return float(self.adversarial)
        return ADVERSARIAL if self.method == "consistency" else 0.0

    def teacher_eta(self) -> float:
        """The eta of the teacher's step this run trains with."""
        if self.eta is not None:
            return float(self.eta)
        return 0.0 if self.phases else 1.0

    def validate(self) -> None:
        check(self.huber_c > 0, "huber_c", self.huber_c, "must be > 0")
        check(0 <= self.target_decay < 1, "target_decay", self.target_decay, "must be in [0, 1)")
        check(self.eta is None or 0 <= self.eta <= 1, "eta", self.eta, "must be in [0, 1] or null")
        check(self.eta is None or self.target == "teacher", "eta", self.eta,
              "is the teacher's step's: distill.target=data takes no teacher step (null, or distill.target=teacher)")
        check(self.adversarial is None or 0 <= self.adversarial < float("inf"), "adversarial", self.adversarial,
              "must be a finite number >= 0 (0: no critic) or null")
        check(self.critic_lr > 0, "critic_lr", self.critic_lr, "must be > 0")
        check(self.guidance_scale is None or self.guidance_scale >= 0, "guidance_scale", self.guidance_scale,
              "must be >= 0 or null")
        if self.method == "consistency":
            check(1 <= self.steps <= 50, "steps", self.steps,
                  "must be in [1, 50] (the distillation grid has 50 points)")
            check(self.sampler in (None, "lcm", "tcd", "pcm"), "sampler", self.sampler,
                  "a consistency student samples with lcm, tcd or pcm (ddim is progressive distillation's)")
            check(self.phases is None or (type(self.phases) is int and self.phases >= 1), "phases", self.phases,
                  "must be a whole number of phases >= 1, or null")
            check(self.phases is None or self.phases == self.steps, "phases", self.phases,
                  f"a phased student samples at its phases' edges: must equal distill.steps={self.steps}, or null")
            check(self.phases is None or self.sampler in (None, "pcm"), "sampler", self.sampler,
                  "a phased student (distill.phases) samples with pcm, the jumps it learned")
            check(self.final_timestep is None or (type(self.final_timestep) is int and self.final_timestep >= 0),
                  "final_timestep", self.final_timestep, "must be a timestep >= 0 or null")
        else:
            check(self.steps >= 1, "steps", self.steps, "must be >= 1")
            check(not self.adversarial, "adversarial", self.adversarial,
                  "the critic trains beside consistency distillation only (distill.method=consistency)")
            check(self.sampler in (None, "ddim"), "sampler", self.sampler, "a progressive student samples with ddim")
            defaults = {f.name: f.default for f in fields(self) if f.default is not MISSING}
            for key in CONSISTENCY_ONLY:  # set by the user, it would be silently ignored
                check(getattr(self, key) == defaults[key], key, getattr(self, key),
                      "applies to consistency distillation only (distill.method=progressive has no use for it)")
            ratio = self.start_steps // self.steps
            check(self.start_steps > self.steps and ratio * self.steps == self.start_steps and ratio & (ratio - 1) == 0,
                  "start_steps", self.start_steps, f"must be distill.steps={self.steps} times a power of two above 1 "
                  "(each round halves the steps)")


@dataclass
class DistillConfig:
    """Everything `train/distill.py` needs."""

    teacher: Optional[str] = None  # the teacher: a pipeline folder or a Hub id (or --teacher)
    stages: Optional[list[int]] = None  # the teacher's stages to distil (None: all; the others are kept as they are)
    distill: DistillSection = field(default_factory=DistillSection)
    data: Optional[DataConfig] = None  # null: each stage's own training data, as its stage.json records it
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        output_dir="", batch_size=16, max_steps=1000, lr=1e-4, warmup_steps=50, ema_decay=0.995, label_dropout=0.0,
        sample_every=500, save_every=500))  # output_dir "": runs/<teacher>_distilled (progressive: _progressive); max_steps: per round for progressive

    def validate(self) -> None:
        check(self.stages is None or (len(self.stages) > 0 and all(i >= 0 for i in self.stages)), "stages",
              self.stages, "must be null or a non-empty list of stage indices")
