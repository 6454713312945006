"""Semantic label maps: reading, checking, nearest-neighbour resizing, instance boundaries, colours.

A label map is a single-channel image of class IDs (pix2pixHD, SDM): PNG mode L, P (the palette
index is the ID), I or I;16. In tensors it is [N x 1 x H x W] long; the ID `num_labels` is the
"null" map of classifier-free guidance, and a configured `ignore_id` (Cityscapes' and ADE20K's
"unlabelled") is read as null too. Instance maps (pix2pixHD's `*_instanceIds.png`) are read the
same way and only their boundaries are used (`boundaries`).
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..io.images import uint8_to_signed

SINGLE_CHANNEL = ("L", "P", "I", "I;16", "I;16B", "I;16L", "I;16N")


def read_ids(path: str | Path, what: str = "label map") -> np.ndarray:
    """The IDs of a single-channel image file, int64 [H x W]; DataError naming the file otherwise."""
    try:
        with Image.open(path) as image:
            image.load()
            mode, ids = image.mode, (np.asarray(image).astype(np.int64) if image.mode in SINGLE_CHANNEL else None)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read {what} ({' '.join(str(e).split())})") from None
    if ids is None:
        hint = " (a colour-coded map: convert it to class IDs first)" if mode in ("RGB", "RGBA") else ""
        raise DataError(f"{path}: a {what} must be a single-channel image of IDs (PNG mode L, P, I or I;16), "
                        f"not mode {mode}{hint}")
    return ids


def read_mask(path: str | Path) -> np.ndarray:
    """A mask file of any mode as int64 [H x W]: 1 where it is nonzero (any channel), else 0."""
    try:
        with Image.open(path) as image:
            image.load()
            return (np.asarray(image.convert("L")) > 0).astype(np.int64)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read mask ({' '.join(str(e).split())})") from None


def checked(ids: np.ndarray | torch.Tensor, num_labels: int, ignore_id: int | None, name: str,
            allow_null: bool = False) -> torch.Tensor:
    """IDs as a long tensor with `ignore_id` replaced by the null label (`num_labels`); DataError
    naming `name` and the first ID outside [0, num_labels) (or equal to it, the null map's ID,
    with `allow_null`)."""
    ids = torch.as_tensor(np.asarray(ids) if isinstance(ids, np.ndarray) else ids).long()
    bad = (ids < 0) | (ids >= num_labels)
    if ignore_id is not None:
        bad &= ids != ignore_id
    if allow_null:
        bad &= ids != num_labels
    if bad.any():
        values = torch.unique(ids[bad])[:5].tolist()
        ignore = f", ignore_id {ignore_id}" if ignore_id is not None else " (set labels.ignore_id for an unlabelled ID)"
        raise DataError(f"{name}: label IDs {values} outside [0, {num_labels}) for num_labels={num_labels}{ignore}")
    if ignore_id is not None:
        ids = torch.where(ids == ignore_id, torch.full_like(ids, num_labels), ids)
    return ids


def as_maps(maps, what: str = "label map") -> torch.Tensor:
    """A label map or a list of them (HxW arrays, [H x W] / [N x 1 x H x W] tensors, single-channel
    PIL images, paths) -> long tensor [N x 1 x H x W] (all of one size)."""
    if isinstance(maps, (list, tuple)):
        parts = [as_maps(m, what) for m in maps]
        sizes = {tuple(p.shape[-2:]) for p in parts}
        if len(sizes) > 1:
            raise ValueError(f"{what}s of different sizes {sorted(sizes)}: give maps of one size per call")
        return torch.cat(parts)
    if isinstance(maps, (str, Path)):
        maps = read_mask(maps) if what == "mask" else read_ids(maps, what)
    elif isinstance(maps, Image.Image):
        if what == "mask":
            maps = maps.convert("L")
        if maps.mode not in SINGLE_CHANNEL:
            raise ValueError(f"a {what} must be a single-channel image of IDs, not mode {maps.mode}")
        maps = np.asarray(maps).astype(np.int64)
    tensor = torch.as_tensor(maps)
    if what == "mask" and tensor.is_floating_point():
        tensor = tensor != 0
    if tensor.is_floating_point() or tensor.is_complex():
        raise ValueError(f"a {what} holds integer IDs, got {tensor.dtype}")
    if tensor.ndim == 2:
        tensor = tensor[None, None]
    elif tensor.ndim == 3:
        tensor = tensor[:, None]
    if tensor.ndim != 4 or tensor.shape[1] != 1:
        raise ValueError(f"a {what} must be [H x W], [N x H x W] or [N x 1 x H x W], got {tuple(tensor.shape)}")
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
        raise ValueError(f"empty {what} (shape {tuple(tensor.shape)})")
    return tensor.long()


def resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of [N x C x H x W] IDs to `size`, sampling each output pixel's centre
    (PIL's NEAREST): every output ID is an input ID."""
    h, w = maps.shape[-2:]
    if (h, w) == tuple(size):
        return maps
    rows = ((torch.arange(size[0], dtype=torch.float64) + 0.5) * h / size[0]).floor().long().clamp(max=h - 1)
    cols = ((torch.arange(size[1], dtype=torch.float64) + 0.5) * w / size[1]).floor().long().clamp(max=w - 1)
    return maps.index_select(-2, rows.to(maps.device)).index_select(-1, cols.to(maps.device))


