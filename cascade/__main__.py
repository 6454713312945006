"""Command line: `python -m cascade upscale IN OUT`, `synthesize LABELS OUT`, `generate`, `edit`,
`assemble OUT STAGE...`, `pack SRC OUT` and `layouts OUT`.

    python -m cascade upscale photo.png photo_x2.png          # with the demo cascade's upsampler
    python -m cascade upscale photo.png photo_x2.png --pipeline runs/sr3_photos/pipeline
    python -m cascade upscale small.png big.png --pipeline runs/cascade_photos --aug-level 0.05 --steps 25
    python -m cascade upscale photo.jpg big.png --tile-size 128 --overlap 16 --tile-batch 16 --consistent
    python -m cascade upscale 8k.jpg 16k.png --state-dir 16k.state         # streamed to disk, resumable
    python -m cascade upscale 8k.jpg 16k.png --state-dir 16k.state --resume
    python -m cascade upscale photo.jpg 16k.png --size 16384x8640          # the input resized to 8192x4320 first
    accelerate launch --multi_gpu --num_processes 4 -m cascade upscale 8k.jpg 16k.png   # tiles shared
    python -m cascade synthesize labels.png photo.png --pipeline runs/labels_layouts --num 4 --size 2048x1024
    python -m cascade synthesize labels2.png photo2.png --edit-from photo.png --mask changed.png   # redo one region
    python -m cascade layouts data/layouts_test --num 64 --split test       # the built-in pairs as a folder
    python -m cascade generate --pipeline runs/one_shot/pipeline --size 3840x2160 --num 4 --seed 0 --out samples/
    python -m cascade edit --pipeline runs/one_shot/pipeline --image edited.png --mask mask.png --strength 0.5 --out out.png
    python -m cascade upscale small.png big.png --pipeline runs/one_shot/pipeline --prior --scale 4   # no SR stage
    python -m cascade assemble runs/cascade_photos runs/base_photos/pipeline runs/sr3_photos/pipeline
    python -m cascade pack ~/imagenet/train data/imagenet_256 --size 256 --shard-size 1GB
    python -m cascade pack ~/DIV2K_train_HR data/div2k_sub --crops 480 --stride 240 --shard-size 64MB --format webdataset
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from . import one_shot
from .atomic import save_image
from .cli import add_sampling_arguments, apply_sampling_arguments, run_cli
from .errors import CascadeError, DataError
from .giant import STREAM_ABOVE, upscale_to_file
from .images import pil_to_signed, signed_to_pil, signed_to_unit, to_rgb
from .pipeline import Pipeline


DEFAULT_PIPELINE = "runs/cascade_photos"


def upscale(args) -> None:
    image = _read_image(args.input)
    if args.pipeline == DEFAULT_PIPELINE and not Path(args.pipeline).is_dir():
        raise CascadeError(f"no pipeline at {DEFAULT_PIPELINE}: run `make demo` first, or pass --pipeline FOLDER")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if processes > 1 and device.startswith("cuda"):  # accelerate launch: one GPU per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    pipe = Pipeline.from_pretrained(args.pipeline, device=device)
    pipe = apply_sampling_arguments(pipe, args)
    if args.prior:
        return _prior_upscale(pipe, image, args)
    ups = pipe.upsamplers
    if not ups:
        raise CascadeError(f"--pipeline {args.pipeline}: has no upsampler, only a {pipe.stages[0].resolution} px base "
                           f"stage; pass a pipeline with an SR3 stage (runs/sr3_photos/pipeline, or a cascade made "
                           f"by `python -m cascade assemble`)")
    scale = math.prod(s.kind.scale for s in ups)
    size = _size(args.size) if args.size else (image.width * scale, image.height * scale)
    stream = args.stream or args.resume or args.state_dir or processes > 1 or size[0] * size[1] > STREAM_ABOVE
    # Tiles: --tile-size 0 is the whole image; the default is twice the last stage's training size.
    tile_size = 2 * ups[-1].resolution if args.tile_size is None else (args.tile_size or None)
    if stream and args.consistent:
        why = next(w for w, on in (("--stream", args.stream), ("--resume", args.resume), ("--state-dir", args.state_dir),
                                   (f"{processes} processes", processes > 1), ("more than 4096x4096 pixels", True))
                   if on)
        raise CascadeError(f"--consistent: the {size[0]}x{size[1]} output is streamed ({why}), and a streamed "
                           f"upscale cannot project onto the whole input; drop --consistent")
    if tile_size is None and stream:
        raise CascadeError(f"--tile-size 0 (the whole image at once) cannot stream a {size[0]}x{size[1]} output; "
                           f"give a tile size")
    main = os.environ.get("RANK", "0") == "0"
    if tile_size is not None and main:
        overlaps = [args.overlap if args.overlap is not None else s.tile_overlap() for s in ups]
        erf = ", ".join(f"{s.erf['radius']} px" for s in ups if s.erf)
        print(f"tiles of {tile_size} px, overlap {'/'.join(map(str, overlaps))} px"
              + (f" (measured ERF radius: {erf})" if erf else ""), flush=True)
    try:
        if stream:
            try:
                report = upscale_to_file(pipe, image, args.output, seed=args.seed, aug_level=args.aug_level,
                                         consistent=args.consistent, size=size, tile_size=tile_size,
                                         overlap=args.overlap, tile_batch=args.tile_batch, state_dir=args.state_dir,
                                         resume=args.resume)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the state is cleaned up or kept (message printed)
                raise SystemExit(130) from None
            if main:
                print(f"wrote {args.output}: {image.width}x{image.height} -> {size[0]}x{size[1]} (streamed, "
                      f"{report['processes']} process{'es' * (report['processes'] > 1)}, {report['seconds']:.0f} s)")
            return
        if args.size:
            image = image.resize((size[0] // scale, size[1] // scale), Image.BICUBIC) \
                if size != (image.width * scale, image.height * scale) else image
        out = pipe.upscale(image, seed=args.seed, aug_level=args.aug_level, tile_size=tile_size,
                           overlap=args.overlap, tile_batch=args.tile_batch, consistent=args.consistent)[0]
    except CascadeError:
        raise
    except ValueError as e:
        raise CascadeError(f"{args.input}: {e}") from None
    save_image(out, Path(args.output))
    print(f"wrote {args.output}: {image.width}x{image.height} -> {out.width}x{out.height}")


def _prior_upscale(pipe, image: Image.Image, args) -> None:
    """`upscale --prior`: generative-prior SR with the pipeline's first stage (cascade.one_shot.prior_upscale)."""
    stage = pipe.stages[0]
    if stage.kind.takes_input:
        raise CascadeError(f"--prior: the first stage of {args.pipeline} is an upsampler; pass a pipeline whose first "
                           f"stage generates (a one-shot scene or a base stage)")
    factor = args.scale
    if args.size:
        width, height = _size(args.size)
        if width % image.width or height % image.height or width // image.width != height // image.height:
            raise CascadeError(f"--size {args.size}: --prior needs the same integer factor in both directions "
                               f"(the input is {image.width}x{image.height}); or use --scale")
        factor = width // image.width
    if factor < 2:
        raise CascadeError(f"--scale {factor}: must be >= 2")
    lowres = pil_to_signed(image)[None].to(stage.device)
    try:
        out = one_shot.prior_upscale(stage, lowres, factor, seed=args.seed)
    except ValueError as e:
        raise CascadeError(f"{args.input}: {e}") from None
    result = signed_to_pil(out)[0]
    save_image(result, Path(args.output))
    print(f"wrote {args.output}: {image.width}x{image.height} -> {result.width}x{result.height} "
          f"(generative prior: stage 0, a {stage.kind.name} stage, projected onto the input at every step)")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = map(int, text.lower().split("x"))
        assert width > 0 and height > 0
    except (ValueError, AssertionError):
        raise CascadeError(f"--size {text}: expected WIDTHxHEIGHT in pixels, e.g. 16384x8640") from None
    return width, height


