"""The configs of `train/base.py`, `train/sr3.py` and `train/label_map.py`: the shared sections plus what
the stage family adds (SR3's upsampling task and augmentation, a label map's meaning)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from .checks import check
from .sections import DataConfig, DiffusionConfig, ModelConfig, SampleConfig, TrainConfig


@dataclass
class BaseStageConfig:
    """Everything `train/base.py` needs: a class-conditional base model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> None:
        check(self.model.in_channels == self.model.out_channels, "model.out_channels", self.model.out_channels,
               "must equal model.in_channels for a denoiser")


@dataclass
class SRConfig:
    """The upsampling task of an SR3 stage and its conditioning augmentation (CDM section 3)."""

    scale: int = 2  # upsampling factor: the low-res input has model.sample_size / scale pixels
    kind: Literal["sr3", "regression"] = "sr3"  # diffusion upsampler, or SR3's one-step L2 regression baseline
    noise_aug_max: float = 0.2  # s_max: training corrupts the low-res input at s ~ U[0, s_max] (0: off)
    blur_prob: float = 0.5  # probability of blurring the low-res input in training (0: off)
    blur_sigma: list[float] = field(default_factory=lambda: [0.4, 0.6])  # blur sigma range, in low-res pixels
    residual: bool = False  # diffuse HR - upsample(LR) and add upsample(LR) back (SRDiff, Li et al. 2022); false: plain SR3
    residual_scale: float = 4.0  # residual stages: the residual is multiplied by this (std ~0.06 at 2x -> ~0.25)

    def validate(self) -> None:
        check(self.scale >= 2, "scale", self.scale, "must be an integer >= 2")
        check(0 <= self.noise_aug_max <= 1, "noise_aug_max", self.noise_aug_max, "must be in [0, 1]")
        check(0 <= self.blur_prob <= 1, "blur_prob", self.blur_prob, "must be in [0, 1]")
        check(self.residual_scale > 0, "residual_scale", self.residual_scale, "must be > 0")
        check(len(self.blur_sigma) == 2 and 0 < self.blur_sigma[0] <= self.blur_sigma[1], "blur_sigma",
               self.blur_sigma, "must be [min, max] with 0 < min <= max")


@dataclass
class SR3StageConfig:
    """Everything `train/sr3.py` needs: an SR3 upsampler (the UNet sees the upsampled low-res image)."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(sample_size=64, cond_channels=3, use_aug_level=True))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/sr3"))
    sample: SampleConfig = field(default_factory=SampleConfig)
    sr: SRConfig = field(default_factory=SRConfig)

    def validate(self) -> None:
        BaseStageConfig.validate(self)
        check(self.model.cond_channels == self.model.in_channels, "model.cond_channels", self.model.cond_channels,
               f"must equal model.in_channels={self.model.in_channels} (the upsampled low-res image is concatenated)")
        check(self.model.sample_size % self.sr.scale == 0, "sr.scale", self.sr.scale,
               f"must divide model.sample_size={self.model.sample_size}")
        check(self.model.use_aug_level or self.sr.noise_aug_max == 0, "model.use_aug_level", self.model.use_aug_level,
               "must be true when sr.noise_aug_max > 0 (the model is told the augmentation level)")


@dataclass
class LabelConfig:
    """What the label maps of a label-map stage mean (`cascade.data.label_maps`); `model.num_labels` counts them."""

    names: list[str] = field(default_factory=list)  # one name per label ID (default: from the data, or the IDs)
    ignore_id: Optional[int] = None  # an ID meaning "unlabelled" (Cityscapes/ADE20K: 255 or 0): read as the null label

    def validate(self) -> None:
        check(self.ignore_id is None or self.ignore_id >= 0, "ignore_id", self.ignore_id, "must be >= 0 or null")


@dataclass
class LabelStageConfig:
    """Everything `train/label_map.py` needs: a label-map stage, a base stage (no `sr` section) or an
    upsampler (with one), conditioned on the label map at its own size."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(num_labels=6))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(source="layouts"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="runs/labels"))
    sample: SampleConfig = field(default_factory=SampleConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    sr: Optional[SRConfig] = None  # an upsampler: the low-res image as in SR3, plus the label map

    def validate(self) -> None:
        BaseStageConfig.validate(self)
        check(self.model.num_labels > 0, "model.num_labels", self.model.num_labels,
               "must be > 0 for a label-map stage (the number of semantic classes)")
        check(self.data.source in ("layouts", "paired"), "data.source", self.data.source,
               "must be 'layouts' (built in) or 'paired' (images/ + labels/ folders) for a label-map stage")
        check(not self.labels.names or len(self.labels.names) == self.model.num_labels, "labels.names",
               self.labels.names, f"must list model.num_labels={self.model.num_labels} names")
        want = self.model.in_channels if self.sr else 0
        check(self.model.cond_channels == want, "model.cond_channels", self.model.cond_channels,
               f"must be {want} ({'the upsampled low-res image' if self.sr else 'a base stage has no low-res input'})")
        if self.sr:
            check(self.sr.kind == "sr3", "sr.kind", self.sr.kind, "must be sr3 for a label-map upsampler "
                   "(regression is an option of train/sr3.py)")
            check(self.model.sample_size % self.sr.scale == 0, "sr.scale", self.sr.scale,
                   f"must divide model.sample_size={self.model.sample_size}")
            check(self.model.use_aug_level or self.sr.noise_aug_max == 0, "model.use_aug_level",
                   self.model.use_aug_level, "must be true when sr.noise_aug_max > 0")
