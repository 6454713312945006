"""Training images through the `datasets` library, as [-1, 1] tensors with class labels.

Four sources (`DataConfig.source`):
- `photos`: the built-in offline default: ten real photographs that scikit-image and scikit-learn ship
  in their wheels, one class per photo. Split "train" uses the left 80% of every photo, "test" the
  right 20%, so held-out crops never overlap training crops.
- `imagefolder`: a local folder whose subfolders are the classes (or a flat folder: one class).
- `shards`: parquet or webdataset `.tar` shards (`python -m cascade pack` writes them).
- `hub`: a dataset name on the Hugging Face Hub, e.g. `cifar10` (needs a network the first time).

These are map-style and indexed, not loaded: a folder is a sorted array of paths (about a path's
length per image), the other sources stay in `datasets`' memory-mapped Arrow table, and records are
read one at a time; a label is 8 bytes per image. With `data.streaming: true` the same sources are
read as streams instead (`cascade.data.streams`).

Images are decoded here rather than by `datasets`, so an undecodable file is reported by its path
(or skipped with a warning and a count when `on_bad_image: skip`). Every image is converted to RGB
(`cascade.io.images.to_rgb`), a random square crop whose side is a `crop_scale` fraction of the shorter
side is resized to the stage's size (PIL bicubic, antialiased; small images are upsampled), and
flipped horizontally at random.
"""

from __future__ import annotations

import glob
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..config.sections import DataConfig
from ..errors import DataError
from ..io.images import to_rgb

PHOTO_TRAIN_FRACTION = 0.8  # split "train": the left 80% of every photo; "test": the right 20%


PHOTO_EPOCH_SIZE = 10000  # random crops per epoch of the ten photos when data.epoch_size is not set


def _photo_loaders():
    """(class name, loader) for the built-in photos; every loader returns an HxWx3 uint8 array."""
    import skimage.data as sk
    from sklearn.datasets import load_sample_images

    def sample(i):
        return lambda: load_sample_images().images[i]

    return [
        ("astronaut", sk.astronaut),
        ("coffee", sk.coffee),
        ("cat", sk.chelsea),
        ("rocket", sk.rocket),
        ("hubble", sk.hubble_deep_field),
        ("cells", sk.immunohistochemistry),
        ("motorcycle", lambda: sk.stereo_motorcycle()[0]),
        ("retina", sk.retina),
        ("temple", sample(0)),
        ("flower", sample(1)),
    ]


class ArrowRecords:
    """The image column of a `datasets.Dataset` as a sequence, read one record at a time from the
    memory-mapped table (never materialised as Python objects)."""

    def __init__(self, dataset, column: str):
        self.dataset, self.column = dataset, column

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[int(index)][self.column]


@dataclass
class ImageSource:
    """Decoded-on-demand images with labels: the common form of every source."""

    records: Sequence  # per image: PIL image (photos) or a datasets `Image(decode=False)` dict {"bytes", "path"}
    labels: Sequence[int]
    class_names: list[str]
    name: str  # where the images come from, for messages
    crop_reference: list[int] | None = None  # per image: the side that crop_scale is a fraction of (default: shorter side)

    def __len__(self) -> int:
        return len(self.records)

    def reference(self, index: int) -> int | None:
        return self.crop_reference[index] if self.crop_reference else None

    def describe(self, index: int) -> str:
        record = self.records[index]
        if isinstance(record, dict) and record.get("path"):
            return str(record["path"])
        return f"{self.name}[{index}]"

    def load(self, index: int) -> Image.Image:
        """The image at `index` as RGB; raises DataError naming the file if it cannot be decoded."""
        record = self.records[index]
        if isinstance(record, Image.Image):
            return record
        return decode(record, self.describe(index))


