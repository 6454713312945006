"""Training data of a one-shot cascade: random crops of a single photo at a range of scales.

`load_photo` reads the photo with bounded memory: a JPEG is decoded at a reduced scale (libjpeg's
DCT scaling, `Image.draft`) when it is larger than `max_side`; other formats are decoded once at
full size (3 bytes per pixel: 300 MB for 100 MP, twice that for 16-bit) and freed after the
antialiased downscale to `max_side`. Any mode is converted to 8-bit RGB (cascade.io.images.to_rgb:
grayscale and palette expanded, alpha composited on white, 16-bit rescaled).

`OneImageCrops` yields {"image": [3 x h x w] in [-1, 1], "label": 0, "seed", "rows": [h]} where
`rows` is where the crop's rows are in the (resized) picture, in [-1, 1] (cascade.kinds.one_shot.Scene's
positional channel). The photo is held as a pyramid of `levels` sizes between the two long sides
given (uint8, built once), so drawing a crop costs a crop, not a resize of the photo.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import DataError
from ..io.images import pil_to_signed, pil_to_uint8, to_rgb, uint8_to_signed

BUILTIN = {  # photos that ship in the scikit-learn / scikit-image wheels: `--image builtin:china`
    "china": lambda: __import__("sklearn.datasets").datasets.load_sample_image("china.jpg"),  # 640x427, a temple
    "rocket": lambda: __import__("skimage.data").data.rocket(),  # 640x427
    "coffee": lambda: __import__("skimage.data").data.coffee(),  # 600x400
}


def load_photo(path: str | Path, max_side: int) -> tuple[Image.Image, tuple[int, int]]:
    """(the photo as RGB with its longer side at most `max_side`, its size in the file (W, H)).
    `builtin:NAME` is one of the photos in BUILTIN."""
    if str(path).startswith("builtin:"):
        name = str(path).removeprefix("builtin:")
        if name not in BUILTIN:
            raise DataError(f"{path}: no such built-in photo (known: {', '.join('builtin:' + k for k in BUILTIN)})")
        image = Image.fromarray(BUILTIN[name]())
        return (resize_long_side(image, max_side) if max(image.size) > max_side else image), image.size
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such image file")
    before = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the user's own photo: a 100 MP image is not a decompression bomb
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
            original = image.size
            if image.format == "JPEG" and max(original) > max_side:
                image.draft("RGB", (max_side, max_side))  # decode at 1/2, 1/4 or 1/8 scale, still >= max_side
            image.load()
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({' '.join(str(e).split())})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = before
    image = to_rgb(image)
    if max(image.size) > max_side:
        image = resize_long_side(image, max_side)
    return image, original


def resize_long_side(image: Image.Image, long_side: int, multiple: int = 1) -> Image.Image:
    """`image` resized (antialiased bicubic) so that its longer side is `long_side`, the aspect ratio
    kept, both sides rounded to multiples of `multiple`."""
    w, h = image.size
    k = long_side / max(w, h)
    size = (max(multiple, round(w * k / multiple) * multiple), max(multiple, round(h * k / multiple) * multiple))
    return image if size == image.size else image.resize(size, Image.BICUBIC, reducing_gap=3.0)


def row_positions(top: torch.Tensor, rows: int, height: torch.Tensor) -> torch.Tensor:
    """The vertical position of `rows` rows starting at `top` in a picture `height` rows tall, in
    [-1, 1] (pixel centres; -1 is the top edge): [N] x3 -> [N x rows]."""
    index = torch.arange(rows, dtype=torch.float32)
    return ((top.view(-1, 1).float() + index + 0.5) / height.view(-1, 1).float()) * 2 - 1


class OneImageCrops(torch.utils.data.Dataset):
    """Random crops (`crop` = (h, w)) of one photo resized so its longer side is in `long_sides`, each mirrored left
    to right with chance `flip` (True: 0.5, False: never)."""

    def __init__(self, image: Image.Image, crop: tuple[int, int], long_sides: tuple[float, float],
                 flip: bool | float = True, length: int = 4096, seed: int = 0, levels: int = 8):
        lo, hi = long_sides
        count = 1 if hi <= lo * 1.001 else levels
        sides = [round(lo * (hi / lo) ** (i / max(1, count - 1))) for i in range(count)]
        self.pyramid = [pil_to_uint8(resize_long_side(image, side)) for side in sides]  # uint8
        self.crop, self.length, self.seed, self.epoch = tuple(crop), length, seed, 0
        self.flip = 0.5 if flip is True else float(flip)  # the chance that a crop is mirrored left to right
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip={flip}: the chance of a mirrored crop must be in [0, 1] (or a bool: 0.5 / 0)")
        smallest = self.pyramid[0].shape[-2:]
        if smallest[0] < self.crop[0] or smallest[1] < self.crop[1]:
            raise ValueError(f"{smallest[1]}x{smallest[0]} px is smaller than the {self.crop[1]}x{self.crop[0]} "
                             f"training crops")

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def example(self, level: int, top: int, left: int, flip: bool, draw_seed: int) -> dict:
        picture = self.pyramid[level]
        h, w = self.crop
        crop = uint8_to_signed(picture[:, top:top + h, left:left + w])
        rows = row_positions(torch.tensor([top]), h, torch.tensor([picture.shape[1]]))[0]
        return {"image": crop.flip(-1) if flip else crop, "label": 0, "seed": draw_seed, "rows": rows}

    def __getitem__(self, index: int) -> dict:
        crop_seed, draw_seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2)
        g = torch.Generator().manual_seed(int(crop_seed))
        level = int(torch.randint(0, len(self.pyramid), (), generator=g))
        H, W = self.pyramid[level].shape[-2:]
        top = int(torch.randint(0, H - self.crop[0] + 1, (), generator=g))
        left = int(torch.randint(0, W - self.crop[1] + 1, (), generator=g))
        flip = self.flip > 0 and bool(torch.rand((), generator=g) < self.flip)
        return self.example(level, top, left, flip, int(draw_seed))


@dataclass
class OneImageData:
    """What `cascade.training.stage` needs from a one-shot stage's data."""

    crops: OneImageCrops
    name: str
    previews_of: torch.Tensor  # [N x 3 x h x w] in [-1, 1]: what the training previews show
    recipe: dict = field(default_factory=dict)  # how to build it again (`one_image_data`); saved with the stage

    def loader(self, batch_size: int, seed: int) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(self.crops, batch_size=batch_size, shuffle=True, drop_last=True,
                                           generator=torch.Generator().manual_seed(seed))

    def describe(self) -> str:
        sides = [max(p.shape[-2:]) for p in self.crops.pyramid]
        h, w = self.crops.crop
        return (f"{w}x{h} crops of {self.name} at long side {sides[0]}"
                + (f"..{sides[-1]} px ({len(sides)} scales)" if len(sides) > 1 else " px"))

    def previews(self, count: int) -> torch.Tensor:
        return self.previews_of[:count]


