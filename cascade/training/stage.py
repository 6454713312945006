"""`train_stage(cfg, kind)`: one stage trained from its config, the same for every kind and every
script in train/: data (cascade.data), model (cascade.models.unet), the kind's loss, previews, the
shared loop (cascade.training.loop), and the EMA model exported as a one-stage pipeline folder."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from accelerate import Accelerator

from ..config.loading import load_config, to_dict
from ..data import sources
from ..diffusion import schedule
from ..errors import ConfigError
from ..inference.pipeline import Pipeline
from ..inference.stage import Stage
from ..kinds.base import StageKind
from ..models.unet import UNet
from .examples import describe, stage_examples
from .loop import fit, make_accelerator


def parse_args(config_cls: type, doc: str, argv: list[str] | None = None, inputs: dict[str, str] | None = None):
    """`[--INPUT VALUE ...] --config FILE [key=value ...] [--resume]` -> (config, args); `inputs`: more options
    (name -> help), e.g. the one-shot script's `--image`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, help in (inputs or {}).items():
        parser.add_argument(name, help=help)
    parser.add_argument("--config", help="YAML preset, e.g. configs/base_photos.yaml (defaults if omitted)")
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override single keys, e.g. train.max_steps=200")
    args = parser.parse_args(argv)
    return load_config(config_cls, args.config, args.overrides), args


def export_stage(accelerator: Accelerator, stage, output_dir: str | Path) -> None:
    """Write a trained stage (EMA weights) as `<output_dir>/pipeline`, a one-stage cascade folder, in one step (a
    crash mid-export leaves the previous export as it was). A stage that can be tiled has its ERF (the tiles'
    default overlap) measured here once and kept in stage.json, so tiled runs need not measure it
    (cascade.inference.stage); it is only a cache: if measuring fails, the stage is exported without it."""
    if accelerator.is_main_process:
        out = Path(output_dir) / "pipeline"
        note = ""
        if stage.kind.spatial:
            training = stage.unet.training
            try:
                stage.unet.eval()
                overlap = stage.tile_overlap()
                note = f" (measured ERF radius {stage.erf['radius']} px: tiles overlap by {overlap} px)"
            except (RuntimeError, ValueError) as e:  # out of memory, a kind the measurement cannot take
                note = f" (ERF not measured: {' '.join(str(e).split())[:100]}; tiled runs will measure it)"
            finally:
                stage.unet.train(training)
        Pipeline([stage]).save_pretrained(out)
        accelerator.print(f"exported the EMA model to {out}{note}")
    accelerator.wait_for_everyone()  # every process may read the export next (a progressive round's next teacher)


def train_stage(cfg, kind: StageKind, resume: bool = False, examples=None) -> None:
    """Train one stage of kind `kind` from a stage config (`BaseStageConfig`, `SR3StageConfig`,
    `LabelStageConfig`, or any dataclass with model, diffusion, data, train and sample sections) and
    export it. Label-map kinds read pairs (cascade.data.paired), the others images (cascade.data).

    The kind says what the model is conditioned on and what it generates (cascade.kinds); this is
    everything else, the same for every kind. `examples` (cascade.data.one_image.OneImageData): examples the
    caller built (the one-shot crops of one photo) instead of `cfg.data`'s.
    """
    accelerator = make_accelerator(cfg.train, cfg)

    # --- data: random crops at the model's resolution, labels from the source (indexed, or streamed)
    size = cfg.model.sample_size
    found = stage_examples(getattr(cfg, "data", None), cfg.model, kind, cfg.train.batch_size, cfg.train.seed,
                           cfg.sample.preview_per_class, accelerator, examples)
    kind, class_names = found.kind, found.class_names
    sources.check_num_classes(found.name, class_names, cfg.model.num_classes)
    accelerator.print(describe(found, cfg.model, size))

    # --- model and forward process
    model = UNet(**vars(cfg.model))
    noise_scheduler = schedule.make_noise_scheduler(cfg.diffusion, clip_sample=kind.clip_sample)
    accelerator.print(f"model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    # An unconditional model claims no classes, whatever the data's folders are called.
    class_names = (class_names or [str(i) for i in range(cfg.model.num_classes)]) if cfg.model.num_classes else []
    try:
        Stage(model, noise_scheduler, kind, cfg.sample, class_names)  # does the kind fit the model?
    except ValueError as e:
        raise ConfigError(f"model: {e}") from None

    # --- loss: the kind's inputs and target; labels dropped at random for classifier-free guidance
    model_config = model.config  # the wrapped model that `fit` passes in (DDP) has no .config

    def loss_fn(model, batch):
        return kind.loss(model, model_config, noise_scheduler, batch, cfg.train.label_dropout)

    # --- previews from the EMA weights: the kind draws them (held-out crops for kinds with an input)
    def preview_fn(ema_model, step):
        stage = Stage(ema_model, noise_scheduler, kind, cfg.sample, class_names)
        return kind.preview(stage, found.shown, cfg.sample.preview_per_class)

    # --- train, then export the EMA weights as a one-stage pipeline
    started = time.perf_counter()
    ema = fit(accelerator, cfg.train, model, found.loader, loss_fn, preview_fn, resume=resume)
    seconds = round(time.perf_counter() - started, 1)  # this run's (a resumed run: since the resume)
    origin = {"trained": {"steps": cfg.train.max_steps, "data": found.what, "seconds": seconds,
                          "processes": accelerator.num_processes, "config": to_dict(cfg)}}
    if found.recipe:  # examples built from one photo: how to build them again (e.g. to distil this stage)
        origin["trained"]["recipe"] = found.recipe
    export_stage(accelerator, Stage(ema.model, noise_scheduler, kind, cfg.sample, class_names, origin),
                 cfg.train.output_dir)
