"""Writing a file so that a crash mid-write never destroys the last good one: the bytes go to
NAME.partial, are flushed to disk, then renamed over NAME (a rename is atomic on one file system)."""

from __future__ import annotations

import contextlib
import os
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
