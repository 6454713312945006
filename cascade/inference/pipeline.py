"""Inference: a cascade is an ordered list of stages (cascade.inference.stage), run one after the other.

Stage 0 generates from class labels or noise (a base stage), or from a label map (label-map
stages, cascade.kinds.labels.LabelMap, which then condition every stage on the map); every later stage
takes the previous one's output (an SR3 upsampler: CDM's non-truncated conditioning augmentation at the stage's level,
then bicubic upsampling and concatenation). `upscale` starts at an upsampler with a user's image.

Folders (`save_pretrained`, `from_pretrained`, by path or Hub id, `push_to_hub`): cascade.inference.folders;
what a pipeline says of itself (`repr`, the model card): cascade.inference.card.

Usage:
    pipe = Pipeline.from_pretrained("runs/cascade_photos")
    images = pipe(class_labels=[0, 1, 2], seed=0)                 # final PIL images; image i has seed 0 + i
    images = pipe(class_labels=[0, 1], seed=0, settings={1: dict(steps=50)})  # stage 1 with 50 steps, this call only
    big = pipe.upscale(Image.open("photo.png"))                   # SR only
    photos = Pipeline.from_pretrained("runs/labels_layouts")(label_maps="map.png", num_images=3)  # label maps
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ..diffusion import rng
from ..errors import CheckpointError
from ..io.images import (check_output_type, pad_to_multiple, signed_batches_to_output, signed_to_output,
                         user_images_to_signed)
from .card import describe
from .folders import CASCADE_FILE, hub_options, load_stages, save
from .hub import is_repo_id, push_folder
from .stage import Stage, Tiling


class Pipeline:
    """An ordered list of stages: optionally a base stage, then upsamplers. Call it to generate."""

    def __init__(self, stages: Sequence[Stage], offload_device: torch.device | str | None = None):
        if not stages:
            raise ValueError("a Pipeline needs at least one stage")
        self.stages = list(stages)
        for i, stage in enumerate(self.stages[1:], start=1):
            if not stage.kind.takes_input:
                raise ValueError(f"stage {i} is a {stage.kind.name} stage; only stage 0 may take no input")
            before = self.stages[i - 1]
            # Kinds trained on crops (label maps, one-shot) sample at any size, whatever their crops were.
            if before.resolution != stage.input_resolution and not stage.kind.any_size:
                raise ValueError(f"stage {i} upsamples {stage.input_resolution} px -> {stage.resolution} px, "
                                 f"but stage {i - 1} outputs {before.resolution} px")
        # Offload: keep every stage on the CPU and move each to this device only while it runs.
        self.offload_device = torch.device(offload_device) if offload_device is not None else None
        self.source: str | None = None  # what from_pretrained was given (a folder or a Hub id)
        self.folder: Path | None = None  # the local folder it was read from (the Hub cache for an id)

    def __repr__(self) -> str:
        return describe(self)

    @property
    def base(self) -> Stage | None:
        return None if self.stages[0].kind.takes_input else self.stages[0]

    @property
    def upsamplers(self) -> list[Stage]:
        return [s for s in self.stages if s.kind.takes_input]

    @property
    def class_names(self) -> list[str]:
        return self.stages[0].class_names

    def to(self, device: torch.device | str) -> "Pipeline":
        for stage in self.stages:
            stage.unet.to(device)
        return self

    def enable_offload(self, device: torch.device | str) -> "Pipeline":
        """Run each stage on `device` in turn, keeping the others on the CPU (for small GPUs)."""
        self.offload_device = torch.device(device)
        return self.to("cpu")

    def with_settings(self, settings: dict | None) -> "Pipeline":
        """A pipeline over the same models whose stages sample with other defaults: `settings`
        {stage index: {field: value}} (this pipeline is unchanged)."""
        per_stage = self.stage_settings(settings)
        stages = [stage.with_defaults(changes) for stage, changes in zip(self.stages, per_stage)]
        pipe = Pipeline(stages, self.offload_device)
        pipe.source, pipe.folder = self.source, self.folder
        return pipe

    def stage_settings(self, settings: dict | None, **every) -> list[dict]:
        """Per-stage overrides for one call: `every` (e.g. steps=20) for all stages, then `settings`
        {stage index (negative counts from the end): {field: value}} on top."""
        per_stage = [{k: v for k, v in every.items() if v is not None} for _ in self.stages]
        for index, changes in (settings or {}).items():
            try:
                per_stage[int(index)].update(changes)
            except (IndexError, ValueError):
                raise ValueError(f"settings for stage {index!r}: the pipeline has stages 0..{len(self.stages) - 1}") \
                    from None
        for i, (stage, changes) in enumerate(zip(self.stages, per_stage)):  # every stage's, before any sampling
            stage.settings(changes, where=f"stage {i}")
        return per_stage

    def _cascade(self, first: int, images, class_labels, num_images, generators, per_stage, progress,
                 tiling=None, extra: list[dict] | None = None) -> list[torch.Tensor]:
        outputs = []
        for i, stage in enumerate(self.stages[first:], start=first):
            more = extra[i] if extra is not None else {}
            if self.offload_device is not None:
                stage.unet.to(self.offload_device)
            try:
                images = stage.sample(None if images is None else images.clamp(-1, 1),
                                      class_labels=class_labels if stage.unet.config.num_classes else None,
                                      num_images=num_images, generator=generators, settings=per_stage[i],
                                      tiling=tiling if stage.kind.spatial else None, progress=progress, **more)
            finally:
                if self.offload_device is not None:
                    stage.unet.to("cpu")
            outputs.append(images.clamp(-1, 1))
        return outputs

    def __call__(self, class_labels=None, num_images: int | None = None, seed=None,
                 generator: rng.Generators = None, steps: int | None = None, guidance_scale: float | None = None,
                 settings: dict | None = None, output_type: str = "pil", return_intermediates: bool = False,
                 progress: bool = True, label_maps=None, instances=None, edit_from=None, mask=None,
                 margin: int = 16, tile_size: int | None = None, overlap: int | None = None, tile_batch: int = 8):
        """Generate: the base stage from `class_labels` (indices or names; or `num_images` for an
        unconditional model), then every upsampler.

        Label-map cascades (cascade.kinds.labels.LabelMap): `label_maps` (one map or a list: HxW arrays of
        IDs, single-channel PIL images, paths, or [N x 1 x H x W] tensors) at the output size, which
        any size may be (maps are padded to what the stages take, outputs cropped back); each stage
        sees the map resized nearest to its own size. One map with `num_images` draws that many
        samples of it. `instances`: instance-ID maps of the same size (boundaries, pix2pixHD).
        `edit_from` (the image a previous call made) and `mask` (nonzero = the region to redo, e.g.
        where the label changed): only the mask grown by `margin` px is generated again, every stage
        keeping the rest; the output equals `edit_from` outside it exactly. `tile_size` / `overlap` /
        `tile_batch`: denoise in tiles of that many output pixels (see `upscale`).

        `seed`: an int (image i gets seed + i) or one per image: an image is the same whatever batch
        it is drawn in (`generator`, one for the whole batch, is the other way). `steps` /
        `guidance_scale` override every stage; `settings` {stage: {field: value}} single stages.
        Returns the final images as PIL (`output_type="pil"`) or a tensor [N x 3 x H x W] in [0, 1]
        ("pt"); with `return_intermediates`, a list with every stage's output instead.
        """
        check_output_type(output_type)
        if self.base is None:
            raise ValueError("this pipeline has no base stage; use pipe.upscale(images)")
        if class_labels is not None and not self.base.unet.config.num_classes:
            raise ValueError("class_labels given, but the base stage is unconditional (num_classes=0); "
                             "pass num_images instead")
        tiling = Tiling(tile_size, overlap, tile_batch) if tile_size is not None else None
        if label_maps is None and (instances is not None or edit_from is not None or mask is not None):
            raise ValueError("instances, edit_from and mask go with label_maps")
        extra, crop = None, None
        if label_maps is not None:
            extra, crop, num_images = self._label_inputs(label_maps, instances, edit_from, mask, margin, num_images)
        n = len(class_labels) if class_labels is not None else (num_images or 1)
        generators = rng.per_image(seed, n) if seed is not None else generator
        per_stage = self.stage_settings(settings, steps=steps, guidance_scale=guidance_scale)
        outputs = self._cascade(0, None, class_labels, num_images, generators, per_stage, progress, tiling, extra)
        if crop is not None:  # padded label maps: back to the size asked for
            outputs = [o[..., :math.ceil(crop[0] * o.shape[-2] / outputs[-1].shape[-2]),
                         :math.ceil(crop[1] * o.shape[-1] / outputs[-1].shape[-1])] for o in outputs]
        converted = [signed_to_output(o, output_type) for o in outputs]
        return converted if return_intermediates else converted[-1]

    def _label_inputs(self, label_maps, instances, edit_from, mask, margin: int, num_images: int | None):
        """Per-stage sampling inputs of label maps (and an edit) at the final size: ([{label_map,
        instances, keep} per stage], the unpadded (H, W), the number of images)."""
        from ..data.label_maps import as_maps, dilate, resize, shrink_mask
        from ..diffusion.resize import downsample

        if not self.base.kind.uses_label_maps:
            raise ValueError(f"label_maps given, but the base stage is a {self.base.kind.name} stage")
        maps = as_maps(label_maps)
        if num_images and maps.shape[0] == 1:
            maps = maps.expand(num_images, -1, -1, -1)
        n, (h, w) = maps.shape[0], maps.shape[-2:]
        if num_images and n != num_images:
            raise ValueError(f"num_images={num_images} for {n} label maps")
        inst = None if instances is None else as_maps(instances, "instance map")
        if inst is not None and inst.shape[0] not in (1, n):
            raise ValueError(f"{inst.shape[0]} instance maps for {n} label maps")
        inst = None if inst is None else inst.expand(n, -1, -1, -1)
        if inst is not None and inst.shape[-2:] != maps.shape[-2:]:
            raise ValueError(f"instance map {tuple(inst.shape[-2:])} and label map {(h, w)} differ in size")
        scales = [math.prod(s.kind.scale for s in self.stages[i + 1:]) for i in range(len(self.stages))]
        multiple = scales[0] * math.lcm(self.base.size_multiple, input_multiple(self.stages[1:]))
        pad = lambda x: F.pad(x, (0, (-w) % multiple, 0, (-h) % multiple), mode="replicate")  # noqa: E731
        maps = pad(maps.float()).long()
        inst = None if inst is None else pad(inst.float()).long()
        full = maps.shape[-2:]
        sizes = [(full[0] // k, full[1] // k) for k in scales]
        keeps = [None] * len(self.stages)
        if edit_from is not None or mask is not None:
            if edit_from is None or mask is None:
                raise ValueError("an edit needs both edit_from (the previous output) and mask (the region to redo)")
            known = torch.cat(user_images_to_signed(edit_from))
            region = as_maps(mask, "mask") != 0
            for what, x in (("edit_from", known), ("mask", region)):
                if x.shape[0] not in (1, n):
                    raise ValueError(f"{x.shape[0]} {what} images for {n} label maps")
            for what, x in (("edit_from", known), ("mask", region)):
                if tuple(x.shape[-2:]) != (h, w):
                    raise ValueError(f"{what} is {x.shape[-1]}x{x.shape[-2]}, the label map {w}x{h}")
            known = pad(known).expand(n, -1, -1, -1)
            region = F.pad(dilate(region, margin), (0, full[1] - w, 0, full[0] - h)).expand(n, -1, -1, -1)
            keeps = [(downsample(known, k) if k > 1 else known, shrink_mask(region, size))
                     for k, size in zip(scales, sizes)]
        extra = []
        for stage, size, keep in zip(self.stages, sizes, keeps):
            if not stage.kind.uses_label_maps:
                extra.append({"keep": keep} if keep is not None else {})
                continue
            item = {"label_map": resize(maps, size), "instances": None if inst is None else resize(inst, size)}
            extra.append({**item, "keep": keep} if keep is not None else item)
        return extra, (h, w), n

    def upscale(self, images, class_labels=None, seed=None, generator: rng.Generators = None,
                steps: int | None = None, guidance_scale: float | None = None, aug_level: float | None = None,
                start_at: int | None = None, tile_size: int | None = None, overlap: int | None = None,
                tile_batch: int = 8, consistent: bool | None = None, settings: dict | None = None,
                output_type: str = "pil", return_intermediates: bool = False, progress: bool = True):
        """Super-resolve the user's images with the upsamplers from `start_at` (default: the first).

        `images`: a PIL image, an HxWx3 array (uint8, or float in [0, 1]), a [3 x H x W] or
        [N x 3 x H x W] tensor in [0, 1], or a list of these; any size (inputs are padded by
        reflection to a size the UNet takes, and the output cropped back). `aug_level` and
        `consistent` override the upsamplers' settings, `steps` / `guidance_scale` every stage's,
        `settings` {stage: {field: value}} single stages. `seed`: input image i (counting every
        image of every input) gets seed + i. Returns one output per input.

        Large images: `tile_size` (output pixels of each stage) denoises overlapping tiles jointly at
        every step, `tile_batch` at a time, so accelerator memory depends on the tile, not the image
        (the full-size state stays on the CPU); `overlap` defaults to each stage's measured ERF radius
        (`Stage.tile_overlap()`). `consistent` makes every output downsample exactly to its input.
        """
        check_output_type(output_type)
        if not self.upsamplers:
            raise ValueError(f"this pipeline has no upsampler, only a {self.stages[0].resolution} px base stage; "
                             f"upscale with a pipeline that has an SR3 stage (e.g. runs/sr3_photos/pipeline)")
        start = start_at if start_at is not None else (1 if self.base is not None else 0)
        if not 0 <= start < len(self.stages) or not self.stages[start].kind.takes_input:
            raise ValueError(f"start_at={start_at}: stage {start} is not an upsampler")
        stages = self.stages[start:]
        per_stage = self.stage_settings(settings, steps=steps, guidance_scale=guidance_scale)
        for i in range(start, len(self.stages)):
            per_stage[i] = {**{k: v for k, v in dict(aug_level=aug_level, consistent=consistent).items()
                               if v is not None}, **per_stage[i]}
        tiling = Tiling(tile_size, overlap, tile_batch) if tile_size is not None else None
        multiple = input_multiple(stages)
        results, done = [], 0
        for batch in user_images_to_signed(images):
            n, (h, w) = batch.shape[0], batch.shape[-2:]
            generators = rng.per_image(seed, n, first=done) if seed is not None else generator
            outputs = self._cascade(start, pad_to_multiple(batch, multiple), class_labels, n, generators, per_stage,
                                    progress, tiling)
            done += n
            scale, cropped = 1, []
            for stage, out in zip(stages, outputs):
                scale *= stage.kind.scale
                cropped.append(out[..., :h * scale, :w * scale])
            results.append(cropped if return_intermediates else cropped[-1:])
        per_output = [[r[i] for r in results] for i in range(len(results[0]))]
        converted = [signed_batches_to_output(outs, output_type) for outs in per_output]
        return converted if return_intermediates else converted[-1]

    def save_pretrained(self, folder: str | Path, extra_files: dict[str, str] | None = None,
                        repo_id: str | None = None, license: str = "apache-2.0") -> None:
        """Write the pipeline folder in one step (a crash mid-save leaves the previous folder as it was):
        every stage, cascade.json, the model card (README.md), what the folder it was loaded from knows
        (samples.png, eval/ reports, one_shot.json) and `extra_files` {name: text}."""
        save(self, folder, extra_files, repo_id=repo_id, license=license)

    @classmethod
    def from_pretrained(cls, name: str | Path, revision: str | None = None, cache_dir: str | Path | None = None,
                        local_files_only: bool | None = None, token: str | bool | None = None,
                        device: torch.device | str | None = None) -> "Pipeline":
        """A pipeline folder, or a pipeline on the Hugging Face Hub by id (`org/name`): downloaded through
        `huggingface_hub.snapshot_download`, so `revision`, `cache_dir`, `local_files_only`, `token` and
        HF_HUB_OFFLINE behave as in diffusers. A folder that exists takes precedence over an id."""
        stages, folder = load_stages(name, hub_options(revision, cache_dir, local_files_only, token))
        pipe = cls(stages)
        pipe.source, pipe.folder = str(name), folder
        return pipe.to(device) if device is not None else pipe

    def push_to_hub(self, repo_id: str, private: bool | None = None, commit_message: str | None = None,
                    token: str | bool | None = None, license: str = "apache-2.0", endpoint: str | None = None) -> str:
        """Publish the pipeline as the model repository `repo_id` (created if missing) with its model card,
        through huggingface_hub (`create_repo`, `upload_folder`); returns the commit's URL."""
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(Path(tmp) / "pipeline", repo_id=repo_id, license=license)
            return push_folder(Path(tmp) / "pipeline", repo_id, private, commit_message, token, endpoint)

    @classmethod
    def from_stages(cls, items: Sequence[Stage | str | Path], device: torch.device | str | None = None,
                    hub: dict | None = None) -> "Pipeline":
        """Assemble separately trained stages: Stage objects, stage folders, or pipeline folders or Hub ids (all
        their stages; `hub`: from_pretrained's revision, cache_dir, local_files_only, token)."""
        stages = []
        for item in items:
            if isinstance(item, Stage):
                stages.append(item)
            elif (Path(item) / CASCADE_FILE).is_file() or (not Path(item).exists() and is_repo_id(str(item))):
                stages.extend(load_stages(item, hub_options(**(hub or {})))[0])
            else:
                stages.append(Stage.from_pretrained(item))
        try:
            pipe = cls(stages)
        except ValueError as e:
            raise CheckpointError(f"cannot chain {', '.join(map(str, items))}: {e}") from None
        return pipe.to(device) if device is not None else pipe


def input_multiple(stages: Sequence[Stage]) -> int:
    """Input sides must be multiples of this for every stage's output side to be a multiple of its
    UNet's size_multiple (inputs are padded to it)."""
    multiple, scale = 1, 1
    for stage in stages:
        scale *= stage.kind.scale
        multiple = math.lcm(multiple, stage.size_multiple // math.gcd(stage.size_multiple, scale))
    return multiple
