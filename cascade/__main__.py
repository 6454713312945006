"""Command line: `python -m cascade upscale IN OUT`, `assemble OUT STAGE...` and `pack SRC OUT`.

    python -m cascade upscale photo.png photo_x2.png          # with the demo cascade's upsampler
    python -m cascade upscale photo.png photo_x2.png --pipeline runs/sr3_photos/pipeline
    python -m cascade upscale small.png big.png --pipeline runs/cascade_photos --aug-level 0.05 --steps 25
    python -m cascade upscale photo.jpg big.png --tile-size 128 --overlap 16 --tile-batch 16 --consistent
    python -m cascade upscale 8k.jpg 16k.png --state-dir 16k.state         # streamed to disk, resumable
    python -m cascade upscale 8k.jpg 16k.png --state-dir 16k.state --resume
    python -m cascade upscale photo.jpg 16k.png --size 16384x8640          # the input resized to 8192x4320 first
    accelerate launch --multi_gpu --num_processes 4 -m cascade upscale 8k.jpg 16k.png   # tiles shared
    python -m cascade assemble runs/cascade_photos runs/base_photos/pipeline runs/sr3_photos/pipeline
    python -m cascade pack ~/imagenet/train data/imagenet_256 --size 256 --shard-size 1GB
    python -m cascade pack ~/DIV2K_train_HR data/div2k_sub --crops 480 --stride 240 --shard-size 64MB --format webdataset
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

from .cli import add_sampling_arguments, apply_sampling_arguments, run_cli
from .errors import CascadeError, DataError
from .giant import STREAM_ABOVE, upscale_to_file
from .pipeline import Pipeline


DEFAULT_PIPELINE = "runs/cascade_photos"


def upscale(args) -> None:
    try:
        image = Image.open(args.input)
        image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{args.input}: cannot read image ({' '.join(str(e).split())})") from None
    if args.pipeline == DEFAULT_PIPELINE and not Path(args.pipeline).is_dir():
        raise CascadeError(f"no pipeline at {DEFAULT_PIPELINE}: run `make demo` first, or pass --pipeline FOLDER")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if processes > 1 and device.startswith("cuda"):  # accelerate launch: one GPU per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    pipe = Pipeline.from_pretrained(args.pipeline, device=device)
    pipe = apply_sampling_arguments(pipe, args)
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
                                         size=size, tile_size=tile_size, overlap=args.overlap, tile_batch=args.tile_batch,
                                         state_dir=args.state_dir, resume=args.resume)
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
                           overlap=args.overlap, tile_batch=args.tile_batch, consistent=args.consistent or None)[0]
    except CascadeError:
        raise
    except ValueError as e:
        raise CascadeError(f"{args.input}: {e}") from None
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    partial = Path(args.output).with_name(Path(args.output).name + ".partial")
    out.save(partial, format=Image.registered_extensions().get(Path(args.output).suffix.lower(), "PNG"))
    partial.replace(args.output)  # never leave a half-written output file
    print(f"wrote {args.output}: {image.width}x{image.height} -> {out.width}x{out.height}")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = map(int, text.lower().split("x"))
        assert width > 0 and height > 0
    except (ValueError, AssertionError):
        raise CascadeError(f"--size {text}: expected WIDTHxHEIGHT in pixels, e.g. 16384x8640") from None
    return width, height


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
    up.add_argument("--consistent", action="store_true",
                    help="project every step so that the output downsamples exactly to the input")
    up.add_argument("--seed", type=int, default=0)
    up.add_argument("--size", help="output WIDTHxHEIGHT: the input is first resized to it / the pipeline's scale "
                    "(never above the input's size)")
    up.add_argument("--stream", action="store_true", help=f"keep the full-size state on disk and write the output "
                    f"as it is made (automatic above {STREAM_ABOVE // 2 ** 20} MP, with --state-dir, and under "
                    f"accelerate launch with several processes)")
    up.add_argument("--state-dir", help="streamed: keep the state here, so an interrupted upscale can be resumed "
                    "(default: a temporary folder, always removed)")
    up.add_argument("--resume", action="store_true", help="continue the interrupted upscale whose state is in --state-dir")
    up.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    up.set_defaults(run=upscale)
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
