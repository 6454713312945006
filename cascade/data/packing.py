"""`python -m cascade pack SRC OUT`: images pre-resized (and cut into sub-images) for a stage, in shards.

Decoding a 2K JPEG for every 64 px training crop is what makes SR training loader-bound; packing
does the decoding and resizing once. SRC is an image folder (class subfolders, or flat) or a folder
of shards. Each image, in sorted order:
- `--size S`: resized so that its shorter side is S (PIL bicubic, antialiased, as `cascade.data`
  resizes crops); images already that small are kept as they are;
- `--crops C --stride T`: cut into C x C sub-images every T pixels, plus one flush with the right and
  bottom edges where the grid leaves pixels over (BasicSR's `extract_subimages`, as used for DIV2K:
  480 px every 240); an image smaller than C is kept whole;
- encoded losslessly as PNG (or `--jpeg-quality Q`), with its class and where it came from
  ("cls/name.jpg" or "cls/name.jpg@x,y" for a sub-image).

Records go to OUT/train-00000.parquet, ... (or .tar, webdataset: KEY.png + KEY.cls), a new shard
every `--shard-size` bytes; each shard is written as NAME.partial and renamed when complete, and
OUT/pack.json (classes, options, counts) is written last. A training config reads the result with
`data.source: shards` and `data.path: OUT`, map-style or `data.streaming: true`.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..config.sections import DataConfig
from ..errors import DataError
from .shards import stream_spec
from .sources import decode, pack_info
from .streams import PartitionStream

ROW_GROUP = 64  # records per parquet row group: what a streamed resume reads again at most, per shard


def parse_bytes(text: str) -> int:
    """'1GB', '500MB', '64KiB', '1000000' -> bytes."""
    units = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
             "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    t = text.strip().upper()
    number = t.rstrip("KMGTIB")
    try:
        value = float(number) * units[t[len(number):]]
    except (ValueError, KeyError):
        raise DataError(f"--shard-size {text!r}: not a size (e.g. 1GB, 500MB)") from None
    if value < 1:
        raise DataError(f"--shard-size {text!r}: must be at least one byte")
    return int(value)


def resize_shorter(image: Image.Image, size: int | None) -> Image.Image:
    """`image` with its shorter side `size` (bicubic, antialiased); unchanged if it is that small already."""
    if not size or min(image.size) <= size:
        return image
    scale = size / min(image.size)
    target = (max(size, round(image.width * scale)), max(size, round(image.height * scale)))
    if image.width < image.height:
        target = (size, target[1])
    else:
        target = (target[0], size)
    return image.resize(target, Image.BICUBIC, reducing_gap=None)


def grid(length: int, crop: int, stride: int) -> list[int]:
    """Offsets of the crops along one side: every `stride`, plus one flush with the end (BasicSR)."""
    if length <= crop:
        return [0]
    offsets = list(range(0, length - crop + 1, stride))
    if offsets[-1] + crop < length:
        offsets.append(length - crop)
    return offsets


def sub_images(image: Image.Image, crop: int | None, stride: int | None) -> list[tuple[tuple[int, int] | None, Image.Image]]:
    """[(offset or None, image)]: the sub-images of `image`, or `image` itself without `crop`."""
    if not crop or (image.width <= crop and image.height <= crop):
        return [(None, image)]
    return [((x, y), image.crop((x, y, x + min(crop, image.width), y + min(crop, image.height))))
            for y in grid(image.height, crop, stride) for x in grid(image.width, crop, stride)]


def encode(image: Image.Image, jpeg_quality: int | None) -> tuple[bytes, str]:
    buffer = io.BytesIO()
    if jpeg_quality:
        image.save(buffer, "JPEG", quality=jpeg_quality, subsampling=0)
        return buffer.getvalue(), "jpg"
    image.save(buffer, "PNG", compress_level=6)
    return buffer.getvalue(), "png"


def _prepare(job) -> tuple[list, str | None]:
    """One source image -> its encoded records [(path, bytes, ext, label)], or the error."""
    record, label, name, where, options = job
    try:
        image = decode(record, name)
    except DataError as e:
        return [], str(e)
    image = resize_shorter(image, options["size"])
    out = []
    for offset, part in sub_images(image, options["crops"], options["stride"]):
        data, ext = encode(part, options["jpeg_quality"])
        out.append((where if offset is None else f"{where}@{offset[0]},{offset[1]}", data, ext, label))
    return out, None


class ShardWriter:
    """Shards of at most `shard_bytes` (one record may exceed it), each renamed into place when complete."""

    def __init__(self, out: Path, fmt: str, shard_bytes: int, class_names: list[str] | None):
        self.out, self.fmt, self.shard_bytes, self.class_names = out, fmt, shard_bytes, class_names
        self.shards: list[str] = []
        self.records = 0
        self._file = None
        self._rows: list[dict] = []

    def add(self, path: str, data: bytes, ext: str, label: int) -> None:
        if self._file is None:
            self._open()
        key = f"{self.records:09d}"
        if self.fmt == "parquet":
            self._rows.append({"image": {"bytes": data, "path": path}, "label": label})
            if len(self._rows) == ROW_GROUP:
                self._flush_rows()
        else:
            for suffix, payload in ((ext, data), ("cls", str(label).encode()), ("path", path.encode())):
                info = tarfile.TarInfo(f"{key}.{suffix}")
                info.size = len(payload)
                self._file.addfile(info, io.BytesIO(payload))
        self.records += 1
        self._bytes += len(data)
        if self._bytes >= self.shard_bytes:
            self.close()

    def _open(self) -> None:
        name = f"train-{len(self.shards):05d}.{'parquet' if self.fmt == 'parquet' else 'tar'}"
        self._path = self.out / name
        self._partial = self.out / f"{name}.partial"
        self._bytes = 0
        if self.fmt == "parquet":
            import datasets
            import pyarrow.parquet as pq

            label = datasets.ClassLabel(names=self.class_names) if self.class_names else datasets.Value("int64")
            self._features = datasets.Features({"image": datasets.Image(), "label": label})
            self._file = pq.ParquetWriter(self._partial, self._features.arrow_schema)
        else:
            self._file = tarfile.open(self._partial, "w")

    def _flush_rows(self) -> None:
        import pyarrow as pa

        if self._rows:
            self._file.write_table(pa.Table.from_pylist(self._rows, schema=self._features.arrow_schema))
            self._rows = []

    def close(self) -> None:
        if self._file is None:
            return
        if self.fmt == "parquet":
            self._flush_rows()
        self._file.close()
        with open(self._partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(self._partial, self._path)
        self.shards.append(self._path.name)
        self._file = None


def _bounded_map(pool, fn, items, ahead: int):
    """`pool.map(fn, items)` in order, with at most `ahead` items in flight (Executor.map would read
    every item, raw image bytes included, before the first result)."""
    pending = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def pack(src: str, out: str, *, size: int | None = None, crops: int | None = None, stride: int | None = None,
         shard_size: str = "1GB", fmt: str = "parquet", jpeg_quality: int | None = None, workers: int | None = None,
         on_bad_image: str = "error", progress: bool = True) -> dict:
    """Pack the images of `src` into shards in `out`; returns what pack.json says."""
    shard_bytes = parse_bytes(shard_size)
    for name, value in (("--size", size), ("--crops", crops), ("--stride", stride)):
        if value is not None and value < 1:
            raise DataError(f"{name} {value}: must be a positive number of pixels")
    if stride and not crops:
        raise DataError("--stride needs --crops (the side of the sub-images)")
    stride = stride or crops
    if fmt not in ("parquet", "webdataset"):
        raise DataError(f"--format {fmt!r}: must be parquet or webdataset")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise DataError(f"--jpeg-quality {jpeg_quality}: must be in [1, 100]")
    root = Path(src)
    if not root.exists():
        raise DataError(f"{src}: not found")
    target = Path(out)
    if (target / "pack.json.partial").exists() and not (target / "pack.json").exists():
        raise DataError(f"{out}: holds an interrupted pack; delete it and pack again (nothing was changed)")
    if target.is_dir() and any(target.glob("train-*")) or (target / "pack.json").exists():
        raise DataError(f"{out}: already holds packed shards; give an empty or new folder (nothing was changed)")
    try:
        target.mkdir(parents=True, exist_ok=True)
        (target / "pack.json.partial").write_text("")
    except OSError as e:
        raise DataError(f"{out}: cannot write there ({e.strerror or e})") from None
    is_shards = root.is_dir() and any(f.suffix in (".parquet", ".tar") for f in root.iterdir())
    cfg = DataConfig(source="shards" if is_shards else "imagefolder", path=str(root))
    spec = stream_spec(cfg, seed=0, readers=1)
    spec.partitions, spec.shuffle = 1, False  # one pass in sorted order: one partition, one epoch of it
    writer = ShardWriter(target, fmt, shard_bytes, spec.class_names)
    options = {"size": size, "crops": crops, "stride": stride, "jpeg_quality": jpeg_quality}
    images, skipped = 0, 0

    def jobs():
        for record, label, name, key in PartitionStream(spec, 0, None, 1):
            if key[1] > 0:  # the second epoch: every record has been read
                return
            where = os.path.relpath(name, root) if spec.shards[0].builder == "image" else name
            yield record, label, name, where, options

    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    results = _bounded_map(pool, _prepare, jobs(), 4 * workers) if pool else map(_prepare, jobs())
    try:
        total = len(spec.shards) if spec.shards[0].builder == "image" else pack_info(cfg).get("records")
        with tqdm(total=total, desc="packing", unit="img", disable=not progress, dynamic_ncols=True) as bar:
            for records, error in results:
                bar.update(1)
                if error:
                    if on_bad_image == "error":
                        raise DataError(error)
                    skipped += 1
                    tqdm.write(f"warning: skipping {error} [{skipped} skipped so far]", file=sys.stderr)
                    continue
                images += 1
                for record in records:
                    writer.add(*record)
        writer.close()
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    if writer.records == 0:
        raise DataError(f"{src}: no image could be packed ({skipped} skipped)")
    info = {"source": str(root), "format": fmt, "size": size, "crops": crops, "stride": stride if crops else None,
            "encoding": f"jpeg{jpeg_quality}" if jpeg_quality else "png", "images": images, "skipped": skipped,
            "records": writer.records, "shards": writer.shards, "classes": spec.class_names}
    partial = target / "pack.json.partial"
    with open(partial, "w") as f:
        f.write(json.dumps(info, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, target / "pack.json")
    fd = os.open(target, os.O_RDONLY)  # the renames themselves reach the disk
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return info