def boundaries(instances: torch.Tensor) -> torch.Tensor:
    """pix2pixHD's instance-boundary map: 1 where a pixel's instance ID differs from one of its four
    neighbours, else 0; [N x 1 x H x W] long -> float."""
    edge = torch.zeros(instances.shape, dtype=torch.bool, device=instances.device)
    horizontal = instances[..., :, 1:] != instances[..., :, :-1]
    vertical = instances[..., 1:, :] != instances[..., :-1, :]
    edge[..., :, 1:] |= horizontal
    edge[..., :, :-1] |= horizontal
    edge[..., 1:, :] |= vertical
    edge[..., :-1, :] |= vertical
    return edge.float()


def drop(maps: torch.Tensor, null_label: int, p: float, generators) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace each example's whole map by the null map with probability p (guidance training);
    returns the maps and which examples were dropped ([N] bool)."""
    from ..diffusion import rng

    if p <= 0:
        return maps, torch.zeros(maps.shape[0], dtype=torch.bool, device=maps.device)
    dropped = (rng.rand(maps.shape[0], generators) < p).to(maps.device)
    return torch.where(dropped.view(-1, 1, 1, 1), torch.full_like(maps, null_label), maps), dropped


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """A bool mask [N x 1 x H x W] grown by `radius` pixels (a square structuring element)."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask.float(), 2 * radius + 1, stride=1, padding=radius) > 0


def shrink_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A bool mask at a smaller `size`: a pixel is set if any pixel it covers is (so nothing masked is lost)."""
    h, w = mask.shape[-2:]
    if (h, w) == tuple(size):
        return mask
    return F.adaptive_max_pool2d(mask.float(), size) > 0


def palette(num_labels: int) -> np.ndarray:
    """RGB colours [num_labels + 1 x 3] uint8 for showing maps: evenly spaced hues, null in black."""
    colours = [colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.65, 0.95 - 0.3 * (i % 2)) for i in range(num_labels)]
    return (np.array(colours + [(0.0, 0.0, 0.0)]) * 255).round().astype(np.uint8)


def colourise(maps: torch.Tensor, num_labels: int) -> torch.Tensor:
    """IDs [N x 1 x H x W] -> colour images [N x 3 x H x W] in [-1, 1] (null and unknown IDs: black)."""
    colours = uint8_to_signed(torch.from_numpy(palette(num_labels)))
    ids = maps[:, 0].clamp(0, num_labels).cpu()
    return colours[ids].permute(0, 3, 1, 2)
