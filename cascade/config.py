"""Typed configuration: dataclasses with a comment per field, YAML presets, `key=value` overrides.

A config file is a YAML mapping whose sections mirror the dataclasses below. Unknown keys, values of
the wrong type and impossible values are rejected with a one-line `ConfigError` that names the file
and the dotted key at fault. Command-line overrides look like `train.max_steps=200` and are parsed
with `yaml.safe_load`, so `model.channel_mult=[1,2,2]` and `data.random_flip=false` work.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from .errors import ConfigError


@dataclass
class ModelConfig:
    """The UNet (`cascade.unet.UNet`); every field is passed to its constructor."""

    sample_size: int = 32  # output resolution in pixels (square)
    in_channels: int = 3  # channels of the noisy image x_t
    cond_channels: int = 0  # extra input channels concatenated to x_t (SR3: the upsampled low-res image)
    out_channels: int = 3  # channels of the prediction (epsilon or v)
    base_channels: int = 64  # channels at the first resolution
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # multiplier per resolution level
    num_res_blocks: int = 2  # residual blocks per level (the decoder has one more, as in ADM)
    attention_resolutions: list[int] = field(default_factory=lambda: [16])  # resolutions (px) with self-attention
    head_channels: int = 32  # channels per attention head
    dropout: float = 0.1  # dropout inside residual blocks
    num_classes: int = 0  # 0: unconditional; otherwise labels 0..num_classes-1 plus a learned null class
    use_aug_level: bool = False  # embed a conditioning-augmentation level (SR3 stages)
    norm_groups: int = 32  # GroupNorm groups (clamped to divide the channel count)
    layout: Literal["standard", "efficient"] = "standard"  # SR3/ADM, or Imagen's Efficient U-Net (see cascade.unet)
    num_labels: int = 0  # label-map stages: semantic classes of the label map (IDs 0..num_labels-1, plus a learned null map)
    label_embed_dim: int = 16  # label-map stages: channels of the learned per-pixel label embedding
    use_instances: bool = False  # label-map stages: one more input channel, pix2pixHD's instance-boundary map

    def validate(self) -> None:
        _positive(self, "sample_size", "in_channels", "out_channels", "base_channels", "num_res_blocks", "head_channels")
        _check(self.cond_channels >= 0, "cond_channels", self.cond_channels, "must be >= 0")
        _check(self.num_classes >= 0, "num_classes", self.num_classes, "must be >= 0")
        _check(self.num_labels >= 0, "num_labels", self.num_labels, "must be >= 0")
        _check(self.label_embed_dim > 0, "label_embed_dim", self.label_embed_dim, "must be > 0")
        _check(len(self.channel_mult) > 0 and all(m > 0 for m in self.channel_mult), "channel_mult",
               self.channel_mult, "must be a non-empty list of positive integers")
        _check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        from .unet import size_multiple  # here: the config module stays free of torch at import time

        multiple = size_multiple(self.channel_mult, self.layout)
        _check(self.sample_size % multiple == 0, "sample_size", self.sample_size,
               f"must be divisible by {multiple} (2 ** downsamplings of layout {self.layout!r} with "
               f"{len(self.channel_mult)} levels)")


@dataclass
class DiffusionConfig:
    """The forward process and the training objective (a diffusers `DDPMScheduler` holds the schedule)."""

    num_train_timesteps: int = 1000  # T, the number of discrete noise levels
    schedule: Literal["linear", "cosine"] = "linear"  # linear betas (DDPM) or cosine alpha-bar (Nichol & Dhariwal)
    beta_start: float = 0.0001  # first beta of the linear schedule
    beta_end: float = 0.02  # last beta of the linear schedule
    prediction_type: Literal["epsilon", "v_prediction"] = "epsilon"  # what the network predicts

    def validate(self) -> None:
        _positive(self, "num_train_timesteps")
        _check(0 < self.beta_start < self.beta_end < 1, "beta_start", self.beta_start,
               "needs 0 < beta_start < beta_end < 1")


@dataclass
class DataConfig:
    """Where training images come from (`cascade.data`)."""

    source: Literal["photos", "imagefolder", "shards", "hub", "layouts", "paired"] = "photos"  # built-in offline photos, a local folder, parquet/tar shards, a hub dataset; label-map stages: built-in layouts or a paired folder (cascade.label_data)
    path: Optional[str] = None  # imagefolder: root whose subfolders are the classes; shards: their folder or a glob; hub: dataset name (e.g. cifar10); paired: the folder holding images/, labels/ (and instances/)
    split: str = "train"  # dataset split
    image_column: Optional[str] = None  # hub: column holding images (auto-detected when None)
    label_column: Optional[str] = None  # hub: column holding class labels (auto-detected when None)
    crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # side of the random square crop, as a fraction of the shorter side [min, max]
    random_flip: bool = True  # random horizontal flips
    on_bad_image: Literal["error", "skip"] = "error"  # an undecodable file: stop naming it, or skip it with a warning and a count
    epoch_size: Optional[int] = None  # random crops per epoch; None: one per image (built-in photos: 10000)
    num_workers: int = 0  # DataLoader worker processes (decoding, cropping)
    streaming: bool = False  # read imagefolder/shards/hub as a stream: nothing indexed up front, exact resume (cascade.streams)
    shuffle_buffer: int = 1000  # streaming: records shuffled together per reader (held as raw bytes)
    partitions: Optional[int] = None  # streaming: fixed split of the data whose progress a checkpoint keeps (None: min(shards, 64), at least the readers)

    def validate(self) -> None:
        _check(len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "crop_scale",
               self.crop_scale, "must be [min, max] with 0 < min <= max <= 1")
        _check(self.source in ("photos", "layouts") or self.path, "path", self.path,
               f"is required when source is {self.source!r}")
        _check(self.epoch_size is None or self.epoch_size > 0, "epoch_size", self.epoch_size, "must be > 0 or null")
        _check(self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        _check(not self.streaming or self.source in ("imagefolder", "shards", "hub"), "streaming", self.streaming,
               "needs data.source imagefolder, shards or hub (the built-in photos and label-map data are indexed)")
        _check(self.shuffle_buffer >= 1, "shuffle_buffer", self.shuffle_buffer, "must be >= 1")
        _check(self.partitions is None or self.partitions >= 1, "partitions", self.partitions, "must be >= 1 or null")


@dataclass
class TrainConfig:
    """The optimisation loop (`cascade.training`)."""

    output_dir: str = "runs/base"  # checkpoints, logs, sample grids and the exported pipeline go here
    seed: int = 0  # seeds torch, numpy and python on every process
    batch_size: int = 16  # images per process per micro-step
    grad_accum: int = 1  # micro-steps per optimizer step
    max_steps: int = 1000  # optimizer steps in total
    lr: float = 2e-4  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas
    warmup_steps: int = 100  # linear learning-rate warmup, then constant
    grad_clip: float = 1.0  # max gradient norm (0 disables clipping)
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"  # passed to Accelerate
    ema_decay: float = 0.999  # EMA of the weights; the exported model is the EMA
    ema_warmup: bool = True  # use decay min(ema_decay, (1+n)/(10+n)) so early EMA tracks the model
    label_dropout: float = 0.1  # probability of replacing a class label by the null class (classifier-free guidance)
    log_every: int = 10  # optimizer steps between TensorBoard scalars
    sample_every: int = 500  # optimizer steps between sample-grid PNGs (0: only at the end)
    save_every: int = 500  # optimizer steps between checkpoints (0: only at the end)
    keep_last: int = 2  # checkpoints kept on disk
    on_nonfinite_loss: Literal["stop", "skip"] = "stop"  # a NaN/inf loss: stop naming the step, or skip that optimizer step and count it
    max_skipped_steps: int = 20  # with "skip": stop once this many steps have been skipped in total

    def validate(self) -> None:
        _positive(self, "batch_size", "grad_accum", "max_steps", "lr", "keep_last", "log_every", "max_skipped_steps")
        _check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "adam_betas",
               self.adam_betas, "must be two numbers in [0, 1)")
        for key in ("warmup_steps", "sample_every", "save_every", "weight_decay", "grad_clip"):
            _check(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        _check(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "must be in [0, 1)")
        _check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "must be in [0, 1)")


@dataclass(frozen=True)
class SampleConfig:
    """How a stage samples: its defaults are saved in stage.json; a call overrides single fields
    (`stage.sample(..., settings=dict(steps=50))`, `pipe(..., settings={1: dict(steps=50)})`)."""

    sampler: str = "dpm++"  # a key of cascade.sampling.SAMPLERS (diffusers schedulers)
    steps: int = 25  # network evaluations per image (x2 with guidance)
    guidance_scale: float = 1.0  # classifier-free guidance weight w: eps_u + w (eps_c - eps_u); 1 disables it
    aug_level: float = 0.0  # SR stages: noise-augmentation level s applied to the low-res input at sampling (CDM)
    consistent: bool = False  # SR stages: project every step so that the output downsamples exactly to the input
    preview_per_class: int = 4  # images per class (base) or held-out crops (SR) in the training previews

    def validate(self) -> None:
        from .sampling import SAMPLERS  # here: the config module stays free of torch at import time

        _check(self.sampler in SAMPLERS, "sampler", self.sampler, f"is not one of {', '.join(SAMPLERS)}")
        _positive(self, "steps", "preview_per_class")
        _check(self.guidance_scale >= 0, "guidance_scale", self.guidance_scale, "must be >= 0")
        _check(0 <= self.aug_level <= 1, "aug_level", self.aug_level, "must be in [0, 1]")

    def replace(self, changes: dict | None, where: str = "settings") -> "SampleConfig":
        """A copy with some fields changed, checked (ValueError names the key or value at fault)."""
        if not changes:
            return self
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown sampling setting {unknown[0]!r} (valid: {', '.join(valid)})")
        new = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        try:
            new.validate()
        except _Invalid as e:
            raise ValueError(f"{where}: {e.key}={e.value!r} {e.reason}") from None
        return new


@dataclass
class BaseStageConfig:
    """Everything `train/base.py` needs: a class-conditional base model."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def validate(self) -> None:
        _check(self.model.in_channels == self.model.out_channels, "model.out_channels", self.model.out_channels,
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
        _check(self.scale >= 2, "scale", self.scale, "must be an integer >= 2")
        _check(0 <= self.noise_aug_max <= 1, "noise_aug_max", self.noise_aug_max, "must be in [0, 1]")
        _check(0 <= self.blur_prob <= 1, "blur_prob", self.blur_prob, "must be in [0, 1]")
        _check(self.residual_scale > 0, "residual_scale", self.residual_scale, "must be > 0")
        _check(len(self.blur_sigma) == 2 and 0 < self.blur_sigma[0] <= self.blur_sigma[1], "blur_sigma",
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
        _check(self.model.cond_channels == self.model.in_channels, "model.cond_channels", self.model.cond_channels,
               f"must equal model.in_channels={self.model.in_channels} (the upsampled low-res image is concatenated)")
        _check(self.model.sample_size % self.sr.scale == 0, "sr.scale", self.sr.scale,
               f"must divide model.sample_size={self.model.sample_size}")
        _check(self.model.use_aug_level or self.sr.noise_aug_max == 0, "model.use_aug_level", self.model.use_aug_level,
               "must be true when sr.noise_aug_max > 0 (the model is told the augmentation level)")


@dataclass
class LabelConfig:
    """What the label maps of a label-map stage mean (`cascade.label_maps`); `model.num_labels` counts them."""

    names: list[str] = field(default_factory=list)  # one name per label ID (default: from the data, or the IDs)
    ignore_id: Optional[int] = None  # an ID meaning "unlabelled" (Cityscapes/ADE20K: 255 or 0): read as the null label

    def validate(self) -> None:
        _check(self.ignore_id is None or self.ignore_id >= 0, "ignore_id", self.ignore_id, "must be >= 0 or null")


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
        _check(self.model.num_labels > 0, "model.num_labels", self.model.num_labels,
               "must be > 0 for a label-map stage (the number of semantic classes)")
        _check(self.data.source in ("layouts", "paired"), "data.source", self.data.source,
               "must be 'layouts' (built in) or 'paired' (images/ + labels/ folders) for a label-map stage")
        _check(not self.labels.names or len(self.labels.names) == self.model.num_labels, "labels.names",
               self.labels.names, f"must list model.num_labels={self.model.num_labels} names")
        want = self.model.in_channels if self.sr else 0
        _check(self.model.cond_channels == want, "model.cond_channels", self.model.cond_channels,
               f"must be {want} ({'the upsampled low-res image' if self.sr else 'a base stage has no low-res input'})")
        if self.sr:
            _check(self.sr.kind == "sr3", "sr.kind", self.sr.kind, "must be sr3 for a label-map upsampler "
                   "(regression is an option of train/sr3.py)")
            _check(self.model.sample_size % self.sr.scale == 0, "sr.scale", self.sr.scale,
                   f"must divide model.sample_size={self.model.sample_size}")
            _check(self.model.use_aug_level or self.sr.noise_aug_max == 0, "model.use_aug_level",
                   self.model.use_aug_level, "must be true when sr.noise_aug_max > 0")


@dataclass
class SceneConfig:
    """The picture a one-shot scene stage generates (cascade.one_shot)."""

    long_side: int = 64  # px of the training image's longer side at the scene's scale (its aspect ratio is kept)
    crop: float = 0.75  # training crops span this fraction of each side of the scene: the denoiser never sees it whole
    scale_jitter: list[float] = field(default_factory=lambda: [0.9, 1.2])  # the scene is resized by a random factor in this range before cropping
    positional: bool = True  # OUR-GAN's vertical positional embedding: the model knows each row's height in the picture

    def validate(self) -> None:
        _check(self.long_side >= 8, "long_side", self.long_side, "must be >= 8 px")
        _check(0 < self.crop <= 1, "crop", self.crop, "must be in (0, 1]")
        _check(len(self.scale_jitter) == 2 and 0 < self.scale_jitter[0] <= self.scale_jitter[1], "scale_jitter",
               self.scale_jitter, "must be [min, max] with 0 < min <= max")


@dataclass
class SceneStageConfig:
    """The scene stage of `train/one_shot.py`: generates the whole picture at a coarse size."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(
        sample_size=48, cond_channels=1, base_channels=32, channel_mult=[1, 2], num_res_blocks=2,
        attention_resolutions=[], dropout=0.0))
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(schedule="cosine",
                                                                               prediction_type="v_prediction"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=16, max_steps=1200, lr=4e-4,
                                                                   warmup_steps=50, ema_decay=0.995))
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(steps=25))
    scene: SceneConfig = field(default_factory=SceneConfig)

    def validate(self) -> None:
        BaseStageConfig.validate(self)  # model.cond_channels and model.sample_size are set by train/one_shot.py
        _check(self.model.num_classes == 0, "model.num_classes", self.model.num_classes,
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
                                                                   warmup_steps=50, ema_decay=0.995))
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(sampler="dpm++sde", steps=20))
    sr: SRConfig = field(default_factory=lambda: SRConfig(scale=2, noise_aug_max=0.1, residual=True))
    scales: list[float] = field(default_factory=lambda: [0.8, 1.25])  # training crops come from the photo resized so its longer side is [min, max] x this stage's output long side (never above the photo's own)

    def validate(self) -> None:
        SR3StageConfig.validate(self)
        _check(self.sr.kind == "sr3", "sr.kind", self.sr.kind, "must be sr3 for a one-shot upsampler "
               "(regression is an option of train/sr3.py)")
        _check(len(self.scales) == 2 and 0 < self.scales[0] <= self.scales[1], "scales", self.scales,
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
        scales=[0.75, 8.0], train=TrainConfig(batch_size=8, max_steps=1000, lr=4e-4, warmup_steps=50, ema_decay=0.995)))  # every later scale, up to the photo's own (repeated beyond it)

    def validate(self) -> None:
        _check(self.max_side >= 64, "max_side", self.max_side, "must be >= 64")
        _check(self.epoch_size > 0, "epoch_size", self.epoch_size, "must be > 0")


# --------------------------------------------------------------------------------------------------
# Loading


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] = ()) -> Any:
    """Build `cls` from a YAML file plus `key=value` overrides, validating everything."""
    where = str(path) if path else "<defaults>"
    raw: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML ({_one_line(e)})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(raw).__name__}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.max_steps=100")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        _set_dotted(raw, key.strip(), parsed, where=f"override {item!r}")
    return _build(cls, raw, prefix="", where=where)


def to_dict(config: Any) -> dict:
    """A plain dict (YAML/JSON-serialisable) of a config dataclass."""
    return dataclasses.asdict(config)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))


def _set_dotted(tree: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str, where: str, base: Any = None) -> Any:
    """`cls` from `raw`, on top of `base` (default `cls()`): keys absent from `raw` keep the values of
    `base`, so a section whose defaults come from its parent (e.g. an SR stage's `model` with
    cond_channels=3) keeps them when one of its keys is set."""
    name = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: '{name}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key '{prefix}{unknown[0]}' (valid keys in '{name}': {', '.join(sorted(fields))})")
    base = base if base is not None else cls()
    kwargs = {}
    for key, value in raw.items():
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}", where, getattr(base, key))
    obj = dataclasses.replace(base, **kwargs)
    try:
        obj.validate()
    except _Invalid as e:
        raise ConfigError(f"{where}: {prefix}{e.key}={e.value!r} {e.reason}") from None
    return obj


def _coerce(tp: Any, value: Any, key: str, where: str, default: Any = None) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value if value is not None else {}, prefix=key + ".", where=where,
                      base=default if dataclasses.is_dataclass(default) else None)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key, where, default)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{where}: {key}={value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key}={value!r} must be a list, e.g. [1, 2]")
        return [_coerce(args[0], v, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key}={value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: {key}={value!r} must be an integer")
        return value
    if tp is float:
        # YAML 1.1 reads `1e-4` (no dot) as a string; accept any numeric spelling.
        if isinstance(value, bool):
            raise ConfigError(f"{where}: {key}={value!r} must be a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key}={value!r} must be a number") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key}={value!r} must be a string")
        return value
    return value


class _Invalid(Exception):
    def __init__(self, key: str, value: Any, reason: str):
        self.key, self.value, self.reason = key, value, reason


def _check(ok: bool, key: str, value: Any, reason: str) -> None:
    if not ok:
        raise _Invalid(key, value, reason)


def _positive(obj: Any, *keys: str) -> None:
    for key in keys:
        _check(getattr(obj, key) > 0, key, getattr(obj, key), "must be > 0")


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split())
