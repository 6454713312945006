"""The config of `train/one_shot.py`: a whole cascade trained on one photo (a scene stage and two
upsamplers, each with the shared sections), and how each stage crops the photo."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .checks import check
from .sections import DiffusionConfig, ModelConfig, SampleConfig, TrainConfig
from .stages import BaseStageConfig, SR3StageConfig, SRConfig


@dataclass
class SceneConfig:
    """The picture a one-shot scene stage generates (cascade.one_shot)."""

    long_side: int = 64  # px of the training image's longer side at the scene's scale (its aspect ratio is kept)
    crop: float = 0.75  # training crops span this fraction of each side of the scene: the denoiser never sees it whole
    scale_jitter: list[float] = field(default_factory=lambda: [0.9, 1.2])  # the scene is resized by a random factor in this range before cropping
    positional: bool = True  # OUR-GAN's vertical positional embedding: the model knows each row's height in the picture
    flip: float = 0.2  # with random_flip, the chance that a crop is mirrored (0.5: a light on either side; docs/one_shot.md)

    def validate(self) -> None:
        check(self.long_side >= 8, "long_side", self.long_side, "must be >= 8 px")
        check(0 < self.crop <= 1, "crop", self.crop, "must be in (0, 1]")
        check(0 <= self.flip <= 1, "flip", self.flip, "must be in [0, 1] (the chance that a crop is mirrored)")
        check(len(self.scale_jitter) == 2 and 0 < self.scale_jitter[0] <= self.scale_jitter[1], "scale_jitter",
               self.scale_jitter, "must be [min, max] with 0 < min <= max")


@dataclass
class SceneStageConfig:
    """The scene stage of `train/one_shot.py`: generates the whole picture at a coarse size."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        sample_size=48, cond_channels=1, base_channels=32, channel_mult=[1, 2], num_res_blocks=2,
        attention_resolutions=[], mid_attention=False, norm_groups=32, dropout=0.0))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(schedule="cosine",
                                                                               prediction_type="v_prediction"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=16, max_steps=1200, lr=4e-4,
                                                                   warmup_steps=50, ema_decay=0.995))
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(steps=25))
    scene: SceneConfig = field(default_factory=SceneConfig)

    def validate(self) -> None:
        BaseStageConfig.validate(self)  # model.cond_channels and model.sample_size are set by train/one_shot.py
        check(self.model.num_classes == 0, "model.num_classes", self.model.num_classes,
               "must be 0 (one training image has no classes)")


@dataclass
class OneShotSRStageConfig:
    """An upsampler of `train/one_shot.py`: SR3 with CDM's augmentation, on crops of the photo at its scale."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        sample_size=64, cond_channels=3, use_aug_level=True, base_channels=32, channel_mult=[1, 1, 2, 2],
        num_res_blocks=1, attention_resolutions=[8], dropout=0.0))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(schedule="cosine",
                                                                               prediction_type="v_prediction"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=8, max_steps=900, lr=4e-4,
                                                                   warmup_steps=50, ema_decay=0.995,
                                                                   sample_every=300, save_every=300))
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(sampler="dpm++sde", steps=20))
    sr: SRConfig = field(default_factory=lambda: SRConfig(scale=2, noise_aug_max=0.1, residual=True))
    scales: list[float] = field(default_factory=lambda: [0.8, 1.25])  # training crops come from the photo resized so its longer side is [min, max] x this stage's output long side (never above the photo's own)

    def validate(self) -> None:
        SR3StageConfig.validate(self)
        check(self.sr.kind == "sr3", "sr.kind", self.sr.kind, "must be sr3 for a one-shot upsampler "
               "(regression is an option of train/sr3.py)")
        check(len(self.scales) == 2 and 0 < self.scales[0] <= self.scales[1], "scales", self.scales,
               "must be [min, max] with 0 < min <= max")


@dataclass
class OneShotConfig:
    """Everything `train/one_shot.py` needs: a whole cascade trained on one photo (cascade.one_shot)."""

    image: Optional[str] = None  # the training photo (or --image)
    output_dir: str = "runs/one_shot"  # one folder per stage, and pipeline/ (the cascade)
    max_side: int = 4096  # a larger photo is downscaled (antialiased) so that its longer side is this
    random_flip: bool = True  # random horizontal flips of the crops
    epoch_size: int = 4096  # crops per epoch (all of one photo)
    scene: SceneStageConfig = field(default_factory=SceneStageConfig)
    coarse: OneShotSRStageConfig = field(default_factory=OneShotSRStageConfig)  # scene -> x scale, trained at that scale
    fine: OneShotSRStageConfig = field(default_factory=lambda: OneShotSRStageConfig(
        scales=[0.75, 8.0], train=TrainConfig(batch_size=8, max_steps=1000, lr=4e-4, warmup_steps=50, ema_decay=0.995),
        sample=SampleConfig(sampler="ddim", steps=10)))  # every later scale, up to the photo's own (repeated beyond it)

    def validate(self) -> None:
        check(self.max_side >= 64, "max_side", self.max_side, "must be >= 64")
        check(self.epoch_size > 0, "epoch_size", self.epoch_size, "must be > 0")
