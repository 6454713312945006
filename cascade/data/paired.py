"""Training pairs of label-map stages: an image, its label map of class IDs, optionally instance IDs.

Two sources (`data.source`):
- `layouts`: the built-in offline pairs (cascade.data.layouts), 128 x 128, six materials; split "train"
  has LAYOUTS_TRAIN layouts and "test" LAYOUTS_TEST, generated on demand from their seeds.
- `paired`: a folder (`data.path`, or `data.path/<split>` when that exists) holding

      images/<stem>.png|jpg|...   the photos
      labels/<stem>.png           single-channel PNG of class IDs (mode L, P, I or I;16), same size
      instances/<stem>.png        optional: instance IDs (pix2pixHD), same size

  matched by file stem. A missing or extra pair, a size mismatch or an ID outside [0, num_labels)
  (other than `labels.ignore_id`) stops with the file named.

Examples are random square crops as in cascade.data (`data.crop_scale` of the shorter side, resized
to the stage's size): the image bicubic, the maps nearest, the same crop and flip for all three.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..config.sections import DataConfig
from ..errors import DataError
from ..io.atomic import save_image
from ..io.images import pil_to_signed
from . import label_maps, layouts
from .crops import CropDataset, crop_box
from .sources import IMAGE_SUFFIXES, decode

LAYOUTS_TRAIN = 4000  # built-in layouts in split "train" (one epoch)
LAYOUTS_TEST = 256  # ... and in split "test"
LAYOUT_SIZE = (128, 128)  # (height, width) of the built-in layouts


@dataclass
class PairedSource:
    """Pairs decoded on demand; `load(i)` checks them."""

    items: list  # per pair: (image path, label path, instance path or None), or a layout seed (int)
    num_labels: int
    ignore_id: int | None
    name: str
    label_names: list[str]
    split: str = "train"

    def __len__(self) -> int:
        return len(self.items)

    @property
    def labels(self) -> np.ndarray:  # class labels, as cascade.data's sources have (one class)
        return np.zeros(len(self.items), dtype=np.int64)

    def reference(self, index: int) -> None:
        return None

    @property
    def has_instances(self) -> bool:
        return bool(self.items) and (isinstance(self.items[0], int) or self.items[0][2] is not None)

    def load(self, index: int) -> tuple[Image.Image, torch.Tensor, torch.Tensor | None]:
        """(RGB image, label IDs [H x W] long with ignore_id as the null label, instance IDs or None)."""
        item = self.items[index]
        if isinstance(item, int):
            image, ids, instances = layouts.layout(item, LAYOUT_SIZE, self.split)
            return Image.fromarray(image), torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(instances.astype(np.int64))
        image_path, label_path, instance_path = item
        image = decode({"bytes": None, "path": image_path}, image_path)
        ids = label_maps.read_ids(label_path)
        if ids.shape != (image.height, image.width):
            raise DataError(f"{label_path}: label map is {ids.shape[1]}x{ids.shape[0]}, its image {image_path} "
                            f"{image.width}x{image.height}")
        ids = label_maps.checked(ids, self.num_labels, self.ignore_id, label_path)
        instances = None
        if instance_path is not None:
            inst = label_maps.read_ids(instance_path, "instance map")
            if inst.shape != ids.shape:
                raise DataError(f"{instance_path}: instance map is {inst.shape[1]}x{inst.shape[0]}, its image "
                                f"{image_path} {image.width}x{image.height}")
            instances = torch.from_numpy(inst)
        return image, ids, instances


def load_pairs(cfg: DataConfig, num_labels: int, ignore_id: int | None, names=(), split: str | None = None) -> PairedSource:
    """The pairs named by `cfg` for `split` (default `cfg.split`)."""
    split = split or cfg.split
    if cfg.source == "layouts":
        if split not in ("train", "test"):
            raise DataError(f"data.split={split!r}: the built-in layouts have splits 'train' and 'test'")
        if num_labels != len(layouts.NAMES):
            raise DataError(f"layouts: has {len(layouts.NAMES)} labels ({', '.join(layouts.NAMES)}) but "
                            f"model.num_labels={num_labels}")
        count = LAYOUTS_TRAIN if split == "train" else LAYOUTS_TEST
        return PairedSource(list(range(count)), num_labels, None, f"layouts/{split}", list(layouts.NAMES), split)
    if cfg.source != "paired":
        raise DataError(f"data.source={cfg.source!r}: a label-map stage reads 'layouts' or 'paired' data")
    return PairedSource(list_pairs(cfg.path, split), num_labels, ignore_id, str(cfg.path),
                        list(names) or [str(i) for i in range(num_labels)], split)


def list_pairs(path: str, split: str) -> list[tuple[str, str, str | None]]:
    """(image, label map, instance map or None) paths of a paired folder, sorted by stem."""
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"data.path={path!r}: folder not found")
    if (root / split).is_dir():
        root = root / split
    elif split != "train":
        raise DataError(f"{root}: no {split!r} folder for data.split={split!r}")
    if not (root / "images").is_dir() or not (root / "labels").is_dir():
        raise DataError(f"{root}: a paired folder holds images/ and labels/ (and optionally instances/)")

    def by_stem(folder: Path, suffixes) -> dict[str, str]:
        files = {}
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            stem, suffix = os.path.splitext(entry.name)
            if entry.is_file() and not entry.name.startswith(".") and suffix.lower() in suffixes:
                if stem in files:
                    raise DataError(f"{folder}: two files for {stem!r} ({os.path.basename(files[stem])}, {entry.name})")
                files[stem] = entry.path
        return files

    images = by_stem(root / "images", IMAGE_SUFFIXES)
    labels = by_stem(root / "labels", {".png", ".tif", ".tiff", ".bmp"})  # lossless formats only
    if not images:
        raise DataError(f"{root / 'images'}: no image files")
    for what, have, want in (("label map", labels, images), ("image", images, labels)):
        missing = sorted(set(want) - set(have))
        if missing:
            folder = "labels" if what == "label map" else "images"
            raise DataError(f"{want[missing[0]]}: no {what} {root / folder / missing[0]}.* "
                            f"({len(missing)} unpaired files)")
    instances = by_stem(root / "instances", {".png", ".tif", ".tiff"}) if (root / "instances").is_dir() else None
    if instances is not None:
        missing = sorted(set(images) - set(instances))
        if missing:
            raise DataError(f"{images[missing[0]]}: no instance map in {root / 'instances'} "
                            f"({len(missing)} images without one; instances/ must cover every image or be absent)")
    return [(images[s], labels[s], instances[s] if instances is not None else None) for s in sorted(images)]


def crop_pair(image: Image.Image, ids: torch.Tensor, instances: torch.Tensor | None, size: int,
              scale: tuple[float, float], flip: bool, generator: torch.Generator) -> dict:
    """The same random square crop (and flip) of an image and its maps, resized to `size`: the image
    bicubic (antialiased), the maps nearest. {"image": [3 x s x s], "label_map": [1 x s x s], "instances"?}."""
    left, top, side = crop_box(image.width, image.height, scale, generator)
    crop = image.crop((left, top, left + side, top + side))
    tensor = pil_to_signed(crop if side == size else crop.resize((size, size), Image.BICUBIC, reducing_gap=None))
    maps = [ids] + ([instances] if instances is not None else [])
    maps = [label_maps.resize(m[None, None, top:top + side, left:left + side], (size, size))[0] for m in maps]
    if flip and torch.rand((), generator=generator) < 0.5:
        tensor, maps = tensor.flip(-1), [m.flip(-1) for m in maps]
    example = {"image": tensor, "label_map": maps[0]}
    if instances is not None:
        example["instances"] = maps[1]
    return example


class PairedCrops(CropDataset):
    """Random crops of a `PairedSource`, as {"image", "label_map" [1 x s x s] long, "instances"?,
    "label": 0, "seed"}; crops depend on (seed, epoch, index) alone (see cascade.data.crops.CropDataset)."""

    def __init__(self, source: PairedSource, size: int, cfg: DataConfig, seed: int = 0):
        super().__init__(source, size, cfg, seed)
        self.length = cfg.epoch_size or len(source)

    def example(self, i, loaded, crop_seed, draw_seed):
        image, ids, instances = loaded
        generator = torch.Generator().manual_seed(crop_seed)
        example = crop_pair(image, ids, instances, self.size, tuple(self.cfg.crop_scale), self.cfg.random_flip, generator)
        return {**example, "label": 0, "seed": draw_seed}


def make_loader(source: PairedSource, size: int, cfg: DataConfig, batch_size: int, seed: int = 0):
    """Shuffled batches of paired crops (Accelerate shards them across processes)."""
    dataset = PairedCrops(source, size, cfg, seed)
    if len(dataset) < batch_size:
        raise DataError(f"{source.name}: {len(dataset)} pairs, fewer than train.batch_size={batch_size}")
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(seed))


def held_out(cfg: DataConfig, num_labels: int, ignore_id: int | None, size: int, count: int, seed: int = 0) -> dict:
    """`count` reproducible crops of held-out pairs for previews (split "test" where the data has one,
    else the training split): {"image" [count x 3 x s x s], "label_map", "instances"?}."""
    split = "test" if cfg.source == "layouts" or (Path(cfg.path) / "test").is_dir() else cfg.split
    source = load_pairs(cfg, num_labels, ignore_id, split=split)
    generator = torch.Generator().manual_seed(seed)
    examples = [crop_pair(*source.load(i % len(source)), size, tuple(cfg.crop_scale), False, generator)
                for i in range(count)]
    return {key: torch.stack([e[key] for e in examples]) for key in examples[0]}


def write_pairs(folder: str | Path, pairs) -> int:
    """Write (image HxWx3 uint8, labels HxW, instances HxW or None) pairs as a paired folder
    (images/, labels/, instances/ as PNG, stems 00000, 00001, ...); returns how many. Each file is
    written in one step (cascade.io.atomic), so an interrupted write never leaves a truncated PNG."""
    folder = Path(folder)
    count = 0
    for count, (image, ids, instances) in enumerate(pairs, start=1):
        stem = f"{count - 1:05d}"
        parts = [("images", Image.fromarray(image)), ("labels", _id_image(ids))]
        if instances is not None:
            parts.append(("instances", _id_image(instances)))
        for sub, picture in parts:
            save_image(picture, folder / sub / f"{stem}.png")
    return count


def _id_image(ids: np.ndarray) -> Image.Image:
    """IDs as a single-channel PNG image: mode L up to 255, I;16 above."""
    ids = np.asarray(ids)
    return Image.fromarray(ids.astype(np.uint8 if ids.max(initial=0) <= 255 else np.uint16))  # mode L / I;16
