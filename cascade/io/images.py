"""Image conversions, kept in one place: PIL of any mode -> RGB, the three ranges tensors travel in,
grids, and users' images to batches (and back) for the pipeline.

The three ranges, and the one word each converter uses for them:

    uint8     0..255 integers: files, PIL images, the metrics' input
    unit      floats in [0, 1]: what users give `Pipeline.upscale` and get back with output_type="pt"
    signed    floats in [-1, 1]: what the models see and generate, [N x 3 x H x W]

Every converter names the range it takes and the range it returns (`signed_to_pil`,
`unit_to_uint8`, `pil_to_signed`, ...): there is no converter that guesses. A tensor in [0, 1] given to
a `signed_*` converter would be read as a pale image ((255 + q) / 2 for each pixel q), which is how
one-shot outputs were once washed out; `unit_*` converters refuse values far below 0, the sign of a
[-1, 1] tensor given where [0, 1] was meant.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

UNIT_FLOOR = -0.25  # a unit tensor below this is a signed one by mistake (round-off overshoots stay far above)


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


# --- between ranges (tensors keep their shape)

def _checked_unit(x: torch.Tensor, where: str) -> torch.Tensor:
    if x.numel() and float(x.detach().min()) < UNIT_FLOOR:
        raise ValueError(f"{where}: expected values in [0, 1], got a minimum of {float(x.detach().min()):.3f} "
                         f"(a [-1, 1] tensor? convert it with signed_to_unit)")
    return x


def signed_to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped."""
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


