"""Views of a large render for a page: a downscaled view with the crops outlined, 1:1 crops, and the
render's colour statistics against the photo it was trained on (docs/one_shot.md, "3840 x 2160 and
16384 x 8640").

    python eval/render_views.py --image renders/4k/sample_0000.png --photo photo.jpg --out docs/one_shot_renders \
        --name k4k

Writes NAME_view.jpg (`--view-width` px wide, each crop outlined and numbered), NAME_crop1.jpg ... (the
render's own pixels, `--crop` px square, centred at each `--at X,Y`, fractions of the width and height),
NAME_crops.jpg (the crops side by side, 8 px apart) and NAME_colours.json; prints a table of each
channel's mean and std and the 2nd / 98th luma percentiles of the photo and the render
(`cascade.metrics.colour`, exact at any size) and their largest differences.
JPEG quality 92 without chroma subsampling, so the pages stay small and the colours are not smeared.
"""

import argparse
import json
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from cascade.cli.common import run_cli
from cascade.data.one_image import load_photo
from cascade.errors import CascadeError
from cascade.io.atomic import replacing, write_text
from cascade.io.images import pil_to_uint8
from cascade.metrics.colour import colour_shift, colour_stats

DEFAULT_AT = ("0.2,0.3", "0.5,0.55", "0.8,0.75")


def read_render(path: Path) -> Image.Image:
    """The whole render as RGB (the photo loader, never downscaling: a 16K output is 425 MB in memory)."""
    return load_photo(path, max_side=sys.maxsize)[0]


def parse_at(text: str) -> tuple[float, float]:
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise CascadeError(f"--at {text}: expected X,Y as fractions of the width and height, e.g. 0.5,0.5") from None
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise CascadeError(f"--at {text}: X and Y must lie in [0, 1]")
    return x, y


def crop_boxes(size: tuple[int, int], side: int, centres: list[tuple[float, float]]) -> list[tuple[int, int, int, int]]:
    """Boxes (left, top, right, bottom) of `side` px squares centred at `centres`, moved inside the image."""
    w, h = size
    side_w, side_h = min(side, w), min(side, h)
    boxes = []
    for fx, fy in centres:
        left = min(max(0, round(fx * w - side_w / 2)), w - side_w)
        top = min(max(0, round(fy * h - side_h / 2)), h - side_h)
        boxes.append((left, top, left + side_w, top + side_h))
    return boxes


def view_of(image: Image.Image, width: int, boxes: list) -> Image.Image:
    """`image` at `width` px wide (antialiased), each box outlined and numbered from 1."""
    k = width / image.width
    view = image.resize((width, max(1, round(image.height * k))), Image.BICUBIC, reducing_gap=3.0)
    draw = ImageDraw.Draw(view)
    for i, (left, top, right, bottom) in enumerate(boxes, 1):
        x0, y0 = round(left * k), round(top * k)
        box = [x0, y0, max(x0, round(right * k) - 1), max(y0, round(bottom * k) - 1)]  # >= 1 px, however small
        draw.rectangle(box, outline=(255, 255, 0), width=2)
        draw.text((box[0] + 4, box[1] + 2), str(i), fill=(255, 255, 0))
    return view


def save_jpeg(image: Image.Image, path: Path) -> None:
    with replacing(path, "wb") as f:
        image.save(f, format="JPEG", quality=92, subsampling=0)


def table(rows: dict[str, dict]) -> str:
    lines = ["| | size | mean R, G, B | std R, G, B | luma p2 | luma p98 |", "|---|---|---|---|---|---|"]
    for name, s in rows.items():
        lines.append(f"| {name} | {s['size'][0]} x {s['size'][1]} | {', '.join(f'{v:.1f}' for v in s['mean'])} | "
                     f"{', '.join(f'{v:.1f}' for v in s['std'])} | {s['luma_p2']:.1f} | {s['luma_p98']:.1f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="the render (PNG or TIFF, any size)")
    parser.add_argument("--photo", help="the photo it was trained on, for the colour statistics")
    parser.add_argument("--photo-max-side", type=int, default=4096,
                        help="the photo downscaled as training downscales it (train/one_shot.py max_side)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--name", help="file name prefix (default: the render's file name)")
    parser.add_argument("--view-width", type=int, default=1600)
    parser.add_argument("--crop", type=int, default=512, help="side of the 1:1 crops, px")
    parser.add_argument("--at", action="append", metavar="X,Y", help="a crop's centre, fractions of the width "
                        f"and height; repeatable (default: {' '.join(DEFAULT_AT)})")
    args = parser.parse_args(argv)
    if args.view_width < 1 or args.crop < 1:
        raise CascadeError(f"--view-width {args.view_width} / --crop {args.crop}: must be >= 1")
    centres = [parse_at(text) for text in args.at or DEFAULT_AT]
    render = read_render(Path(args.image))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = args.name or Path(args.image).stem

    boxes = crop_boxes(render.size, args.crop, centres)
    save_jpeg(view_of(render, min(args.view_width, render.width), boxes), out / f"{name}_view.jpg")
    crops = [render.crop(box) for box in boxes]
    for i, crop in enumerate(crops, 1):
        save_jpeg(crop, out / f"{name}_crop{i}.jpg")
    strip = Image.new("RGB", (sum(c.width for c in crops) + 8 * (len(crops) - 1), max(c.height for c in crops)),
                      (255, 255, 255))
    for i, crop in enumerate(crops):
        strip.paste(crop, (sum(c.width + 8 for c in crops[:i]), 0))
    save_jpeg(strip, out / f"{name}_crops.jpg")

    rows = {}
    if args.photo:
        photo, _ = load_photo(args.photo, args.photo_max_side)
        rows["photo"] = {"size": list(photo.size), **colour_stats(pil_to_uint8(photo))}
    rows["render"] = {"size": list(render.size), **colour_stats(pil_to_uint8(render))}
    report = {"image": str(args.image), "photo": args.photo, "crops": [list(b) for b in boxes], "stats": rows}
    if args.photo:
        report["shift"] = colour_shift(rows["render"], rows["photo"])
    write_text(out / f"{name}_colours.json", json.dumps(report, indent=2) + "\n")
    print(table(rows))
    if args.photo:
        print("largest differences: " + ", ".join(f"{k} {v:.3g}" for k, v in report["shift"].items()))
    print(f"wrote {out / (name + '_view.jpg')}, {len(boxes)} crops, {out / (name + '_colours.json')}")


if __name__ == "__main__":
    run_cli(main)