DEFAULT_LABEL_PIPELINE = "runs/labels_layouts"


def synthesize(args) -> None:
    from .label_maps import as_maps, checked, read_ids, read_mask, resize

    if args.pipeline == DEFAULT_LABEL_PIPELINE and not Path(args.pipeline).is_dir():
        raise CascadeError(f"no pipeline at {DEFAULT_LABEL_PIPELINE}: run `make demo-labels` first, or pass --pipeline")
    if args.num < 1:
        raise CascadeError(f"--num {args.num}: must be >= 1")
    pipe = apply_sampling_arguments(Pipeline.from_pretrained(args.pipeline, device=args.device), args)
    base = pipe.base
    if base is None or not base.kind.uses_label_maps:
        raise CascadeError(f"--pipeline {args.pipeline}: its first stage is not a label-map stage "
                           f"(train one with train/label_map.py)")
    num_labels = base.unet.config.num_labels
    maps = as_maps(checked(read_ids(args.labels), num_labels, base.kind.ignore_id, args.labels))
    instances = as_maps(read_ids(args.instances, "instance map")) if args.instances else None
    if instances is not None and instances.shape != maps.shape:
        raise DataError(f"{args.instances}: instance map is {instances.shape[-1]}x{instances.shape[-2]}, "
                        f"the label map {maps.shape[-1]}x{maps.shape[-2]}")
    if args.size:
        width, height = _size(args.size)
        maps = resize(maps, (height, width))
        instances = None if instances is None else resize(instances, (height, width))
    edit_from = mask = None
    if args.edit_from or args.mask:
        if not (args.edit_from and args.mask):
            raise CascadeError("--edit-from and --mask go together: the previous output and the region to redo")
        edit_from = _read_image(args.edit_from)
        mask = read_mask(args.mask)
        for name, (w, h) in ((args.edit_from, edit_from.size), (args.mask, mask.shape[::-1])):
            if (h, w) != tuple(maps.shape[-2:]):
                raise DataError(f"{name}: is {w}x{h}, the label map {maps.shape[-1]}x{maps.shape[-2]}")
    settings = {i: {"guidance_scale": args.guidance_scale} for i in range(len(pipe.stages))} \
        if args.guidance_scale is not None else None
    # Tiles only where the output is larger than one (each stage's ERF is measured for the overlap).
    tile_size = args.tile_size if args.tile_size and max(maps.shape[-2:]) > args.tile_size else None
    try:
        outputs = pipe(label_maps=maps, instances=instances, num_images=args.num, seed=args.seed, settings=settings,
                       edit_from=edit_from, mask=mask, margin=args.margin, tile_size=tile_size,
                       overlap=args.overlap, tile_batch=args.tile_batch)
    except ValueError as e:
        raise CascadeError(f"synthesize {args.labels}: {e}") from None
    out = Path(args.output)
    names = [out] if len(outputs) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(outputs))]
    for image, name in zip(outputs, names):
        save_image(image, name)
    print(f"wrote {', '.join(map(str, names))}: {outputs[0].width}x{outputs[0].height} from {args.labels}")


