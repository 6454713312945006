"""The config sections every stage shares: the UNet (`model`), the forward process (`diffusion`), the
training data (`data`), the optimisation loop (`train`) and the sampling defaults (`sample`).
A comment on every field; `validate` checks each value (cascade.config.checks)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

from .checks import Invalid, check, positive


@dataclass
class ModelConfig:
    """The UNet (`cascade.models.unet.UNet`); every field is passed to its constructor."""

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
    norm_groups: int = 32  # GroupNorm groups (clamped to divide the channel count); 0: each pixel normalised over its channels alone (no statistic across positions: a crop and a whole picture alike)
    layout: Literal["standard", "efficient"] = "standard"  # SR3/ADM, or Imagen's Efficient U-Net (see cascade.models.unet)
    num_labels: int = 0  # label-map stages: semantic classes of the label map (IDs 0..num_labels-1, plus a learned null map)
    label_embed_dim: int = 16  # label-map stages: channels of the learned per-pixel label embedding
    use_instances: bool = False  # label-map stages: one more input channel, pix2pixHD's instance-boundary map
    mid_attention: bool = True  # self-attention in the middle block (global: every position sees every other)

    def validate(self) -> None:
        positive(self, "sample_size", "in_channels", "out_channels", "base_channels", "num_res_blocks", "head_channels")
        check(self.cond_channels >= 0, "cond_channels", self.cond_channels, "must be >= 0")
        check(self.num_classes >= 0, "num_classes", self.num_classes, "must be >= 0")
        check(self.num_labels >= 0, "num_labels", self.num_labels, "must be >= 0")
        check(self.label_embed_dim > 0, "label_embed_dim", self.label_embed_dim, "must be > 0")
        check(self.norm_groups >= 0, "norm_groups", self.norm_groups, "must be >= 0 (0: per-pixel normalisation)")
        check(len(self.channel_mult) > 0 and all(m > 0 for m in self.channel_mult), "channel_mult",
               self.channel_mult, "must be a non-empty list of positive integers")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        from ..models.unet import size_multiple

        multiple = size_multiple(self.channel_mult, self.layout)
        check(self.sample_size % multiple == 0, "sample_size", self.sample_size,
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
        positive(self, "num_train_timesteps")
        check(0 < self.beta_start < self.beta_end < 1, "beta_start", self.beta_start,
               "needs 0 < beta_start < beta_end < 1")


@dataclass
class DataConfig:
    """Where training images come from (`cascade.data`)."""

    source: Literal["photos", "imagefolder", "shards", "hub", "layouts", "paired"] = "photos"  # built-in offline photos, a local folder, parquet/tar shards, a hub dataset; label-map stages: built-in layouts or a paired folder (cascade.data.paired)
    path: Optional[str] = None  # imagefolder: root whose subfolders are the classes; shards: their folder or a glob; hub: dataset name (e.g. cifar10); paired: the folder holding images/, labels/ (and instances/)
    split: str = "train"  # dataset split
    image_column: Optional[str] = None  # hub: column holding images (auto-detected when None)
    label_column: Optional[str] = None  # hub: column holding class labels (auto-detected when None)
    crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])  # side of the random square crop, as a fraction of the shorter side [min, max]
    random_flip: bool = True  # random horizontal flips
    on_bad_image: Literal["error", "skip"] = "error"  # an undecodable file: stop naming it, or skip it with a warning and a count
    epoch_size: Optional[int] = None  # random crops per epoch; None: one per image (built-in photos: 10000)
    num_workers: int = 0  # DataLoader worker processes (decoding, cropping)
    streaming: bool = False  # read imagefolder/shards/hub as a stream: nothing indexed up front, exact resume (cascade.data.streams)
    shuffle_buffer: int = 1000  # streaming: records shuffled together per reader (held as raw bytes)
    partitions: Optional[int] = None  # streaming: fixed split of the data whose progress a checkpoint keeps (None: min(shards, 64), at least the readers)

    def validate(self) -> None:
        check(len(self.crop_scale) == 2 and 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1, "crop_scale",
               self.crop_scale, "must be [min, max] with 0 < min <= max <= 1")
        check(self.source in ("photos", "layouts") or self.path, "path", self.path,
               f"is required when source is {self.source!r}")
        check(self.epoch_size is None or self.epoch_size > 0, "epoch_size", self.epoch_size, "must be > 0 or null")
        check(self.num_workers >= 0, "num_workers", self.num_workers, "must be >= 0")
        check(not self.streaming or self.source in ("imagefolder", "shards", "hub"), "streaming", self.streaming,
               "needs data.source imagefolder, shards or hub (the built-in photos and label-map data are indexed)")
        check(self.shuffle_buffer >= 1, "shuffle_buffer", self.shuffle_buffer, "must be >= 1")
        check(self.partitions is None or self.partitions >= 1, "partitions", self.partitions, "must be >= 1 or null")


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
        positive(self, "batch_size", "grad_accum", "max_steps", "lr", "keep_last", "log_every", "max_skipped_steps")
        check(len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas), "adam_betas",
               self.adam_betas, "must be two numbers in [0, 1)")
        for key in ("warmup_steps", "sample_every", "save_every", "weight_decay", "grad_clip"):
            check(getattr(self, key) >= 0, key, getattr(self, key), "must be >= 0")
        check(0 <= self.ema_decay < 1, "ema_decay", self.ema_decay, "must be in [0, 1)")
        check(0 <= self.label_dropout < 1, "label_dropout", self.label_dropout, "must be in [0, 1)")


@dataclass(frozen=True)
class SampleConfig:
    """How a stage samples: its defaults are saved in stage.json; a call overrides single fields
    (`stage.sample(..., settings=dict(steps=50))`, `pipe(..., settings={1: dict(steps=50)})`)."""

    sampler: str = "dpm++"  # a key of cascade.diffusion.sampling.SAMPLERS (diffusers schedulers)
    steps: int = 25  # network evaluations per image (x2 with guidance)
    guidance_scale: float = 1.0  # classifier-free guidance weight w: eps_u + w (eps_c - eps_u); 1 disables it
    aug_level: float = 0.0  # SR stages: noise-augmentation level s applied to the low-res input at sampling (CDM)
    consistent: bool = False  # SR stages: project every step so that the output downsamples exactly to the input
    resample: int = 1  # masked edits: each step done this many times, jumping back one step in between (RePaint; ddpm/ddim)
    final_timestep: int | None = None  # students' samplers (lcm, tcd, pcm): 2+ steps end at this grid point if lower
    preview_per_class: int = 4  # images per class (base) or held-out crops (SR) in the training previews

    def validate(self) -> None:
        from ..diffusion.sampling import SAMPLERS

        check(self.sampler in SAMPLERS, "sampler", self.sampler, f"is not one of {', '.join(SAMPLERS)}")
        positive(self, "steps", "preview_per_class", "resample")
        check(self.guidance_scale >= 0, "guidance_scale", self.guidance_scale, "must be >= 0")
        check(0 <= self.aug_level <= 1, "aug_level", self.aug_level, "must be in [0, 1]")
        check(self.final_timestep is None or (type(self.final_timestep) is int and self.final_timestep >= 0),
              "final_timestep", self.final_timestep, "must be a timestep >= 0 or null")

    def replace(self, changes: dict | None, where: str = "settings") -> "SampleConfig":
        """A copy with some fields changed, checked (ValueError names the key or value at fault)."""
        if not changes:
            return self
        valid = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(valid))
        if unknown:
            raise ValueError(f"{where}: unknown sampling setting {unknown[0]!r} (valid: {', '.join(valid)})")
        # None leaves a field as it is, except where None is itself a value (final_timestep: the sampler's own end)
        nullable = {f.name for f in dataclasses.fields(self) if f.default is None}
        new = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None or k in nullable})
        try:
            new.validate()
        except Invalid as e:
            raise ValueError(f"{where}: {e.key}={e.value!r} {e.reason}") from None
        return new
