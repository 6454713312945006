"""`python -m cascade layouts OUT`: the built-in label-map pairs written as a paired folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import CascadeError
from .common import parse_size


def add_parser(commands) -> None:
    lay = commands.add_parser("layouts", help="write the built-in label-map pairs as a paired folder")
    lay.add_argument("output", help="a new folder for images/, labels/, instances/")
    lay.add_argument("--num", type=int, default=64)
    lay.add_argument("--split", default="test", choices=["train", "test"])
    lay.add_argument("--size", help="WIDTHxHEIGHT of each layout (default 128x128)")
    lay.set_defaults(run=run)


def run(args) -> None:
    from ..data.layouts import NAMES, layout
    from ..data.paired import LAYOUT_SIZE, write_pairs

    if args.num < 1:
        raise CascadeError(f"--num {args.num}: must be >= 1")
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise CascadeError(f"{out}: exists and is not empty; choose a new folder")
    size = LAYOUT_SIZE if not args.size else parse_size(args.size)[::-1]
    count = write_pairs(out, (layout(i, size, args.split) for i in range(args.num)))
    print(f"wrote {out}: {count} {args.split} pairs ({size[1]}x{size[0]}, labels {', '.join(NAMES)}); train on it "
          f"with data.source=paired data.path={out}")
