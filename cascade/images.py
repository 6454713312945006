"""Image conversions, kept in one place: PIL of any mode -> RGB, uint8 <-> [0, 1] <-> [-1, 1], grids,
and users' images to batches (and back) for the pipeline.

Conventions: models see float tensors in [-1, 1] shaped [N x 3 x H x W]; users get PIL images or
float tensors in [0, 1]; files hold uint8.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB.

    Grayscale and palette images are expanded; transparent pixels are composited on white (dropping
    alpha would expose whatever colour the encoder left under them); 16- and 32-bit images are
    rescaled to 8 bits instead of clipped, which is what `Image.convert("RGB")` would do.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or array.max(initial=0) > 255 else 255.0
        if image.mode == "F" and array.max(initial=0) <= 1.0:
            peak = 1.0
        gray = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL -> float tensor [3 x H x W] in [-1, 1]."""
    array = np.asarray(to_rgb(image), dtype=np.float32)
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1.0


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1]."""
    return x * 2.0 - 1.0


def uint8_to_unit(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """uint8 tensor (0..255) -> float tensor in [0, 1] (float64 by default: the metrics' precision)."""
    return x.to(dtype) / 255


def uint8_to_signed(x: torch.Tensor) -> torch.Tensor:
    """uint8 tensor (0..255) -> float32 tensor in [-1, 1], the models' range."""
    return x.float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] tensor [N x 3 x H x W] -> uint8 array [N x H x W x 3] (rounded, as when saving a PNG)."""
    return (to_unit(x.detach().float().cpu()) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float tensor -> uint8 tensor of the same shape (clamped, rounded as a saved PNG)."""
    return (x.detach().clamp(0, 1) * 255).round().to(torch.uint8)


def to_pil(x: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] tensor [N x 3 x H x W] -> list of N PIL images."""
    return [Image.fromarray(a) for a in to_uint8(x)]


def make_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: int = 255) -> Image.Image:
    """Tile [-1, 1] images [N x 3 x H x W] into one PIL image with `nrow` images per row."""
    arrays = to_uint8(images)
    n, h, w, _ = arrays.shape
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), pad_value, np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = a
    return Image.fromarray(grid)


def label_rows(grid: Image.Image, labels: list[str], row_height: int, padding: int = 2, width: int = 110) -> Image.Image:
    """Put a text label left of each row of a grid (row i spans `padding + i * (row_height + padding)`)."""
    out = Image.new("RGB", (grid.width + width, grid.height), (255, 255, 255))
    out.paste(grid, (width, 0))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    for i, text in enumerate(labels):
        top = padding + i * (row_height + padding)
        draw.text((4, top + max(0, row_height // 2 - 6)), text[:18], fill=(0, 0, 0), font=font)
    return out


def upscale_nearest(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Enlarge a small image by an integer factor (nearest) so its pixels can be seen in a viewer."""
    factor = max(1, math.ceil(min_side / min(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image


# --- users' images <-> pipeline batches

def check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "pt"):
        raise ValueError(f"output_type={output_type!r}: use 'pil' or 'pt'")


def convert(images: torch.Tensor, output_type: str):
    """[-1, 1] images -> PIL images ("pil") or a [0, 1] CPU tensor ("pt")."""
    return to_pil(images) if output_type == "pil" else to_unit(images).cpu()


def convert_list(batches: list[torch.Tensor], output_type: str):
    """[-1, 1] batches -> one list of PIL images, or one [0, 1] tensor (a list where sizes differ)."""
    if output_type == "pil":
        return [img for b in batches for img in to_pil(b)]
    tensors = [to_unit(b).cpu() for b in batches]
    same = len({tuple(t.shape[-2:]) for t in tensors}) == 1
    return torch.cat(tensors) if same else [t for b in tensors for t in b]


def as_batches(images) -> list[torch.Tensor]:
    """User images (PIL, HxWx3 arrays uint8 or float in [0, 1], [3 x H x W] / [N x 3 x H x W] tensors
    in [0, 1], or a list of these) -> list of [-1, 1] tensors [n x 3 x h x w], one per distinct input."""
    if isinstance(images, (list, tuple)):
        return [b for item in images for b in as_batches(item)]
    if isinstance(images, Image.Image):
        tensor = torch.from_numpy(np.asarray(to_rgb(images), dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    elif isinstance(images, np.ndarray):
        array = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
        if array.ndim == 2:
            array = np.repeat(array[..., None], 3, axis=-1)
        if array.ndim != 3:
            raise ValueError(f"expected an HxWx3 array, got shape {images.shape}")
        tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    elif isinstance(images, torch.Tensor):
        tensor = images[None] if images.ndim == 3 else images
        if tensor.ndim != 4:
            raise ValueError(f"expected a [3 x H x W] or [N x 3 x H x W] tensor, got shape {tuple(images.shape)}")
        tensor = tensor.float()
    else:
        raise ValueError(f"cannot upscale a {type(images).__name__}; give PIL images, arrays or tensors")
    if tensor.shape[1] != 3:
        raise ValueError(f"expected 3 colour channels, got {tensor.shape[1]} (shape {tuple(tensor.shape)})")
    if tensor.shape[-1] == 0 or tensor.shape[-2] == 0 or tensor.shape[0] == 0:
        raise ValueError(f"empty image (shape {tuple(tensor.shape)})")
    if not torch.isfinite(tensor).all():
        raise ValueError("the image contains NaN or infinite values")
    return [from_unit(tensor.clamp(0, 1))]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad [N x C x H x W] at the bottom and right (by reflection where it fits) to multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
