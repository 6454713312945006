"""What a stage trains on, and what its previews show: the one place that turns a stage's data settings into a
loader, for training (cascade.training.stage) and for distillation (cascade.training.distill) alike, and reads a
trained stage's data settings back from its origin (`recorded_data`).

- examples a caller built (`cascade.data.one_image.OneImageData`: the crops of one photo);
- label-map kinds: pairs of an image and its label map (cascade.data.paired);
- the others: images, indexed (cascade.data.sources, .crops) or streamed (cascade.data.streams).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..data import crops, paired, previews, sources, streams
from ..errors import ConfigError
from ..kinds.base import StageKind


@dataclass
class StageExamples:
    loader: object  # yields batches {"image", "label", "seed", ...}
    name: str  # the data's name, for messages
    class_names: list[str] | None  # the classes of the data (None: labels as stored)
    what: str  # one line for the log and the stage's origin
    shown: object  # what the previews show: held-out crops, pairs, the photo (None for a base stage)
    kind: StageKind  # the kind, its label names filled in from the data where it had none
    recipe: dict | None = None  # one-image examples: how to build them again


def stage_examples(data, model, kind: StageKind, batch: int, seed: int, preview_count: int, accelerator,
                   examples=None) -> StageExamples:
    """The examples of a stage: `data` (a DataConfig) for a `model` (its ModelConfig or UNet config) of `kind`,
    or the `examples` a caller built."""
    size = model.sample_size
    if examples is not None:
        return StageExamples(examples.loader(batch, seed), examples.name, None, examples.describe(),
                             examples.previews(preview_count), kind, examples.recipe or None)
    if kind.uses_label_maps:  # pairs of an image and its label map
        source = paired.load_pairs(data, model.num_labels, kind.ignore_id, kind.label_names)
        loader = paired.make_loader(source, size, data, batch, seed)
        if model.use_instances and not source.has_instances:
            raise ConfigError(f"model.use_instances=true, but {source.name} has no instance maps (instances/); "
                              "add them or set model.use_instances=false")
        if not kind.label_names:
            kind = dataclasses.replace(kind, label_names=tuple(source.label_names))
        shown = paired.held_out(data, model.num_labels, kind.ignore_id, size, preview_count)
        return StageExamples(loader, source.name, None, f"{len(source)} label-map pairs from {source.name}", shown,
                             kind)
    shown = previews.fixed_crops(data, size, preview_count) if kind.takes_input else None
    if data.streaming:
        loader = streams.make_loader(data, size, batch, seed, accelerator.process_index, accelerator.num_processes,
                                     num_classes=model.num_classes)
        spec = loader.dataset.spec
        return StageExamples(loader, spec.name, spec.class_names, spec.describe(), shown, kind)
    source = sources.load_source(data)
    loader = crops.make_loader(source, size, data, batch, seed)
    return StageExamples(loader, source.name, source.class_names, f"{len(source)} images from {source.name}", shown,
                         kind)


def describe(found: StageExamples, model, size: int) -> str:
    """The log line of a stage's data: what, classes, sizes."""
    kind = found.kind
    inputs = f"; {size // kind.scale} px -> " if kind.takes_input else "; "
    classes = (f"{model.num_labels} label IDs" if kind.uses_label_maps else
               f"{len(found.class_names)} classes" if found.class_names is not None else "labels as stored")
    return f"data: {found.what}, {classes}{inputs}{size} px {kind.name} stage"


def recorded_data(trained: dict):
    """The DataConfig a stage was trained on, from its origin (ConfigError when none is recorded)."""
    from ..config.loading import from_dict
    from ..config.sections import DataConfig

    raw = trained.get("config", {}).get("data")
    if raw is None:
        raise ConfigError("the teacher records no training data (a stage trained before stage.json kept its origin): "
                          "give the data in the config's `data` section")
    return from_dict(DataConfig, raw, "the teacher's stage.json (origin.trained.config.data)")
