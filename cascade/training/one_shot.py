"""The stages of a one-shot cascade (`train/one_shot.py`): each stage's config, kind and crops of the
photo at its scale (cascade.data.one_image), with one-line errors for a photo too small for a stage."""

from __future__ import annotations

import math

from PIL import Image

from ..data.one_image import OneImageData, crop_side, one_image_data, scene_size
from ..errors import DataError


def training_stages(cfg, photo: Image.Image, name: str) -> list[tuple[str, object, object, OneImageData]]:
    """[(stage name, stage config, kind, data)] of a one-shot cascade (`OneShotConfig`) on `photo`:
    the scene at `scene.long_side`, then each upsampler at its scale. DataError names the photo and
    the value when it is too small for a stage."""
    from dataclasses import replace

    from ..kinds.one_shot import OneShotSR3, Scene
    from ..models.unet import size_multiple

    W, H = photo.size
    long = max(W, H)
    sc = cfg.scene
    m = size_multiple(sc.model.channel_mult, sc.model.layout)
    if long < sc.scene.long_side:
        raise DataError(f"{name}: {W}x{H} is smaller than the scene stage's size (scene.scene.long_side="
                        f"{sc.scene.long_side} px on the longer side)")
    scene = scene_size(photo.size, sc.scene.long_side, m)
    lo, hi = (sc.scene.long_side * j for j in sc.scene.scale_jitter)
    short = min(scene) * sc.scene.scale_jitter[0]
    crop = tuple(crop_side(round(side * sc.scene.scale_jitter[0]), sc.scene.crop, m) for side in scene)
    if short < m:
        raise DataError(f"{name}: {W}x{H} is too narrow for a scene of {sc.scene.long_side} px on the longer side")
    scene_cfg = replace(sc, model=replace(sc.model, sample_size=max(crop) // m * m,
                                          cond_channels=1 if sc.scene.positional else 0))
    stages = []
    common = {"image": name, "max_side": cfg.max_side, "flip": cfg.random_flip, "length": cfg.epoch_size}
    data = one_image_data({**common, "crop": list(crop), "long_sides": [lo, hi], "seed": sc.train.seed,
                           "flip": sc.scene.flip if cfg.random_flip else False,
                           "previews": "picture", "picture": list(scene)}, photo)  # previews: the photo, then samples
    stages.append(("scene", scene_cfg, Scene(size=scene, positional=sc.scene.positional), data))
    side = sc.scene.long_side
    aspect = long / min(W, H)
    for stage_name in ("coarse", "fine"):
        st = getattr(cfg, stage_name)
        side *= st.sr.scale
        size = st.model.sample_size
        # Square crops need the short side at least `size`: where the stage's scale would make it shorter (a wide
        # or tall photo), the scales start where the short side allows one crop, up to the photo's own size.
        lo = min(max(side * st.scales[0], math.ceil(size * aspect)), long)
        hi = min(max(side * st.scales[1], lo), long)
        try:
            data = one_image_data({**common, "crop": [size, size], "long_sides": [lo, hi], "seed": st.train.seed,
                                   "previews": "crops", "count": st.sample.preview_per_class}, photo)
        except ValueError as e:
            raise DataError(f"{name}: {W}x{H} is too small for the {stage_name} upsampler's {size} px crops at its "
                            f"scale (longer side {round(lo)} px): {e}; use a larger photo or a smaller "
                            f"{stage_name}.model.sample_size") from None
        stages.append((stage_name, st, OneShotSR3.from_config(st.sr), data))
    return stages
