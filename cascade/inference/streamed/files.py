"""Writing images too large to hold: PNG row by row (pypng), TIFF strip by strip (tifffile).

Both libraries take an iterator of rows or strips and never need the whole image; pypng is the
pure-Python PNG writer (no compiled parts, so it installs wherever Python does), tifffile the
maintained TIFF library of the scientific Python stack. The file is written under NAME.partial and
renamed when complete, so an interrupted write never leaves a truncated image under the final
name (and never replaces a good one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from ...errors import DataError
from ...io.atomic import partial_path, replacing

SUFFIXES = {".png": "png", ".tif": "tiff", ".tiff": "tiff"}
STRIP_ROWS = 64  # TIFF rows per strip


def format_of(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: streamed outputs are written as {', '.join(SUFFIXES)}, not {suffix or 'no suffix'}")
    return SUFFIXES[suffix]


def check_writable(path: str | Path) -> None:
    """Fail now, with the path named, if the output cannot be created (leaving nothing behind)."""
    format_of(path)
    partial = partial_path(path)
    try:
        partial.parent.mkdir(parents=True, exist_ok=True)
        with open(partial, "wb"):
            pass
    except OSError as e:
        raise DataError(f"{path}: cannot write the output ({e.strerror or e})") from None
    partial.unlink()


def write_bands(path: str | Path, width: int, height: int, bands: Iterator[np.ndarray]) -> None:
    """Write the uint8 [rows x width x 3] `bands` (top to bottom, `height` rows in all) to `path`."""
    kind = format_of(path)
    with replacing(path, "wb") as f:
        if kind == "png":
            import png

            rows = (row.tobytes() for band in _checked(bands, width, height) for row in band)
            png.Writer(width, height, greyscale=False, bitdepth=8).write_packed(f, rows)
        else:
            import tifffile

            strips = _rechunk(_checked(bands, width, height), STRIP_ROWS)
            tifffile.imwrite(f, data=strips, shape=(height, width, 3), dtype=np.uint8, photometric="rgb",
                             rowsperstrip=STRIP_ROWS)


def _checked(bands, width: int, height: int):
    rows = 0
    for band in bands:
        if band.dtype != np.uint8 or band.ndim != 3 or band.shape[1:] != (width, 3):
            raise ValueError(f"band of {band.shape} {band.dtype}: expected uint8 [rows x {width} x 3]")
        rows += band.shape[0]
        yield band
    if rows != height:
        raise ValueError(f"{rows} rows written for an image of {height}")


def _rechunk(bands, rows: int):
    """Bands of any height -> strips of `rows` rows (the last one shorter)."""
    held = []
    count = 0
    for band in bands:
        held.append(band)
        count += band.shape[0]
        while count >= rows:
            joined = np.concatenate(held)
            yield joined[:rows]
            held, count = [joined[rows:]], count - rows
    if count:
        yield np.concatenate(held)
