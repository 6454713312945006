"""Writing files and folders so that a crash mid-write never destroys the last good one.

A file: the bytes go to NAME.partial, are flushed to disk, then renamed over NAME (a rename is atomic
on one file system). A folder (a saved stage or pipeline): it is written whole as NAME.partial/ and
flushed; then the previous NAME/ is renamed to NAME.old/, the new one into place, and the old one
removed. A crash leaves the previous folder or the new one complete, at worst under NAME.old/ for
the instant between the two renames (loading a pipeline says so).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import IO, Iterator


def partial_path(path: str | Path) -> Path:
    return Path(path).with_name(Path(path).name + ".partial")


@contextlib.contextmanager
def replacing(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """`with replacing(path, "wb") as f:` the file written in the block replaces `path` when the
    block ends; if the block raises, `path` is left as it was and the partial file is removed."""
    partial = partial_path(path)
    try:
        with open(partial, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def old_path(path: str | Path) -> Path:
    """Where `replacing_folder` keeps the previous folder for the instant between its two renames."""
    return Path(path).with_name(Path(path).name + ".old")


def fsync_dir(folder: str | Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """Flush every file below `folder`, then the folder, to disk."""
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    fsync_dir(folder)


@contextlib.contextmanager
def replacing_folder(path: str | Path) -> Iterator[Path]:
    """`with replacing_folder(path) as tmp:` the folder filled in the block (`tmp`, empty at first)
    replaces `path` when the block ends; if the block raises, `path` is left as it was."""
    path = Path(path)
    partial, old = partial_path(path), old_path(path)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        fsync_tree(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        path.replace(old)
    partial.replace(path)
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with `text` (UTF-8) in one step; on any failure `path` is left as it was."""
    with replacing(path) as f:
        f.write(text)


def save_image(image, path: str | Path) -> None:
    """Save the PIL `image` to `path` (its folder made if missing; the format from the suffix, PNG
    if unknown) in one step."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path, "wb") as f:
        image.save(f, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
