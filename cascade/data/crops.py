"""Random crops of a source's images as training examples (map-style): a random square crop whose side
is a `crop_scale` fraction of the shorter side, resized to the stage's size (PIL bicubic, antialiased;
small images are upsampled), flipped horizontally at random; every draw seeded by (seed, epoch, index)."""

from __future__ import annotations

import sys

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..config.sections import DataConfig
from ..errors import DataError
from ..io.images import pil_to_signed
from .sources import PHOTO_EPOCH_SIZE, ImageSource


def crop_box(width: int, height: int, scale: tuple[float, float], generator: torch.Generator | None = None,
             reference: int | None = None) -> tuple[int, int, int]:
    """(left, top, side) of a random square with side in `scale` x `reference` (default: the shorter
    side), clipped to the shorter side."""
    short = min(width, height)
    fraction = scale[0] + (scale[1] - scale[0]) * torch.rand((), generator=generator).item()
    side = max(1, min(short, round((reference or short) * fraction)))
    left = int(torch.randint(0, width - side + 1, (), generator=generator))
    top = int(torch.randint(0, height - side + 1, (), generator=generator))
    return left, top, side


def random_resized_crop(image: Image.Image, size: int, scale: tuple[float, float], generator: torch.Generator | None = None,
                        reference: int | None = None) -> Image.Image:
    """A random square crop (see `crop_box`) resized to `size` x `size` (PIL bicubic, antialiased)."""
    left, top, side = crop_box(*image.size, scale, generator, reference)
    crop = image.crop((left, top, left + side, top + side))
    return crop if side == size else crop.resize((size, size), Image.BICUBIC, reducing_gap=None)


class CropDataset(torch.utils.data.Dataset):
    """Random crops of an `ImageSource` as {"image": [3 x size x size] in [-1, 1], "label": int, "seed": int}.

    An epoch is `data.epoch_size` crops (image i % len(source) for index i), so a folder of one
    image still yields many different crops.

    The crop and flip of an item are a function of (seed, epoch, index) alone, drawn from a
    generator of their own: not from torch's global one, which Accelerate's prefetching loader
    advances for batch k+1 before step k's checkpoint saves it, so a resumed run would see other
    crops than the run it continues. The training loop calls `set_epoch` before every pass. `seed`
    seeds the item's training draws (noise, timestep, augmentation: cascade.diffusion.rng), so they too depend
    on the item alone, not on which process or micro-batch it lands in.
    """

    def __init__(self, source: ImageSource, size: int, cfg: DataConfig, seed: int = 0):
        self.source, self.size, self.cfg, self.seed = source, size, cfg, seed
        self.epoch = 0
        default = PHOTO_EPOCH_SIZE if cfg.source == "photos" else len(source)
        self.length = cfg.epoch_size or default
        self.skipped: set[int] = set()

    def __len__(self) -> int:
        return self.length

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def seeds(self, index: int) -> tuple[int, int]:
        """Two seeds of item `index` this epoch: its crop and flip, and its training draws (cascade.diffusion.rng)."""
        crop, draws = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(2)
        return int(crop), int(draws)

    def __getitem__(self, index: int) -> dict:
        n = len(self.source)
        for attempt in range(n):
            i = (index + attempt) % n
            if i in self.skipped:
                continue
            try:
                image = self.source.load(i)
            except DataError as e:
                if self.cfg.on_bad_image == "error":
                    raise
                self.skipped.add(i)
                # Our own line, above the progress bar (`warnings.warn` would put a torch-internal path before it).
                tqdm.write(f"warning: skipping {e} [{len(self.skipped)} skipped so far]", file=sys.stderr)
                continue
            return self.example(i, image, *self.seeds(index))
        raise DataError(f"{self.source.name}: no decodable image left ({len(self.skipped)} skipped)")


    def example(self, i: int, image: Image.Image, crop_seed: int, draw_seed: int) -> dict:
        """The training example of source image `i` (decoded as `image`) for these seeds."""
        return make_example(image, int(self.source.labels[i]), self.size, self.cfg, crop_seed, draw_seed,
                            self.source.reference(i))


def make_example(image: Image.Image, label: int, size: int, cfg: DataConfig, crop_seed: int, draw_seed: int,
                 reference: int | None = None) -> dict:
    """One training example: a random crop (and flip) of `image` drawn from `crop_seed` alone."""
    generator = torch.Generator().manual_seed(crop_seed)
    tensor = pil_to_signed(random_resized_crop(image, size, tuple(cfg.crop_scale), generator, reference))
    if cfg.random_flip and torch.rand((), generator=generator) < 0.5:
        tensor = tensor.flip(-1)
    return {"image": tensor, "label": label, "seed": draw_seed}


def make_loader(source: ImageSource, size: int, cfg: DataConfig, batch_size: int, seed: int = 0) -> torch.utils.data.DataLoader:
    """Shuffled batches of random crops (Accelerate shards them across processes)."""
    dataset = CropDataset(source, size, cfg, seed)
    if len(dataset) < batch_size:
        raise DataError(f"{source.name}: {len(dataset)} images, fewer than train.batch_size={batch_size}")
    # The loader's own generator: every new iterator draws a base seed from it, which would otherwise
    # come from the global RNG and put a resumed run (a fresh iterator) a few draws ahead.
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                       num_workers=cfg.num_workers, generator=torch.Generator().manual_seed(seed))