def fixed_crops(crops: OneImageCrops, count: int) -> torch.Tensor:
    """`count` reproducible crops spread over the pyramid's scales (for SR previews)."""
    g = torch.Generator().manual_seed(12345)
    out = []
    for i in range(count):
        level = round(i * (len(crops.pyramid) - 1) / max(1, count - 1))
        H, W = crops.pyramid[level].shape[-2:]
        top = int(torch.randint(0, H - crops.crop[0] + 1, (), generator=g))
        left = int(torch.randint(0, W - crops.crop[1] + 1, (), generator=g))
        out.append(crops.example(level, top, left, False, 0)["image"])
    return torch.stack(out)


def scene_size(image_size: tuple[int, int], long_side: int, multiple: int) -> tuple[int, int]:
    """(H, W) of a picture of `image_size` (W, H) at `long_side`, sides multiples of `multiple`."""
    w, h = image_size
    k = long_side / max(w, h)
    return (max(multiple, round(h * k / multiple) * multiple), max(multiple, round(w * k / multiple) * multiple))


def crop_side(side: int, fraction: float, multiple: int) -> int:
    return max(multiple, math.floor(side * fraction / multiple) * multiple)


def one_image_data(recipe: dict, photo: Image.Image | None = None) -> OneImageData:
    """A one-shot stage's examples from its recipe, which `cascade.training.one_shot` decides and the stage's
    origin keeps (so that a distillation reads the crops its teacher was trained on): {"image", "max_side",
    "crop": [h, w], "long_sides": [lo, hi], "flip", "length", "seed", and "previews": "picture" (the photo
    at "picture": [h, w]) or "crops" ("count" fixed crops)}. `photo`: already loaded (else read from "image").
    ValueError when the photo is too small for the crops."""
    if photo is None:
        photo, _ = load_photo(recipe["image"], recipe["max_side"])
    crops = OneImageCrops(photo, tuple(recipe["crop"]), tuple(recipe["long_sides"]), recipe["flip"], recipe["length"],
                          recipe["seed"])
    if recipe["previews"] == "picture":
        h, w = recipe["picture"]
        shown = pil_to_signed(photo.resize((w, h), Image.BICUBIC, reducing_gap=3.0))[None]
    else:
        shown = fixed_crops(crops, recipe["count"])
    return OneImageData(crops, str(recipe["image"]), shown, dict(recipe))
