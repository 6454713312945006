"""`python -m cascade synthesize LABELS OUT`: label map (class IDs) -> photos with a label-map pipeline,
at any size (tiled), and region edits of an earlier output."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CascadeError, DataError
from ..inference.pipeline import Pipeline
from ..io.atomic import save_image
from .common import (add_hub_arguments, add_sampling_arguments, apply_sampling_arguments, hub_kwargs, parse_size,
                     read_image)

DEFAULT_LABEL_PIPELINE = "runs/labels_layouts"


def add_parser(commands) -> None:
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
    add_hub_arguments(syn)
    syn.set_defaults(run=run)


def run(args) -> None:
    from ..data.label_maps import as_maps, checked, read_ids, read_mask, resize

    if args.pipeline == DEFAULT_LABEL_PIPELINE and not Path(args.pipeline).is_dir():
        raise CascadeError(f"no pipeline at {DEFAULT_LABEL_PIPELINE}: run `make demo-labels` first, or pass --pipeline")
    if args.num < 1:
        raise CascadeError(f"--num {args.num}: must be >= 1")
    pipe = apply_sampling_arguments(Pipeline.from_pretrained(args.pipeline, device=args.device, **hub_kwargs(args)), args)
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
        width, height = parse_size(args.size)
        maps = resize(maps, (height, width))
        instances = None if instances is None else resize(instances, (height, width))
    edit_from = mask = None
    if args.edit_from or args.mask:
        if not (args.edit_from and args.mask):
            raise CascadeError("--edit-from and --mask go together: the previous output and the region to redo")
        edit_from = read_image(args.edit_from)
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
