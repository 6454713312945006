"""`python -m cascade edit`: SDEdit, inpaint or harmonize an image with a one-shot cascade."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CascadeError, DataError
from ..inference import one_shot
from ..io.atomic import save_image
from ..io.images import to_rgb
from .common import add_hub_arguments, add_sampling_arguments, read_image
from .generate import DEFAULT_ONE_SHOT, one_shot_pipeline


def add_parser(commands) -> None:
    ed = commands.add_parser("edit", help="SDEdit, inpaint or harmonize an image with a one-shot cascade")
    ed.add_argument("--pipeline", default=DEFAULT_ONE_SHOT, help=f"a one-shot pipeline (default: {DEFAULT_ONE_SHOT})")
    ed.add_argument("--image", required=True, help="the image to edit (e.g. a sample you painted on, or a collage)")
    ed.add_argument("--mask", help="same size; nonzero where to resample (the rest is kept exactly), e.g. a pasted "
                    "object to harmonize")
    ed.add_argument("--strength", type=float, help="noise level in [0, 1]: 0 keeps, 1 redraws (default 0.5; "
                    "--harmonize: 0.3)")
    ed.add_argument("--margin", type=int, default=0, help="px the mask is grown by")
    ed.add_argument("--harmonize", action="store_true", help="a pasted object (--mask): redrawn at strength 0.3 "
                    "and blended over 4 px, so it takes on the photo's colours and texture (ConSinGAN / SinDDM)")
    ed.add_argument("--stages", type=int, help="only the finest this many stages redraw, the coarser ones "
                    "pass the image on (default: all; 2 with --harmonize changes texture, not colours)")
    ed.add_argument("--feather", type=int, help="px over which the edit blends into the image (default 0: the image "
                    "kept exactly outside the mask; --harmonize: 4)")
    ed.add_argument("--resample", type=int, default=1, help="inpainting: each step done this many times, RePaint-"
                    "style, for a region that joins its surroundings (the stages sample with DDPM)")
    ed.add_argument("--out", required=True)
    ed.add_argument("--seed", type=int, default=0)
    ed.add_argument("--tile-size", type=int, help="upsamplers' tile side in output px")
    add_sampling_arguments(ed)
    ed.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    add_hub_arguments(ed)
    ed.set_defaults(run=run)


def run(args) -> None:
    if args.harmonize and not args.mask:
        raise CascadeError("--harmonize needs --mask: the pasted object to harmonize")
    args.strength = args.strength if args.strength is not None else (0.3 if args.harmonize else 0.5)
    stages = args.stages
    feather = args.feather if args.feather is not None else (4 if args.harmonize else 0)
    if args.resample < 1:
        raise CascadeError(f"--resample {args.resample}: must be >= 1")
    if args.stages is not None and args.stages < 1:
        raise CascadeError(f"--stages {args.stages}: must be >= 1 (the finest stages that redraw)")
    if feather < 0:
        raise CascadeError(f"--feather {feather}: must be >= 0 px")
    if not args.mask and (feather > 0 or args.resample > 1):
        raise CascadeError("--feather and --resample act on a masked edit: give --mask")
    if not 0.0 <= args.strength <= 1.0:
        raise CascadeError(f"--strength {args.strength}: must be in [0, 1] (0 keeps the image, 1 redraws it)")
    pipe = one_shot_pipeline(args)
    image = to_rgb(read_image(args.image))
    mask = None
    if args.mask:
        from ..data.label_maps import read_mask

        mask = read_mask(args.mask)
        if mask.shape != (image.height, image.width):
            raise DataError(f"{args.mask}: mask is {mask.shape[1]}x{mask.shape[0]}, the image {args.image} "
                            f"{image.width}x{image.height}")
    try:
        out = one_shot.edit(pipe, image, args.strength, mask=mask, seed=args.seed, margin=args.margin,
                            tile_size=args.tile_size, stages=stages, feather=feather, resample=args.resample)
    except ValueError as e:
        raise CascadeError(f"edit {args.image}: {e}") from None
    save_image(out, Path(args.out))
    print(f"wrote {args.out}: {out.width}x{out.height}, strength {args.strength:g}"
          + (f", only {args.mask} resampled" if args.mask else ""))
