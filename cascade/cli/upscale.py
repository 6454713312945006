"""`python -m cascade upscale IN OUT`: super-resolve an image file with a pipeline's upsamplers (in memory
and tiled, streamed to disk above 16 MP, resumable, shared by `accelerate launch` processes), or with
`--prior` by the first stage's generative prior."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import torch
from PIL import Image

from ..errors import CascadeError
from ..inference import one_shot
from ..inference.pipeline import Pipeline
from ..inference.streamed.upscale import STREAM_ABOVE, upscale_to_file
from ..io.atomic import save_image
from ..io.images import pil_to_signed, signed_to_pil
from .common import (add_hub_arguments, add_sampling_arguments, apply_sampling_arguments, hub_kwargs, parse_size,
                     read_image)

DEFAULT_PIPELINE = "runs/cascade_photos"


def add_parser(commands) -> None:
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
    add_hub_arguments(up)
    up.set_defaults(run=run)


def run(args) -> None:
    image = read_image(args.input)
    if args.pipeline == DEFAULT_PIPELINE and not Path(args.pipeline).is_dir():
        raise CascadeError(f"no pipeline at {DEFAULT_PIPELINE}: run `make demo` first, or pass --pipeline FOLDER")
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    device = args.device
    if processes > 1 and device.startswith("cuda"):  # accelerate launch: one GPU per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    pipe = Pipeline.from_pretrained(args.pipeline, device=device, **hub_kwargs(args))
    pipe = apply_sampling_arguments(pipe, args)
    if args.prior:
        return prior_upscale(pipe, image, args)
    ups = pipe.upsamplers
    if not ups:
        raise CascadeError(f"--pipeline {args.pipeline}: has no upsampler, only a {pipe.stages[0].resolution} px base "
                           f"stage; pass a pipeline with an SR3 stage (runs/sr3_photos/pipeline, or a cascade made "
                           f"by `python -m cascade assemble`)")
    scale = math.prod(s.kind.scale for s in ups)
    size = parse_size(args.size) if args.size else (image.width * scale, image.height * scale)
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


def prior_upscale(pipe, image: Image.Image, args) -> None:
    """`upscale --prior`: generative-prior SR with the pipeline's first stage (cascade.one_shot.prior_upscale)."""
    stage = pipe.stages[0]
    if stage.kind.takes_input:
        raise CascadeError(f"--prior: the first stage of {args.pipeline} is an upsampler; pass a pipeline whose first "
                           f"stage generates (a one-shot scene or a base stage)")
    factor = args.scale
    if args.size:
        width, height = parse_size(args.size)
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