def _read_image(path: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read image ({' '.join(str(e).split())})") from None
    return image


DEFAULT_ONE_SHOT = "runs/one_shot/pipeline"


def _one_shot_pipeline(args) -> Pipeline:
    if args.pipeline == DEFAULT_ONE_SHOT and not Path(args.pipeline).is_dir():
        raise CascadeError(f"no pipeline at {DEFAULT_ONE_SHOT}: train one with `accelerate launch train/one_shot.py "
                           f"--image photo.jpg` (or `make demo-one-shot`), or pass --pipeline")
    pipe = apply_sampling_arguments(Pipeline.from_pretrained(args.pipeline, device=args.device), args)
    try:
        one_shot.scene_stage(pipe)
    except ValueError as e:
        raise CascadeError(f"--pipeline {args.pipeline}: {e}") from None
    return pipe


def generate(args) -> None:
    pipe = _one_shot_pipeline(args)
    if args.num < 1:
        raise CascadeError(f"--num {args.num}: must be >= 1")
    if args.size:
        size = _size(args.size)
    else:  # the training photo's size, as recorded by train/one_shot.py
        info = Path(args.pipeline) / "one_shot.json"
        size = tuple(json.loads(info.read_text())["trained_on"]) if info.is_file() else None
        if size is None:
            raise CascadeError("--size WIDTHxHEIGHT is needed (this pipeline records no training photo size)")
    try:
        p = one_shot.plan(pipe, size)
    except ValueError as e:  # "size WxH: why"
        raise CascadeError(f"--size {size[0]}x{size[1]}: {str(e).split(': ', 1)[-1]}") from None
    out = Path(args.out)
    suffix = "." + args.format
    streamed = p.full[0] * p.full[1] > one_shot.IN_MEMORY_PIXELS
    print(f"{size[0]}x{size[1]}: scene {p.scene[1]}x{p.scene[0]}, then x{p.scale} through {len(p.upsamplers)} "
          f"upsamplers{' (streamed to disk)' if streamed else ''}", flush=True)
    thumbs = []
    for i in range(args.num):
        seed = args.seed + i
        path = out / f"sample_{seed:04d}{suffix}"
        try:
            if streamed:
                out.mkdir(parents=True, exist_ok=True)
                one_shot.generate(pipe, size, seed, args.tile_size, path=path)
                thumbs.append(_thumbnail_of_streamed(pipe, p, seed))
            else:
                image = one_shot.generate(pipe, size, seed, args.tile_size)
                save_image(image, path)
                thumbs.append(image)
        except ValueError as e:
            raise CascadeError(f"generate --size {size[0]}x{size[1]}: {e}") from None
        print(f"wrote {path}", flush=True)
    save_image(one_shot.contact_sheet(thumbs), out / "contact_sheet.png")
    print(f"wrote {out / 'contact_sheet.png'}: {args.num} samples, seeds {args.seed}..{args.seed + args.num - 1}")


def _thumbnail_of_streamed(pipe, p, seed: int) -> Image.Image:
    """A small copy of a streamed sample for the contact sheet: the same seed through the cascade up to
    the last size of at most 1024 px (the file itself is never read back whole)."""
    from dataclasses import replace

    keep = 0
    while keep < len(p.upsamplers) and max(p.scene) * math.prod(s.kind.scale for s in p.upsamplers[:keep + 1]) <= 1024:
        keep += 1
    short = replace(p, upsamplers=p.upsamplers[:keep])
    scene = one_shot.draw_scene(short, seed, progress=False)
    if not keep:
        return signed_to_pil(scene)[0]
    return short.pipeline().upscale(signed_to_unit(scene), seed=seed, progress=False)[0]


def edit(args) -> None:
    if not 0.0 <= args.strength <= 1.0:
        raise CascadeError(f"--strength {args.strength}: must be in [0, 1] (0 keeps the image, 1 redraws it)")
    pipe = _one_shot_pipeline(args)
    image = to_rgb(_read_image(args.image))
    mask = None
    if args.mask:
        from .label_maps import read_mask

        mask = read_mask(args.mask)
        if mask.shape != (image.height, image.width):
            raise DataError(f"{args.mask}: mask is {mask.shape[1]}x{mask.shape[0]}, the image {args.image} "
                            f"{image.width}x{image.height}")
    try:
        out = one_shot.edit(pipe, image, args.strength, mask=mask, seed=args.seed, margin=args.margin,
                            tile_size=args.tile_size)
    except ValueError as e:
        raise CascadeError(f"edit {args.image}: {e}") from None
    save_image(out, Path(args.out))
    print(f"wrote {args.out}: {out.width}x{out.height}, strength {args.strength:g}"
          + (f", only {args.mask} resampled" if args.mask else ""))


def layouts(args) -> None:
    from .label_data import LAYOUT_SIZE, write_pairs
    from .layouts import NAMES, layout

    if args.num < 1:
        raise CascadeError(f"--num {args.num}: must be >= 1")
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise CascadeError(f"{out}: exists and is not empty; choose a new folder")
    size = LAYOUT_SIZE if not args.size else _size(args.size)[::-1]
    count = write_pairs(out, (layout(i, size, args.split) for i in range(args.num)))
    print(f"wrote {out}: {count} {args.split} pairs ({size[1]}x{size[0]}, labels {', '.join(NAMES)}); train on it "
          f"with data.source=paired data.path={out}")


def assemble(args) -> None:
    pipe = Pipeline.from_stages(args.stages)
    pipe.save_pretrained(args.output)
    sizes = " -> ".join(f"{s.resolution} px" for s in pipe.stages)
    print(f"wrote {args.output}: {len(pipe.stages)} stages ({sizes})")


def pack(args) -> None:
    from .packing import pack as pack_images

    info = pack_images(args.src, args.out, size=args.size, crops=args.crops, stride=args.stride,
                       shard_size=args.shard_size, fmt=args.format, jpeg_quality=args.jpeg_quality,
                       workers=args.workers, on_bad_image=args.on_bad_image)
    skipped = f", {info['skipped']} undecodable images skipped" if info["skipped"] else ""
    print(f"wrote {args.out}: {info['records']} records from {info['images']} images in {len(info['shards'])} "
          f"{info['format']} shards{skipped}; train on it with data.source=shards data.path={args.out}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cascade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upscale", help="super-resolve an image file with a pipeline's upsamplers")
    up.add_argument("input")
    up.add_argument("output")
    up.add_argument("--pipeline", default=DEFAULT_PIPELINE,
                    help=f"a pipeline folder; its upsamplers are used (default: {DEFAULT_PIPELINE}, made by `make demo`)")
    up.add_argument("--aug-level", type=float, help="noise-augmentation level of the input (default: the stage's)")
    add_sampling_arguments(up)
    up.add_argument("--tile-size", type=int, help="denoise in overlapping tiles of this side (output px), with "
                    "memory bounded by the tile; 0: the whole image at once (default: twice the stage's training size)")
    up.add_argument("--overlap", type=int, help="tile overlap in output px (default: each stage's measured ERF radius)")
    up.add_argument("--tile-batch", type=int, default=8, help="tiles per network call")
    up.add_argument("--consistent", action=argparse.BooleanOptionalAction, default=None,
                    help="project every step so that the output downsamples exactly to the input (default: the "
                    "stage's setting; the demo SR preset's is on)")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--size", help="output WIDTHxHEIGHT: the input is first resized to it / the pipeline's scale "
                    "(never above the input's size)")
    up.add_argument("--stream", action="store_true", help=f"keep the full-size state on disk and write the output "
                    f"as it is made (automatic above {STREAM_ABOVE // 2 ** 20} MP, with --state-dir, and under "
                    f"accelerate launch with several processes)")
    up.add_argument("--state-dir", help="streamed: keep the state here, so an interrupted upscale can be resumed "
                    "(default: a temporary folder, always removed)")
    up.add_argument("--resume", action="store_true", help="continue the interrupted upscale whose state is in --state-dir")
    up.add_argument("--prior", action="store_true", help="generative-prior SR (PULSE's idea): the pipeline's first "
                    "stage (one-shot scene or base) generates the output, projected at every step so that it "
                    "downsamples to the input exactly; no SR stage is used")
    up.add_argument("--scale", type=int, default=4, help="--prior: the upscaling factor (default 4)")
    up.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    up.set_defaults(run=upscale)
    syn = commands.add_parser("synthesize", help="label map (class IDs) -> photo, with a label-map pipeline")
    syn.add_argument("labels", help="single-channel PNG of class IDs (mode L, P, I or I;16)")
    syn.add_argument("output", help="the image to write (with --num N: OUTPUT_0 ... OUTPUT_N-1)")
    syn.add_argument("--pipeline", default=DEFAULT_LABEL_PIPELINE,
                     help=f"a label-map pipeline folder (default: {DEFAULT_LABEL_PIPELINE}, made by `make demo-labels`)")
    syn.add_argument("--instances", help="instance-ID map of the same size (pix2pixHD's instance boundaries)")
    syn.add_argument("--num", type=int, default=1, help="samples of the map (seeds --seed, --seed + 1, ...)")
    syn.add_argument("--size", help="output WIDTHxHEIGHT: the label map is resized to it (nearest) first")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--guidance-scale", type=float, help="classifier-free guidance on the map, every stage "
                     "(default: each stage's stage.json)")
    add_sampling_arguments(syn)
    syn.add_argument("--tile-size", type=int, default=256, help="outputs larger than this (px) are denoised in "
                     "overlapping tiles of this side, so memory is bounded by the tile; 0: never (default 256)")
    syn.add_argument("--overlap", type=int, help="tile overlap in output px (default: each stage's measured ERF radius)")
    syn.add_argument("--tile-batch", type=int, default=8, help="tiles per network call (twice as many images "
                     "with guidance)")
    syn.add_argument("--edit-from", help="a previous output to edit: only --mask (grown by --margin) is redone")
    syn.add_argument("--mask", help="an image of the output's size, nonzero where to resample (e.g. where the label "
                     "changed)")
    syn.add_argument("--margin", type=int, default=16, help="px the mask is grown by, so the edit blends in")
    syn.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    syn.set_defaults(run=synthesize)
    gen = commands.add_parser("generate", help="new images of any size from a one-shot cascade (train/one_shot.py)")
    gen.add_argument("--pipeline", default=DEFAULT_ONE_SHOT, help=f"a one-shot pipeline (default: {DEFAULT_ONE_SHOT})")
    gen.add_argument("--size", help="output WIDTHxHEIGHT, any aspect ratio (default: the training photo's size)")
    gen.add_argument("--num", type=int, default=1, help="images, seeds --seed, --seed + 1, ...")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", default="samples", help="folder for sample_SEED.png and contact_sheet.png")
    gen.add_argument("--format", default="png", choices=["png", "tif"])
    gen.add_argument("--tile-size", type=int, help="upsamplers' tile side in output px (default: twice their "
                     "training size); outputs above 16 MP are streamed to disk")
    add_sampling_arguments(gen)
    gen.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    gen.set_defaults(run=generate)
    ed = commands.add_parser("edit", help="SDEdit, inpaint or harmonize an image with a one-shot cascade")
    ed.add_argument("--pipeline", default=DEFAULT_ONE_SHOT, help=f"a one-shot pipeline (default: {DEFAULT_ONE_SHOT})")
    ed.add_argument("--image", required=True, help="the image to edit (e.g. a sample you painted on, or a collage)")
    ed.add_argument("--mask", help="same size; nonzero where to resample (the rest is kept exactly), e.g. a pasted "
                    "object to harmonize")
    ed.add_argument("--strength", type=float, default=0.5, help="noise level in [0, 1]: 0 keeps, 1 redraws")
    ed.add_argument("--margin", type=int, default=0, help="px the mask is grown by")
    ed.add_argument("--out", required=True)
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--tile-size", type=int, help="upsamplers' tile side in output px")
    add_sampling_arguments(ed)
    ed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ed.set_defaults(run=edit)
    lay = commands.add_parser("layouts", help="write the built-in label-map pairs as a paired folder")
    lay.add_argument("output", help="a new folder for images/, labels/, instances/")
    lay.add_argument("--num", type=int, default=64)
    lay.add_argument("--split", default="test", choices=["train", "test"])
    lay.add_argument("--size", help="WIDTHxHEIGHT of each layout (default 128x128)")
    lay.set_defaults(run=layouts)
    asm = commands.add_parser("assemble", help="chain separately trained stages into one pipeline folder")
    asm.add_argument("output")
    asm.add_argument("stages", nargs="+", help="pipeline or stage folders, base first")
    asm.set_defaults(run=assemble)
    pk = commands.add_parser("pack", help="write an image folder as shards pre-resized (and cut) for a stage")
    pk.add_argument("src", help="an image folder (class subfolders, or flat) or a folder of .parquet/.tar shards")
    pk.add_argument("out", help="a new folder for the shards and pack.json")
    pk.add_argument("--size", type=int, help="resize so that the shorter side is this (never upsampled)")
    pk.add_argument("--crops", type=int, help="cut into sub-images of this side (after --size), BasicSR-style")
    pk.add_argument("--stride", type=int, help="step between sub-images (default: --crops, no overlap)")
    pk.add_argument("--shard-size", default="1GB", help="bytes of images per shard (default 1GB)")
    pk.add_argument("--format", default="parquet", choices=["parquet", "webdataset"])
    pk.add_argument("--jpeg-quality", type=int, help="store JPEG at this quality instead of lossless PNG")
    pk.add_argument("--workers", type=int, help="decoding processes (default: up to 4 CPU cores)")
    pk.add_argument("--on-bad-image", default="error", choices=["error", "skip"])
    pk.set_defaults(run=pack)
    args = parser.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    run_cli(main)
