"""A photo's row profile, the mean colour of each of its rows: what a one-shot scene keeps by default
(cascade.inference.one_shot.generate), so the photo's horizons and bands stay at their heights while everything
along the rows is drawn anew. train/one_shot.py records the training photo's in the pipeline's one_shot.json;
`Stage.sample(rows=...)` (cascade.inference.projections.with_rows) holds a scene to it.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..data.one_image import load_photo
from ..io.images import pil_to_signed, to_rgb
from .pipeline import Pipeline

PROFILE_ROWS = 256  # at most this many rows of the training photo's row profile in one_shot.json (`row_profile`)
PROFILE_PHOTO_SIDE = 4096  # a pipeline that records no profile: its training photo decoded at most this large


def row_profile(photo: Image.Image, rows: int = PROFILE_ROWS) -> torch.Tensor:
    """A photo's mean colour per row, [3 x R] in [-1, 1], at R = min(`rows`, its height) rows (each the mean of the
    photo's rows it covers): its horizons and bands, what `generate` keeps by default."""
    x = pil_to_signed(to_rgb(photo)).double().mean(dim=-1)  # [3 x H]
    return F.adaptive_avg_pool1d(x[None], min(rows, x.shape[-1]))[0].float()


def scene_rows(p, profile: torch.Tensor) -> torch.Tensor:
    """A `row_profile` [3 x R] as the rows of plan `p`'s (cascade.inference.one_shot.Plan) scene [1 x 3 x H x 1]: resampled to the rows the output
    keeps (where `photo_scene` puts the photo: averaged down, or linear up), the rows below replicated."""
    if profile.dim() != 2 or profile.shape[0] != 3 or profile.shape[1] < 1:
        raise ValueError(f"a row profile is [3 x rows] in [-1, 1], got {tuple(profile.shape)}")
    if not profile.isfinite().all() or profile.abs().max() > 1 + 1e-6:
        raise ValueError(f"a row profile's values are colours in [-1, 1], got {profile.min():g}..{profile.max():g}")
    h = min(p.scene[0], max(1, round(p.size[0] / p.scale)))
    x = profile.double()[None]
    if h <= x.shape[-1]:
        x = F.adaptive_avg_pool1d(x, h)
    else:
        x = F.interpolate(x, size=h, mode="linear", align_corners=False)
    return F.pad(x, (0, p.scene[0] - h), mode="replicate")[..., None].float()


def rows_to_keep(pipe: Pipeline, photo: Image.Image | None, keep_rows) -> torch.Tensor | None:
    """The row profile `generate` keeps: `keep_rows` itself if it is one; `photo`'s, else the training photo's
    (`recorded_rows`); None with a false `keep_rows`, or None when there is neither; a ValueError with `keep_rows`
    True when there is neither."""
    if isinstance(keep_rows, torch.Tensor):
        return keep_rows
    if keep_rows is not None and not keep_rows:
        return None
    if photo is not None:
        return row_profile(photo)
    recorded = recorded_rows(pipe)
    if recorded is None and keep_rows:
        raise ValueError("keep_rows keeps a photo's row profile: give the photo (photo=), or use a pipeline that "
                         "records one (train/one_shot.py writes it to one_shot.json)")
    return recorded


def recorded(pipe: Pipeline) -> dict | None:
    """What train/one_shot.py records in the pipeline's one_shot.json (the training photo, its sizes, its row
    profile); None if the pipeline has none. A ValueError naming the file if it is not a JSON object."""
    info = pipe.folder / "one_shot.json" if pipe.folder else None
    if not info or not info.is_file():
        return None
    try:
        record = json.loads(info.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{info}: not readable JSON ({e})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{info}: expected a JSON object (the one-shot record), got {type(record).__name__}")
    return record


def on_this_machine(image) -> bool:
    """Whether a recorded training photo can be read here (a built-in photo, or a file that exists)."""
    return bool(image) and (str(image).startswith("builtin:") or Path(image).is_file())


@functools.lru_cache(maxsize=4)
def _photo_rows(image: str) -> torch.Tensor:
    """The `row_profile` of a training photo on disk, decoded once however many samples keep it."""
    return row_profile(load_photo(image, PROFILE_PHOTO_SIDE)[0])


def recorded_rows(pipe: Pipeline) -> torch.Tensor | None:
    """The training photo's `row_profile` [3 x R] in [-1, 1]: the one train/one_shot.py records in the pipeline's
    one_shot.json (0..255); for a pipeline trained before it was recorded, computed from the training photo the
    file names if that is on this machine; None otherwise. A ValueError naming the file if it is malformed."""
    record = recorded(pipe)
    if record is None:
        return None
    profile = record.get("row_profile")
    if profile is None:
        image = record.get("image")
        return _photo_rows(str(image)).clone() if on_this_machine(image) else None
    info = pipe.folder / "one_shot.json"
    try:
        rows = torch.tensor(profile, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        rows = None
    if rows is None or rows.dim() != 2 or rows.shape[0] != 3 or rows.shape[1] < 1 or not rows.isfinite().all() \
            or rows.min() < 0 or rows.max() > 255:
        raise ValueError(f"{info}: row_profile must be 3 lists (R, G, B) of one length of numbers in 0..255")
    return rows / 127.5 - 1
