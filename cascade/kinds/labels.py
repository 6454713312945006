"""Label-map kinds (pix2pixHD's task with a cascade; SDM, Wang et al. 2022): `LabelMap`, a base stage
conditioned on a semantic label map, and `LabelSR3`, an SR3 upsampler conditioned on it too.

The label map conditions every stage at that stage's output size (resized nearest, so no new IDs
appear): the UNet embeds each pixel's ID (cascade.models.unet, `label_map`) and, with `use_instances`,
sees pix2pixHD's instance-boundary map as one more channel. Training replaces an example's whole map
by the learned null map with probability `train.label_dropout`, so guidance on the map works at
sampling (`guidance_scale`, per stage). Upsamplers keep SR3's low-res conditioning and CDM's
augmentation. Tiles crop the label map with the image (both are `spatial`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
from PIL import Image

from ..data import label_maps
from ..io.images import signed_grid
from .base import Base, StageKind
from .sr3 import SR3


@dataclass(frozen=True)
class LabelMaps:
    """What the label-map kinds share: the map's meaning and the conditioning built from it."""

    uses_label_maps: ClassVar[bool] = True
    any_size: ClassVar[bool] = True  # label-map stages sample at the map's size
    label_names: tuple[str, ...] = ()  # one per ID (for previews and reports)
    ignore_id: int | None = None  # the data's "unlabelled" ID, read as the null map

    def label_conditioning(self, config, label_map: torch.Tensor | None, instances: torch.Tensor | None,
                           size: tuple[int, int], device) -> dict:
        """The UNet's label inputs at `size`, the same in training and sampling: IDs resized nearest
        (None: the null map), and the boundary map of the resized instances (None: no boundaries)."""
        n = None if label_map is None else label_map.shape[0]
        if label_map is None:
            label_map = torch.full((1, 1, *size), config.num_labels, dtype=torch.long)
        cond = {"label_map": label_maps.resize(label_map, size).to(device)}
        if config.use_instances:
            cond["boundary"] = (torch.zeros(n or 1, 1, *size, device=device) if instances is None
                                else label_maps.boundaries(label_maps.resize(instances, size)).to(device))
        return cond

    def batch_conditioning(self, config, batch, label_dropout, generators):
        cond = super().batch_conditioning(config, batch, label_dropout, generators)
        size = tuple(batch["image"].shape[-2:])
        maps = self.label_conditioning(config, batch["label_map"], batch.get("instances"), size, batch["image"].device)
        maps["label_map"], dropped = label_maps.drop(maps["label_map"], config.num_labels, label_dropout, generators)
        if "boundary" in maps:  # a dropped map drops its boundaries too
            maps["boundary"] = maps["boundary"] * ~dropped.view(-1, 1, 1, 1)
        return {**cond, **maps}

    def with_label_maps(self, stage, inputs, label_map, instances, device):
        config = stage.unet.config
        size = inputs.size if self.takes_input or label_map is None else tuple(label_map.shape[-2:])
        if not self.takes_input and (size[0] % stage.size_multiple or size[1] % stage.size_multiple):
            raise ValueError(f"label map size {size[1]}x{size[0]} is not a multiple of {stage.size_multiple}; "
                             f"use the Pipeline, which pads")
        if label_map is not None:
            label_map = label_maps.checked(label_map, config.num_labels, self.ignore_id, "label map", allow_null=True)
        if instances is not None and label_map is not None and instances.shape[-2:] != label_map.shape[-2:]:
            raise ValueError(f"instance map {tuple(instances.shape[-2:])} and label map "
                             f"{tuple(label_map.shape[-2:])} differ in size")
        cond = self.label_conditioning(config, label_map, instances, size, device)
        return replace(inputs, size=size, cond={**inputs.cond, **cond})

    def erf_inputs(self, config, size, generator, device):
        cond = {k: v for k, v in super().erf_inputs(config, size, generator, device).items()
                if k not in ("label_map", "boundary")}
        # Piecewise constant, as label maps are: random IDs on an 8 x 8 grid of blocks.
        blocks = torch.randint(0, config.num_labels, (1, 1, 8, 8), generator=generator)
        cond["label_map"] = label_maps.resize(blocks, (size, size)).to(device)
        if config.use_instances:
            cond["boundary"] = label_maps.boundaries(cond["label_map"]).to(device)
        return cond

    def preview(self, stage, held_out: dict, per_row: int) -> Image.Image:
        """Rows of (label map | sample | truth) for held-out pairs {"image", "label_map", "instances"}."""
        images, maps = held_out["image"], held_out["label_map"]
        source = self.source_from(images).to(stage.device) if self.takes_input else None
        out = stage.sample(source, label_map=maps, instances=held_out.get("instances"), seed=0,
                           progress=False).cpu().clamp(-1, 1)
        shown = label_maps.colourise(maps, stage.unet.config.num_labels)
        return signed_grid(torch.stack([shown, out, images], dim=1).flatten(0, 1), nrow=3)


@dataclass(frozen=True)
class LabelMap(LabelMaps, Base):
    """A base stage conditioned on a label map: generates an image of the map's size."""

    name: ClassVar[str] = "label_map"
    spatial: ClassVar[tuple[str, ...]] = ("label_map", "boundary")


@dataclass(frozen=True)
class LabelSR3(LabelMaps, SR3):
    """An SR3 upsampler (CDM's augmentation of the low-res input) also conditioned on the label map."""

    name: ClassVar[str] = "label_sr3"
    spatial: ClassVar[tuple[str, ...]] = ("cond_image", "label_map", "boundary")

    @classmethod
    def from_config(cls, sr, labels=None) -> "LabelSR3":
        base = SR3.from_config(sr)
        names = tuple(labels.names) if labels is not None else ()
        return cls(**{f.name: getattr(base, f.name) for f in fields(SR3)}, label_names=names,
                   ignore_id=labels.ignore_id if labels is not None else None)


def label_kind(cfg) -> StageKind:
    """The kind of a `LabelStageConfig`: an upsampler when it has an `sr` section, else a base stage."""
    if cfg.sr is not None:
        return LabelSR3.from_config(cfg.sr, cfg.labels)
    return LabelMap(tuple(cfg.labels.names), cfg.labels.ignore_id)