def unit_to_signed(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> [-1, 1] (not clamped: an exact affine map)."""
    return _checked_unit(x, "unit_to_signed") * 2.0 - 1.0


def uint8_to_unit(x: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """uint8 tensor (0..255) -> float tensor in [0, 1] (float64 by default: the metrics' precision)."""
    return x.to(dtype) / 255


def uint8_to_signed(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 tensor (0..255) -> float tensor in [-1, 1] (float32 by default: the models' precision)."""
    return x.to(dtype) / 127.5 - 1


def unit_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float tensor -> uint8 tensor of the same shape (clamped, rounded as a saved PNG)."""
    return (_checked_unit(x.detach(), "unit_to_uint8").clamp(0, 1) * 255).round().to(torch.uint8)


def signed_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float tensor -> uint8 tensor of the same shape (clamped, rounded as a saved PNG)."""
    return (signed_to_unit(x.detach().float()) * 255).round().to(torch.uint8)


# --- tensors <-> PIL images

def uint8_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """uint8 tensor [N x 3 x H x W] (or [3 x H x W]) -> list of N RGB PIL images."""
    x = x[None] if x.ndim == 3 else x
    if x.dtype != torch.uint8:
        raise ValueError(f"uint8_to_pil: expected a uint8 tensor, got {x.dtype}")
    return [Image.fromarray(a) for a in x.detach().cpu().permute(0, 2, 3, 1).numpy()]


def signed_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """[-1, 1] tensor [N x 3 x H x W] (or [3 x H x W]) -> list of N PIL images."""
    return uint8_to_pil(signed_to_uint8(x.cpu()))


def unit_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """[0, 1] tensor [N x 3 x H x W] (or [3 x H x W]) -> list of N PIL images."""
    return uint8_to_pil(unit_to_uint8(x.cpu()))


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """PIL image of any mode -> uint8 tensor [3 x H x W] (RGB)."""
    return torch.from_numpy(np.asarray(to_rgb(image), dtype=np.uint8).copy()).permute(2, 0, 1)


def pil_to_signed(image: Image.Image) -> torch.Tensor:
    """PIL image of any mode -> float tensor [3 x H x W] in [-1, 1]."""
    return uint8_to_signed(pil_to_uint8(image))


def pil_to_unit(image: Image.Image) -> torch.Tensor:
    """PIL image of any mode -> float32 tensor [3 x H x W] in [0, 1]."""
    return uint8_to_unit(pil_to_uint8(image), torch.float32)


# --- pictures for people to look at

def signed_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: int = 255) -> Image.Image:
    """Tile [-1, 1] images [N x 3 x H x W] into one PIL image with `nrow` images per row."""
    return uint8_grid(signed_to_uint8(images.cpu()), nrow, padding, pad_value)


def uint8_grid(images: torch.Tensor, nrow: int, padding: int = 2, pad_value: int = 255) -> Image.Image:
    """Tile uint8 images [N x 3 x H x W] into one PIL image with `nrow` images per row."""
    arrays = images.detach().cpu().permute(0, 2, 3, 1).numpy()
    n, h, w, _ = arrays.shape
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), pad_value, np.uint8)
    for i, a in enumerate(arrays):
        r, c = divmod(i, nrow)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = a
    return Image.fromarray(grid)


def label_rows(grid: Image.Image, labels: list[str], row_height: int, padding: int = 2, width: int = 110) -> Image.Image:
    """Put a text label left of each row of a grid (row i spans `padding + i * (row_height + padding)`),
    wrapped to the label column's `width` (as many lines as the row has room for)."""
    out = Image.new("RGB", (grid.width + width, grid.height), (255, 255, 255))
    out.paste(grid, (width, 0))
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    line_height = 12  # the default font is 11 px high
    for i, text in enumerate(labels):
        top = padding + i * (row_height + padding)
        lines = wrap_to_width(text, lambda line: draw.textlength(line, font=font), width - 8)
        lines = lines[:max(1, row_height // line_height)]
        y = top + max(0, row_height // 2 - len(lines) * line_height // 2)
        for k, line in enumerate(lines):
            draw.text((4, y + k * line_height), line, fill=(0, 0, 0), font=font)
    return out


def wrap_to_width(text: str, length, room: float) -> list[str]:
    """`text` in lines of at most `room` by `length(line)` (a font's measure): words kept whole where they fit,
    a word longer than a line cut where the line is full."""
    lines, line = [], ""
    for word in text.split():
        joined = f"{line} {word}" if line else word
        if length(joined) <= room:
            line = joined
            continue
        if line:
            lines.append(line)
        line = ""
        for char in word:  # the word starts a line; cut it where it does not fit
            if line and length(line + char) > room:
                lines.append(line)
                line = ""
            line += char
    return lines + ([line] if line else [])


def upscale_nearest(image: Image.Image, min_side: int = 256) -> Image.Image:
    """Enlarge a small image by an integer factor (nearest) so its pixels can be seen in a viewer."""
    factor = max(1, math.ceil(min_side / min(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image


# --- users' images <-> pipeline batches

def check_output_type(output_type: str) -> None:
    if output_type not in ("pil", "pt"):
        raise ValueError(f"output_type={output_type!r}: use 'pil' or 'pt'")


def signed_to_output(images: torch.Tensor, output_type: str):
    """[-1, 1] images -> PIL images ("pil") or a [0, 1] CPU tensor ("pt"): what the pipeline returns."""
    return signed_to_pil(images) if output_type == "pil" else signed_to_unit(images).cpu()


def signed_batches_to_output(batches: list[torch.Tensor], output_type: str):
    """[-1, 1] batches -> one list of PIL images, or one [0, 1] tensor (a list where sizes differ)."""
    if output_type == "pil":
        return [img for b in batches for img in signed_to_pil(b)]
    tensors = [signed_to_unit(b).cpu() for b in batches]
    same = len({tuple(t.shape[-2:]) for t in tensors}) == 1
    return torch.cat(tensors) if same else [t for b in tensors for t in b]


def user_images_to_signed(images) -> list[torch.Tensor]:
    """User images -> list of [-1, 1] tensors [n x 3 x h x w], one per distinct input.

    Users give PIL images (any mode), HxWx3 arrays (uint8, or float in [0, 1]), [3 x H x W] or
    [N x 3 x H x W] tensors in [0, 1], or a list of these: the ranges a user holds, never [-1, 1]."""
    if isinstance(images, (list, tuple)):
        return [b for item in images for b in user_images_to_signed(item)]
    if isinstance(images, Image.Image):
        tensor = pil_to_unit(images)[None]
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
    return [unit_to_signed(_checked_unit(tensor, "image").clamp(0, 1))]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad [N x C x H x W] at the bottom and right (by reflection where it fits) to multiples of `multiple`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)
