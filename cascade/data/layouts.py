"""The built-in offline paired dataset of label-map stages: random layouts filled with real textures.

Every example is drawn from its own seed: a horizon (a random height and a wave) with sky above and,
below it, ground cut into Voronoi regions, plus a few elliptical blobs (bushes, ponds, patches of
wall); each region takes one material, the material is its class ID, and each region is an instance.
A region is filled with a random window of that material's texture, mirrored where it runs out, so
the images are real imagery at its own scale and the labels are exact.

The materials come from photographs and textures that scikit-image and scikit-learn ship in their
wheels (no download): sky from scikit-image's rocket photo, water and foliage from the Summer Palace photo (sklearn's
china.jpg), grass, brick and gravel from scikit-image's texture images (grayscale, halved, tinted). Split "train" draws
its windows from the left 75% of every material, "test" from the right 25%, and the layouts of the
two splits come from disjoint seeds, so held-out pairs share neither layouts nor pixels with training.

    python -m cascade layouts data/layouts_test --num 64 --split test    # as images/, labels/, instances/
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

NAMES = ("sky", "water", "foliage", "grass", "brick", "gravel")
GROUND = (1, 2, 3, 4, 5)  # materials below the horizon
TRAIN_FRACTION = 0.75
TEST_SEED_OFFSET = 1_000_000  # split "test" uses seeds from here


@lru_cache(maxsize=1)
def materials() -> tuple[np.ndarray, ...]:
    """The six material textures, HxWx3 uint8, in the order of NAMES."""
    import skimage.data as sk
    from PIL import Image
    from sklearn.datasets import load_sample_images

    china = load_sample_images().images[0]  # 427 x 640

    def tinted(gray: np.ndarray, rgb: tuple[float, float, float]) -> np.ndarray:
        half = np.asarray(Image.fromarray(gray).reduce(2), np.float32) / 255.0  # 512 -> 256 px: finer grain
        return np.clip(half[..., None] * np.array(rgb, np.float32) * 1.6 * 255, 0, 255).astype(np.uint8)

    return (
        np.ascontiguousarray(sk.rocket()[0:300, 345:425]),  # sky (dusk, between the rocket and a tower)
        np.ascontiguousarray(china[245:300, 370:540]),  # water (the lake)
        np.ascontiguousarray(china[320:427, 400:640]),  # foliage (trees, lower right)
        tinted(sk.grass(), (0.35, 0.55, 0.2)),
        tinted(sk.brick(), (0.7, 0.4, 0.3)),
        tinted(sk.gravel(), (0.55, 0.53, 0.5)),
    )


def _part(texture: np.ndarray, split: str) -> np.ndarray:
    cut = int(texture.shape[1] * TRAIN_FRACTION)
    return texture[:, :cut] if split == "train" else texture[:, cut:]


def _fill(texture: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A height x width window of `texture` at a random offset, mirrored (reflect-tiled) where it runs out."""
    th, tw = texture.shape[:2]
    y0, x0 = int(rng.integers(0, th)), int(rng.integers(0, tw))
    flip = rng.random(2) < 0.5

    def index(start, length, size, mirror):
        i = (start + np.arange(length)) % (2 * size)
        i = np.where(i < size, i, 2 * size - 1 - i)
        return i[::-1] if mirror else i

    return texture[index(y0, height, th, flip[0])][:, index(x0, width, tw, flip[1])]


def layout(seed: int, size: tuple[int, int] = (128, 128), split: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image HxWx3 uint8, labels HxW uint8 class IDs, instances HxW int32) of one random layout;
    `size` is (height, width)."""
    h, w = size
    rng = np.random.default_rng([seed + (TEST_SEED_OFFSET if split == "test" else 0), h, w])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    labels = np.zeros((h, w), np.uint8)  # sky
    instances = np.zeros((h, w), np.int32)
    # the horizon: a random height with a slow wave
    level = rng.uniform(0.2, 0.55) * h
    wave = rng.uniform(0, 0.08) * h * np.sin(2 * np.pi * (xx / w * rng.uniform(0.5, 2.0) + rng.random()))
    ground = yy > level + wave
    # the ground: Voronoi regions of random materials
    k = int(rng.integers(2, 6))
    centres = np.stack([rng.uniform(level, h, k), rng.uniform(0, w, k)], axis=1)
    stretch = rng.uniform(1.0, 3.0)  # regions wider than tall, as ground seen from the side
    distance = (yy[..., None] - centres[:, 0]) ** 2 * stretch + (xx[..., None] - centres[:, 1]) ** 2
    region = distance.argmin(axis=-1)
    kinds = rng.choice(GROUND, size=k)
    labels[ground] = kinds[region[ground]]
    instances[ground] = 1 + region[ground]
    # blobs: a few ellipses anywhere below the top fifth (trees against the sky, ponds, walls)
    for b in range(int(rng.integers(0, 4))):
        cy, cx = rng.uniform(0.2 * h, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.06, 0.2) * h, rng.uniform(0.06, 0.25) * w
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        labels[inside] = rng.choice(GROUND)
        instances[inside] = 1 + k + b
    textures = [_part(t, split) for t in materials()]
    image = np.zeros((h, w, 3), np.uint8)
    for i in np.unique(instances):
        where = instances == i
        image[where] = _fill(textures[labels[where][0]], h, w, rng)[where]
    return image, labels, instances
