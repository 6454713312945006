"""Where evaluation images come from: real images (a folder, a dataset, the built-in photos) or a
trained pipeline's samples. Every source yields (uint8 images [B x 3 x H x W], labels [B]) batches,
so feature extraction (cascade.metrics.inception) and metric maths (cascade.metrics.scores) never
care which it was.

A source is named by one string (`parse_source` parses it):
- a folder with `cascade.json` or `stage.json`, or `pipeline:ORG/NAME` (a pipeline on the Hugging Face Hub):
  a trained pipeline, sampled class-balanced and seeded;
- a `.npz` file: precomputed FID statistics (FID only);
- `photos`: the built-in photos (split `test` is the held-out right 20% of each);
- any other folder: an image folder (flat, or one subfolder per class);
- anything else: a `datasets` hub name (e.g. `cifar10`), with `--split`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ..config.sections import DataConfig
from ..data.crops import random_resized_crop
from ..data.sources import ImageSource, load_source
from ..errors import DataError
from ..io.images import unit_to_uint8

Batch = tuple[torch.Tensor, torch.Tensor]  # uint8 [B x 3 x H x W], int64 labels [B]


@dataclass
class SourceSpec:
    kind: str  # "pipeline" | "stats" | "photos" | "imagefolder" | "hub"
    path: str
    split: str

    @property
    def is_real(self) -> bool:
        return self.kind in ("photos", "imagefolder", "hub")


def parse_source(spec: str, split: str | None = None) -> SourceSpec:
    """Parse a source string; `split` None means "test", or for an image folder all of it (`datasets`
    calls a folder without split subfolders "train")."""
    path = Path(spec)
    if spec.startswith("pipeline:"):  # a pipeline by Hub id (org/name), which a dataset name could look like
        return SourceSpec("pipeline", spec.removeprefix("pipeline:"), split or "test")
    if path.is_dir() and ((path / "cascade.json").is_file() or (path / "stage.json").is_file()):
        kind = "pipeline"
    elif spec.endswith(".npz"):
        if not path.is_file():
            raise DataError(f"{spec}: statistics file not found")
        kind = "stats"
    elif spec == "photos":
        kind = "photos"
    elif path.is_dir():
        kind = "imagefolder"
    elif path.exists() or spec.startswith((".", "/")):
        raise DataError(f"{spec}: not a folder of images, a pipeline folder or an .npz statistics file")
    else:
        kind = "hub"
    return SourceSpec(kind, spec, split or ("train" if kind == "imagefolder" else "test"))


def load_real(spec: SourceSpec) -> ImageSource:
    cfg = DataConfig(source=spec.kind, path=None if spec.kind == "photos" else spec.path, split=spec.split)
    try:
        return load_source(cfg)
    except DataError as e:
        if spec.kind == "hub":  # a mistyped local path lands here too
            raise DataError(f"{spec.path}: no such local folder, and {e}") from None
        raise


def real_batches(source: ImageSource, num: int | None = None, batch_size: int = 50, size: int | None = None,
                 crops: bool = False, crop_scale: tuple[float, float] = (0.15, 0.4), seed: int = 0) -> Iterator[Batch]:
    """Up to `num` images (all when None) of `source`, as stored; with `size`, centre-cropped to a
    square and resized to `size` (PIL bicubic, antialiased); with `crops`, `num` seeded random crops
    (side `crop_scale` of the shorter side) cycling over the images, for sources of a few big photos."""
    if crops and (num is None or size is None):
        raise ValueError("random crops need a number of images and a size")
    count = num if num is not None else len(source)
    generator = torch.Generator().manual_seed(seed)
    images, labels = [], []
    for i in range(count):
        j = i % len(source) if crops else i
        if j >= len(source):
            break
        image = source.load(j)
        if crops:
            image = random_resized_crop(image, size, crop_scale, generator, reference=source.reference(j))
        elif size is not None:
            image = centre_square(image, size)
        array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
        if images and array.shape != images[0].shape:  # images of another size start a new batch
            yield torch.stack(images), torch.tensor(labels)
            images, labels = [], []
        images.append(array)
        labels.append(source.labels[j])
        if len(images) == batch_size:
            yield torch.stack(images), torch.tensor(labels)
            images, labels = [], []
    if images:
        yield torch.stack(images), torch.tensor(labels)


def centre_square(image: Image.Image, size: int) -> Image.Image:
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)


def balanced_labels(num: int, num_classes: int) -> list[int]:
    """0, 1, ..., K-1, 0, 1, ...: class-balanced to within one image."""
    return [i % num_classes for i in range(num)]


@torch.no_grad()
def pipeline_batches(pipe, num: int, batch_size: int = 50, seed: int = 0, stage: int = -1, steps: int | None = None,
                     guidance_scale: float | None = None, progress: bool = False) -> Iterator[Batch]:
    """`num` class-balanced samples of `pipe` (the output of stage `stage`, default the last). Sample
    i is drawn with seed `seed + i`, so it depends only on (seed, i), not on the batch size."""
    if pipe.base is None:
        raise DataError("the pipeline has no base stage to sample from; evaluate upsamplers with eval/sr.py")
    num_classes = pipe.base.unet.config.num_classes
    labels = balanced_labels(num, num_classes) if num_classes else [0] * num
    bar = tqdm(total=num, desc="sampling", unit="img", disable=not progress)
    for start in range(0, num, batch_size):
        chunk = labels[start:start + batch_size]
        outputs = pipe(class_labels=chunk if num_classes else None, num_images=len(chunk), seed=seed + start,
                       steps=steps, guidance_scale=guidance_scale, output_type="pt", return_intermediates=True,
                       progress=False)
        images = outputs[stage]  # [0, 1]
        bar.update(len(chunk))
        yield unit_to_uint8(images.cpu()), torch.tensor(chunk)
    bar.close()


def cache_key(spec: SourceSpec, settings: dict, network_sha256: str) -> str:
    """A key that changes when the images or the network change: the folder's file list with sizes
    and modification times, or the dataset name and split, plus the sampling settings."""
    identity = {"kind": spec.kind, "path": spec.path, "split": spec.split, "settings": settings,
                "network": network_sha256}
    if spec.kind == "imagefolder":
        root = Path(spec.path).resolve()
        identity["path"] = str(root)
        identity["files"] = [(str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
                             for p in sorted(root.rglob("*")) if p.is_file()]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def balanced_subset(source: ImageSource, per_class: int, seed: int = 0) -> ImageSource:
    """`per_class` images of every class (seeded choice; fewer where a class has fewer), class-interleaved."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(len(source.class_names)):
        members = [i for i, label in enumerate(source.labels) if label == c]
        order = torch.randperm(len(members), generator=generator).tolist()
        chosen.append([members[i] for i in order[:per_class]])
    index = [ids[k] for k in range(per_class) for ids in chosen if k < len(ids)]
    return ImageSource([source.records[i] for i in index], [source.labels[i] for i in index], source.class_names,
                       name=source.name, crop_reference=[source.reference(i) for i in index] if source.crop_reference else None)


def collect(batches) -> Batch:
    """Concatenate an iterator of (images, labels) of one size into one pair."""
    images, labels = zip(*batches)
    return torch.cat(images), torch.cat(labels)


def labelled_set(spec, per_class: int | None, num_classes: int, size: int, crop_scale, seed: int):
    """(uint8 images, labels) of a real source at `size`: crops for the built-in photos, else centre squares."""
    source = load_real(spec)
    if len(source.class_names) != num_classes:
        raise DataError(f"{source.name}: {len(source.class_names)} classes, the pipeline has {num_classes}")
    crops = spec.kind == "photos"
    if crops:
        num = (per_class or 50) * num_classes
        return collect(real_batches(source, num, 256, size, True, crop_scale, seed))
    if per_class is not None:
        source = balanced_subset(source, per_class, seed)
    return collect(real_batches(source, None, 256, size, False, crop_scale, seed))
