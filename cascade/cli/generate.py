"""`python -m cascade generate`: new images of any size from a one-shot cascade (train/one_shot.py),
streamed to disk above 16 MP, with a contact sheet."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from PIL import Image

from ..data.one_image import load_photo
from ..errors import CascadeError
from ..inference import one_shot
from ..inference.pipeline import Pipeline
from ..io.atomic import save_image
from ..io.images import signed_to_pil, signed_to_unit
from .common import add_hub_arguments, add_sampling_arguments, apply_sampling_arguments, hub_kwargs, parse_size

DEFAULT_ONE_SHOT = "runs/one_shot/pipeline"
FROM_PHOTO_STRENGTH = 0.8  # docs/one_shot.md, "Starting the scene from the photo": measured there
START_PHOTO_SIDE = 4096  # the photo a scene starts from is decoded at most this large (a JPEG decodes reduced)


def add_parser(commands) -> None:
    gen = commands.add_parser("generate", help="new images of any size from a one-shot cascade (train/one_shot.py)")
    gen.add_argument("--pipeline", default=DEFAULT_ONE_SHOT, help=f"a one-shot pipeline (default: {DEFAULT_ONE_SHOT})")
    gen.add_argument("--size", help="output WIDTHxHEIGHT, any aspect ratio (default: the training photo's size)")
    gen.add_argument("--num", type=int, default=1, help="images, seeds --seed, --seed + 1, ...")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", default="samples", help="folder for sample_SEED.png and contact_sheet.png")
    gen.add_argument("--format", default="png", choices=["png", "tif"])
    gen.add_argument("--tile-size", type=int, help="upsamplers' tile side in output px (default: twice their "
                     "training size); outputs above 16 MP are streamed to disk")
    gen.add_argument("--from-photo", nargs="?", const="", metavar="PHOTO",
                     help="start each scene from a photo noised to --strength instead of from noise (SinGAN's "
                          "generation from a coarser scale; with a painting: paint-to-image); no PHOTO: the training "
                          "photo the pipeline records")
    gen.add_argument("--strength", type=float, help=f"with --from-photo: how far up the noise schedule the photo "
                     f"is taken, in [0, 1] (default {FROM_PHOTO_STRENGTH}; lower keeps more of its layout)")
    gen.add_argument("--free-rows", action="store_true", help="draw every row of the scene freely; by default "
                     "each row keeps the photo's mean colour there (its horizons and bands at their heights, "
                     "everything along the rows new): the --from-photo photo's, else the training photo's the "
                     "pipeline records")
    add_sampling_arguments(gen)
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_hub_arguments(gen)
    gen.set_defaults(run=run)


def run(args) -> None:
    check_strength(args)  # before the pipeline is read (or downloaded)
    pipe = one_shot_pipeline(args)
    if args.num < 1:
        raise CascadeError(f"--num {args.num}: must be >= 1")
    if args.size:
        size = parse_size(args.size)
    else:  # the training photo's size, as recorded by train/one_shot.py
        info = pipe.folder / "one_shot.json" if pipe.folder else None  # where it was read from (the Hub cache for an id)
        size = tuple(json.loads(info.read_text())["trained_on"]) if info and info.is_file() else None
        if size is None:
            raise CascadeError("--size WIDTHxHEIGHT is needed (this pipeline records no training photo size)")
    try:
        p = one_shot.plan(pipe, size)
    except ValueError as e:  # "size WxH: why"
        raise CascadeError(f"--size {size[0]}x{size[1]}: {str(e).split(': ', 1)[-1]}") from None
    photo, strength = start_photo(args, pipe)
    rows = kept_rows(args, pipe, photo)
    keep = False if rows is None else rows  # generate's None would look for a profile again
    out = Path(args.out)
    suffix = "." + args.format
    streamed = p.full[0] * p.full[1] > one_shot.IN_MEMORY_PIXELS
    profile = "the photo's" if rows is not None else "free"
    print(f"{size[0]}x{size[1]}: scene {p.scene[1]}x{p.scene[0]} ({profile} rows), then x{p.scale} through "
          f"{len(p.upsamplers)} upsamplers{' (streamed to disk)' if streamed else ''}", flush=True)
    thumbs = []
    for i in range(args.num):
        seed = args.seed + i
        path = out / f"sample_{seed:04d}{suffix}"
        try:
            if streamed:
                out.mkdir(parents=True, exist_ok=True)
                one_shot.generate(pipe, size, seed, args.tile_size, path=path, photo=photo, strength=strength,
                                  keep_rows=keep)
                thumbs.append(thumbnail_of_streamed(pipe, p, seed, photo, strength, rows))
            else:
                image = one_shot.generate(pipe, size, seed, args.tile_size, photo=photo, strength=strength,
                                          keep_rows=keep)
                save_image(image, path)
                thumbs.append(image)
        except ValueError as e:
            raise CascadeError(f"generate --size {size[0]}x{size[1]}: {e}") from None
        print(f"wrote {path}", flush=True)
    save_image(one_shot.contact_sheet(thumbs), out / "contact_sheet.png")
    print(f"wrote {out / 'contact_sheet.png'}: {args.num} samples, seeds {args.seed}..{args.seed + args.num - 1}")


def check_strength(args) -> None:
    if args.from_photo is None and args.strength is not None:
        raise CascadeError(f"--strength {args.strength}: applies with --from-photo")
    if args.strength is not None and not 0.0 <= args.strength <= 1.0:
        raise CascadeError(f"--strength {args.strength}: must be in [0, 1]")


def start_photo(args, pipe) -> tuple[Image.Image | None, float]:
    """(the photo scenes start from, its strength) from --from-photo and --strength; (None, 1.0) without."""
    if args.from_photo is None:
        return None, 1.0
    strength = FROM_PHOTO_STRENGTH if args.strength is None else args.strength
    path = args.from_photo or recorded_photo(pipe)
    return load_photo(path, START_PHOTO_SIDE)[0], strength


def kept_rows(args, pipe, photo) -> torch.Tensor | None:
    """The row profile scenes keep: none with --free-rows; the --from-photo photo's; else the training photo's
    (recorded in one_shot.json, or for an older pipeline read from its training photo); else none, and a note says
    so. A malformed one_shot.json is an error naming it."""
    if args.free_rows:
        return None
    try:
        rows = one_shot.rows_to_keep(pipe, photo, None)
    except ValueError as e:  # a malformed one_shot.json
        raise CascadeError(str(e)) from None
    except CascadeError as e:  # an older pipeline whose recorded training photo cannot be read
        print(f"note: the scene's rows are free: {e}", flush=True)
        return None
    if rows is None:
        print("note: the scene's rows are free: this pipeline records no row profile and its training photo is not "
              "on this machine (pass it with --from-photo PHOTO --strength 1 to keep its rows)", flush=True)
    return rows


def recorded_photo(pipe) -> str:
    """The training photo train/one_shot.py recorded in the pipeline (a CascadeError if none, or if it is gone)."""
    try:
        path = (one_shot.recorded(pipe) or {}).get("image")
    except ValueError as e:  # a malformed one_shot.json
        raise CascadeError(str(e)) from None
    if not path:
        raise CascadeError("--from-photo: this pipeline records no training photo; pass one (--from-photo PHOTO)")
    if not one_shot.on_this_machine(path):
        raise CascadeError(f"--from-photo: the pipeline's training photo {path} is not on this machine; pass one "
                           f"(--from-photo PHOTO)")
    return path


def thumbnail_of_streamed(pipe, p, seed: int, photo=None, strength: float = 1.0, rows=None) -> Image.Image:
    """A small copy of a streamed sample for the contact sheet: the same seed through the cascade up to
    the last size of at most 1024 px (the file itself is never read back whole)."""
    from dataclasses import replace

    keep = 0
    while keep < len(p.upsamplers) and max(p.scene) * math.prod(s.kind.scale for s in p.upsamplers[:keep + 1]) <= 1024:
        keep += 1
    short = replace(p, upsamplers=p.upsamplers[:keep])
    scene = one_shot.draw_scene(p, seed, progress=False, photo=photo, strength=strength, rows=rows)  # the file's scene
    image = short.pipeline().upscale(signed_to_unit(scene), seed=seed, progress=False)[0] if keep else \
        signed_to_pil(scene)[0]
    width, height = (max(1, round(side * short.scale / p.scale)) for side in p.size[::-1])  # the file's crop
    return image.crop((0, 0, min(width, image.width), min(height, image.height)))


def one_shot_pipeline(args) -> Pipeline:
    if args.pipeline == DEFAULT_ONE_SHOT and not Path(args.pipeline).is_dir():
        raise CascadeError(f"no pipeline at {DEFAULT_ONE_SHOT}: train one with `accelerate launch train/one_shot.py "
                           f"--image photo.jpg` (or `make demo-one-shot`), or pass --pipeline")
    pipe = apply_sampling_arguments(Pipeline.from_pretrained(args.pipeline, device=args.device, **hub_kwargs(args)), args)
    try:
        one_shot.scene_stage(pipe)
    except ValueError as e:
        raise CascadeError(f"--pipeline {args.pipeline}: {e}") from None
    return pipe
