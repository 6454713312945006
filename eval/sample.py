"""Write a labelled sample grid from a trained pipeline: one row per class.

For a cascade every sample is shown as every stage's output side by side (base | upsampler 1 |
...), each enlarged (nearest) to the final size.

    python eval/sample.py --pipeline runs/base_photos/pipeline --classes 0 1 2 --steps 25 --out grid.png
    python eval/sample.py --pipeline runs/base_photos/pipeline --classes cat rocket --guidance 3 --out g.png

Every row is drawn with its own generator seeded by (seed, row), so a row does not change when
other classes are added or removed.
"""

import argparse
from pathlib import Path

import torch

from cascade.cli.common import add_sampling_arguments, apply_sampling_arguments, run_cli
from cascade.errors import CascadeError
from cascade.inference.pipeline import Pipeline
from cascade.io.images import label_rows, uint8_grid, unit_to_uint8


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="folder written by a training script (…/pipeline)")
    parser.add_argument("--classes", nargs="*", help="class indices or names (default: all classes)")
    parser.add_argument("--per-class", type=int, default=8, help="images per row")
    parser.add_argument("--guidance", type=float, help="classifier-free guidance scale (1 = none)")
    add_sampling_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--zoom", type=int, default=2, help="integer nearest-neighbour enlargement of the grid")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="PNG file to write")
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.zoom < 1:
        parser.error("--per-class and --zoom must be >= 1")

    pipe = Pipeline.from_pretrained(args.pipeline, device=args.device)
    pipe = apply_sampling_arguments(pipe, args)
    names = pipe.class_names
    classes = args.classes if args.classes else (list(range(len(names))) if names else [None])
    classes = [int(c) if isinstance(c, str) and c.isdigit() else c for c in classes]

    if pipe.base is None:
        raise CascadeError(f"{args.pipeline}: no base stage; use `python -m cascade upscale` for upsamplers")
    rows = []
    for row, label in enumerate(classes):
        labels = None if label is None else [label] * args.per_class
        try:  # every image its own seed: image j of row r has seed * 100003 + r * per_class + j
            stages = pipe(labels, num_images=args.per_class, seed=args.seed * 100003 + row * args.per_class,
                          guidance_scale=args.guidance, output_type="pt", return_intermediates=True)
        except ValueError as e:
            raise CascadeError(f"--classes {label!r}: {e}") from None
        size = stages[-1].shape[-1]
        enlarged = [torch.nn.functional.interpolate(s, size=stages[-1].shape[-2:], mode="nearest") for s in stages]
        rows.append(torch.stack(enlarged, dim=1).flatten(0, 1))  # image 1: stage 0, stage 1, ...; image 2: ...
    grid = uint8_grid(unit_to_uint8(torch.cat(rows)), nrow=args.per_class * len(pipe.stages))  # "pt" is [0, 1]
    if args.zoom > 1:
        grid = grid.resize((grid.width * args.zoom, grid.height * args.zoom), 0)
    texts = [names[c] if isinstance(c, int) and names else str(c) for c in classes]
    if names:
        grid = label_rows(grid, texts, row_height=size * args.zoom, padding=2 * args.zoom)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    sizes = " | ".join(f"{st.resolution} px" for st in pipe.stages)
    print(f"wrote {args.out}: {len(classes)} rows x {args.per_class} images ({sizes})")


if __name__ == "__main__":
    run_cli(main)