def decode(record: dict, name: str) -> Image.Image:
    """A `datasets` image record {"bytes", "path"} as an RGB image; DataError naming `name` if it
    cannot be decoded."""
    if not isinstance(record, dict) or not (record.get("bytes") or record.get("path")):
        raise DataError(f"{name}: holds no image (its image column is empty)")
    try:
        data = record.get("bytes")
        image = Image.open(io.BytesIO(data) if data else record["path"])
        image.load()
        return to_rgb(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as e:
        raise DataError(f"{name}: cannot decode image ({' '.join(str(e).split())})") from None


def load_source(cfg: DataConfig, split: str | None = None) -> ImageSource:
    """Load the images named by `cfg` (for `split`, default `cfg.split`)."""
    split = split or cfg.split
    if cfg.source == "photos":
        return _load_photos(split)
    if cfg.source == "imagefolder":
        return _load_imagefolder(cfg, split)
    if cfg.source == "shards":
        return _load_shards(cfg, split)
    return _load_hub(cfg, split)


def _load_photos(split: str) -> ImageSource:
    if split not in ("train", "test"):
        raise DataError(f"data.split={split!r}: the built-in photos have splits 'train' and 'test'")
    records, names, reference = [], [], []
    for name, loader in _photo_loaders():
        array = loader()
        cut = int(array.shape[1] * PHOTO_TRAIN_FRACTION)
        part = array[:, :cut] if split == "train" else array[:, cut:]
        records.append(Image.fromarray(np.ascontiguousarray(part)).convert("RGB"))
        names.append(name)
        reference.append(min(array.shape[:2]))  # crops of both splits cover the same share of the whole photo
    return ImageSource(records, list(range(len(names))), names, name=f"photos/{split}", crop_reference=reference)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class ImageFiles:
    """The image files of a folder and their labels, as fixed-width byte strings and an int array:
    about a path's length in bytes per image, and no Python object per image."""

    paths: np.ndarray  # bytes (os.fsencode), dtype S
    labels: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ImageFiles(self.paths[index], self.labels[index])
        return os.fsdecode(self.paths[index]), int(self.labels[index])


class FileRecords:
    """`ImageFiles` as `datasets`-style records {"bytes": None, "path"}."""

    def __init__(self, files: ImageFiles):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict:
        return {"bytes": None, "path": self.files[int(index)][0]}


def list_image_folder(cfg: DataConfig, split: str) -> tuple[ImageFiles, list[str]]:
    """The image files under `data.path` (under `data.path/split` if there is such a folder), sorted,
    with classes from the first folder level (a flat folder is one class, "all")."""
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"data.path={cfg.path!r}: folder not found")
    if (root / split).is_dir():  # an imagefolder with split folders
        root = root / split
    elif split != "train":
        raise DataError(f"{root}: no {split!r} folder for data.split={split!r}")
    found: list[tuple[str, str]] = []  # (class folder or "", path)
    stack, seen = [(root, "")], {os.path.realpath(root)}
    while stack:
        folder, top = stack.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):  # hidden: .ipynb_checkpoints, .DS_Store, ...
                    continue
                if entry.is_dir():
                    real = os.path.realpath(entry.path)
                    if real not in seen:  # a symlinked folder is followed once: no cycles
                        seen.add(real)
                        stack.append((Path(entry.path), top or entry.name))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    found.append((top, entry.path))
    if not found:
        raise DataError(f"{root}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    found.sort(key=lambda item: item[1])
    classes = sorted({top for top, _ in found if top})
    if classes and any(not top for top, _ in found):
        raise DataError(f"{root}: holds image files beside class folders ({', '.join(classes[:5])}); "
                        "move them into a class folder")
    index = {c: i for i, c in enumerate(classes)}
    paths = np.array([os.fsencode(path) for _, path in found])
    labels = np.array([index.get(top, 0) for top, _ in found], dtype=np.int64)
    return ImageFiles(paths, labels), classes or ["all"]


def _load_imagefolder(cfg: DataConfig, split: str) -> ImageSource:
    """A folder's images by path (our listing rather than `datasets`' imagefolder builder, which took
    151 s and 210 MB to index 100,000 files here, every run, in eval/bench_data.py's memory table)."""
    files, classes = list_image_folder(cfg, split)
    return ImageSource(FileRecords(files), files.labels, classes, name=str(cfg.path))


def shard_files(cfg: DataConfig) -> tuple[str, list[Path]]:
    """The builder ("parquet" or "webdataset") and the sorted shard files of `data.path` (a folder,
    a file, or a glob)."""
    path = Path(cfg.path)
    files = sorted(path.glob("*")) if path.is_dir() else [path] if path.is_file() else sorted(map(Path, glob.glob(cfg.path)))
    by_kind = {k: [f for f in files if f.suffix == s] for k, s in (("parquet", ".parquet"), ("webdataset", ".tar"))}
    kinds = [k for k, v in by_kind.items() if v]
    folder = path if path.is_dir() else path.parent
    if (folder / "pack.json.partial").exists() and not (folder / "pack.json").exists():
        raise DataError(f"{folder}: an interrupted `cascade pack` (no pack.json); delete the folder and pack again")
    if not kinds:
        raise DataError(f"data.path={cfg.path!r}: no .parquet or .tar shards there")
    if len(kinds) > 1:
        raise DataError(f"data.path={cfg.path!r}: holds both .parquet and .tar shards; point it at one kind")
    return kinds[0], by_kind[kinds[0]]


def pack_info(cfg: DataConfig) -> dict:
    """The `pack.json` that `cascade pack` writes beside its shards ({} if there is none)."""
    path = Path(cfg.path)
    info = (path if path.is_dir() else path.parent) / "pack.json"
    try:
        return json.loads(info.read_text()) if info.is_file() else {}
    except ValueError as e:
        raise DataError(f"{info}: not valid JSON ({e})") from None


def _load_shards(cfg: DataConfig, split: str) -> ImageSource:
    import datasets

    builder, files = shard_files(cfg)
    try:
        ds = datasets.load_dataset(builder, data_files=[str(f) for f in files], split="train")
    except Exception as e:  # pyarrow and tarfile raise their own types for a corrupt shard
        raise DataError(f"data.path={cfg.path!r}: cannot read the {builder} shards ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]})") from None
    return _from_dataset(ds, cfg, name=str(cfg.path), class_names=pack_info(cfg).get("classes"))


def _load_hub(cfg: DataConfig, split: str) -> ImageSource:
    import datasets

    try:
        ds = datasets.load_dataset(cfg.path, split=split)
    except Exception as e:  # the hub raises many types (connection, missing dataset, missing split)
        raise DataError(f"data.path={cfg.path!r}: cannot load hub dataset split {split!r} ({type(e).__name__}: "
                        f"{' '.join(str(e).split())[:200]})") from None
    return _from_dataset(ds, cfg, name=cfg.path)


def columns(features, cfg: DataConfig, name: str) -> tuple[str, str | None]:
    """The image column and the label column (None: one class) of a dataset with `features`:
    `data.image_column`/`data.label_column`, else the first Image feature and the first ClassLabel
    (or a webdataset's `cls`)."""
    import datasets

    image_col = cfg.image_column or next((k for k, f in features.items() if isinstance(f, datasets.Image)), None)
    if image_col is None or image_col not in features:
        raise DataError(f"{name}: no image column (columns: {', '.join(features)}); set data.image_column")
    label_col = cfg.label_column or next((k for k, f in features.items() if isinstance(f, datasets.ClassLabel)),
                                         "cls" if "cls" in features else None)
    if label_col is not None and label_col not in features:
        raise DataError(f"{name}: data.label_column={label_col!r} is not a column ({', '.join(features)})")
    return image_col, label_col


def _from_dataset(ds, cfg: DataConfig, name: str, class_names: list[str] | None = None) -> ImageSource:
    import datasets

    image_col, label_col = columns(ds.features, cfg, name)
    if len(ds) == 0:
        raise DataError(f"{name}: the dataset is empty")
    ds = ds.cast_column(image_col, datasets.Image(decode=False))
    records = ArrowRecords(ds, image_col)
    if label_col is None:  # a flat folder: one class
        return ImageSource(records, np.zeros(len(ds), dtype=np.int64), ["all"], name=name)
    labels = ds.select_columns([label_col]).with_format("numpy")[:][label_col].astype(np.int64)  # 8 bytes per image
    feature = ds.features[label_col]
    if isinstance(feature, datasets.ClassLabel):
        class_names = list(feature.names)
    class_names = class_names or [str(i) for i in range(int(labels.max()) + 1)]
    return ImageSource(records, labels, class_names, name=name)


def check_num_classes(name: str, class_names: list[str] | None, num_classes: int) -> None:
    """A class-conditional model must have exactly one label per class of the data (a stream that
    lists no classes is checked label by label as it is read)."""
    if num_classes and class_names is not None and num_classes != len(class_names):
        raise DataError(f"{name}: has {len(class_names)} classes "
                        f"({', '.join(class_names[:12])}) but model.num_classes={num_classes}")
