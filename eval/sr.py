"""Super-resolution quality of a pipeline's upsamplers on held-out images, with bicubic as the baseline.

    python eval/sr.py --pipeline runs/sr3_photos/pipeline --num 32 --out runs/sr3_photos/heldout.png
    python eval/sr.py --pipeline runs/sr3_photos/pipeline --aug-levels 0 0.05 0.1 --out sweep.png
    python eval/sr.py --pipeline runs/cascade_photos --data my_photos/ --out mine.png   # whole images
    python eval/sr.py --pipeline runs/sr3_photos/pipeline --consistent --fid --num 200 --out proj.png
    python eval/sr.py --pipeline runs/sr3_photos/pipeline --crop-size 192 --tile-size 64 --out tiles.png

High-res images: the built-in photos' held-out split as seeded crops of the last stage's size
(`--data photos`, the default), or a folder / `datasets` name (whole images, or `--crops`). Each is
cut to a multiple of the total scale factor; the low-res input is made with the documented
downsampler (cascade.resize.downsample, antialiased bicubic equal to PIL's) and quantised to
uint8, as a user's image would be. The upsamplers (from `--start-at`, default the first) upscale
it; bicubic upsampling of the same input is the baseline row.

Columns, mean over images (the SR papers' protocol: uint8 images, `scale` border pixels cropped):
- PSNR and SSIM on RGB and on the BT.601 luma Y; equal to scikit-image's (see cascade/metrics/sr.py);
- consistency: SR3's MSE between the downsampled output and the low-res input, on the [0, 1] scale;
- HF energy / truth: high-frequency (Laplacian) energy relative to the ground truth's, totals over
  images (1.0 = as sharp as the truth; bicubic is far below);
- colour shift: the largest per-channel difference of means between output and input (0..255 scale);
- FID (`--fid`): between the outputs and the ground truths (cascade.metrics; the same weights as
  eval/fid.py), one number per row; it needs a few hundred images to mean much.
Extra rows:
- `--consistent`: each SR row again with the exact-consistency projection at every step.
- `--tile-size T [--overlap O]`: each SR row again, denoised as jointly fused tiles (cascade.tiling),
  plus "independent tiles", the naive baseline (each tile upscaled on its own and pasted, cut at the
  middle of the overlaps). Two more columns: the seam ratio (gradient energy across the tile edges
  over that elsewhere, ~1.0 = no seams; computed for every row on the same tile grid) and, for tiled
  rows, PSNR of the tiled output against the whole-image output with the same seed.
PSNR and SSIM reward blur: a diffusion upsampler that draws plausible detail usually scores *below*
bicubic on them while looking sharper.
The picture has a row per image: low-res (nearest) | bicubic | SR at the first level | ground truth.
"""

import argparse
import json
import math

import torch
from accelerate import Accelerator
from tqdm import tqdm

from cascade.cli import add_sampling_arguments, apply_sampling_arguments, run_cli, sampling_report
from cascade.errors import DataError
from cascade.images import from_unit, make_grid, uint8_to_unit, unit_to_uint8
from cascade.metrics import sr as metrics
from cascade.metrics.scores import FeatureStats, fid_from_stats
from cascade.metrics.inception import load_feature_network
from cascade.metrics.sources import parse_source, load_real, real_batches
from cascade.pipeline import Pipeline
from cascade.resize import downsample, upsample
from cascade.tiling import make_tiles


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="pipeline or stage folder; its upsamplers are used")
    parser.add_argument("--start-at", type=int, help="first upsampler stage to use (default: the first)")
    parser.add_argument("--data", default="photos", help="`photos` (held-out crops), an image folder or a dataset name")
    parser.add_argument("--split", help="dataset split (default: test; a plain image folder: all)")
    parser.add_argument("--num", type=int, help="images (photos: crops, default 16; others: default all)")
    parser.add_argument("--crops", action="store_true", help="folders/datasets: --num seeded crops of the last stage's size")
    parser.add_argument("--crop-size", type=int, help="side of the high-res crops (default: the last stage's size)")
    parser.add_argument("--crop-scale", type=float, nargs=2, default=[0.15, 0.4], help="crop side / shorter side")
    parser.add_argument("--aug-levels", type=float, nargs="+", help="noise-augmentation levels (default: the stage's)")
    add_sampling_arguments(parser)
    parser.add_argument("--consistent", action="store_true", help="add rows with the exact-consistency projection")
    parser.add_argument("--tile-size", type=int, help="add tiled rows (tile side in output pixels) and seam columns")
    parser.add_argument("--overlap", type=int, help="tile overlap (default: each stage's measured ERF radius)")
    parser.add_argument("--tile-batch", type=int, default=8)
    parser.add_argument("--fid", action="store_true", help="add an FID column (outputs vs ground truths)")
    parser.add_argument("--weights", help="FID Inception weights (see eval/fid.py)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=6, help="images shown in the picture")
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    parser.add_argument("--out", required=True, help="PNG to write; the table goes next to it as .json")
    args = parser.parse_args(argv)

    device = Accelerator(cpu=args.cpu).device
    pipe = Pipeline.from_pretrained(args.pipeline, device=device)
    start = args.start_at if args.start_at is not None else (1 if pipe.base is not None else 0)
    ups = pipe.stages[start:]
    if not ups or not all(s.kind.takes_input for s in ups):
        parser.error(f"{args.pipeline}: no upsampler stages from stage {start}")
    pipe = apply_sampling_arguments(pipe, args)
    scale = math.prod(s.kind.scale for s in ups)
    levels = args.aug_levels or [ups[0].defaults.aug_level]
    network = load_feature_network(args.weights, device) if args.fid else None

    spec = parse_source(args.data, args.split)
    if not spec.is_real:
        parser.error(f"--data {args.data}: needs real images (photos, a folder or a dataset)")
    crops = args.crops or spec.kind == "photos"
    num = args.num or (16 if crops else None)
    batches = real_batches(load_real(spec), num, args.batch_size, (args.crop_size or ups[-1].resolution) if crops else None,
                           crops, tuple(args.crop_scale), args.seed)

    # Rows: bicubic, then for every level the whole-image SR and the variants asked for.
    variants = [("", {})]
    if args.consistent:
        variants.append((" consistent", {"consistent": True}))
    if args.tile_size:
        overlap = args.overlap if args.overlap is not None else ups[-1].tile_overlap()
        tiling = {"tile_size": args.tile_size, "overlap": args.overlap, "tile_batch": args.tile_batch}
        variants += [(f" tiled{name}", {**kw, **tiling}) for name, kw in list(variants)]
    methods = {f"SR s={lv:g}{name}": dict(aug_level=lv, **kw) for lv in levels for name, kw in variants}
    names = ["bicubic", *methods] + (["independent tiles"] if args.tile_size else [])
    collected = {name: {} for name in names}
    stats = {name: FeatureStats() for name in names} if network else None
    truth_stats = FeatureStats() if network else None
    shown = []
    count = 0
    with tqdm(total=num, desc="upscaling", unit="img") as bar:
        for hr, _ in batches:
            h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale  # modcrop
            if h == 0 or w == 0:
                raise DataError(f"{args.data}: an image of {tuple(hr.shape[-2:])} px is smaller than the scale x{scale}")
            hr = hr[..., :h, :w]
            lr = unit_to_uint8(downsample(uint8_to_unit(hr), scale))
            lr_unit = uint8_to_unit(lr, torch.float32)
            outputs = {"bicubic": unit_to_uint8(upsample(lr_unit.double(), (h, w)))}
            for name, kwargs in methods.items():  # image i of the run has seed args.seed + i, whatever the batch
                sr = pipe.upscale(lr_unit, seed=args.seed + count, start_at=start, output_type="pt",
                                  progress=False, **kwargs)
                outputs[name] = unit_to_uint8(sr.cpu())
            if args.tile_size:
                multiple = ups[-1].size_multiple
                grid = make_tiles(h, w, ups[-1].tile_geometry(args.tile_size, overlap)[0], overlap, multiple)
                outputs["independent tiles"] = independent_tiles(pipe, lr_unit, grid, multiple, scale, args, start,
                                                                 levels[0], count)
            for name, out in outputs.items():
                row = metrics.per_image(out, lr, hr, scale)
                if args.tile_size:
                    row["seam_ratio"] = metrics.seam_ratio(uint8_to_unit(out), *tile_edges(grid, multiple), multiple)
                    whole = name.replace(" tiled", "")
                    if whole != name:
                        row["psnr_vs_whole"] = metrics.psnr(uint8_to_unit(out), uint8_to_unit(outputs[whole]))
                for key, value in row.items():
                    collected[name].setdefault(key, []).append(value)
                if stats is not None:
                    stats[name].update(network(out.to(device))[0])
            if truth_stats is not None:
                truth_stats.update(network(hr.to(device))[0])
            if len(shown) < args.rows:
                shown.append((lr, outputs["bicubic"], outputs[next(iter(methods))], hr))
            count += hr.shape[0]
            bar.update(hr.shape[0])
    rows = {name: metrics.summarise(values) for name, values in collected.items()}
    if stats is not None:
        for name in names:
            rows[name]["fid"] = fid_from_stats(stats[name], truth_stats)

    print(f"{count} images from {args.data} ({spec.split}), {h}x{w} px, x{scale}, border {scale} px cropped"
          + (f"; tiles {args.tile_size} px, overlap {overlap} px" if args.tile_size else ""))
    print(table(rows))
    write_picture(shown, args.rows, scale, args.zoom, args.out)
    with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
        json.dump({"pipeline": args.pipeline, "data": args.data, "split": spec.split, "num": count, "scale": scale,
                   "border": scale, **sampling_report(ups), "tile_size": args.tile_size,
                   "overlap": overlap if args.tile_size else None, "rows": rows}, f, indent=2)
    print(f"wrote {args.out} (rows: low-res | bicubic | {next(iter(methods))} | ground truth)")


COLUMNS = [("psnr_rgb", "PSNR RGB", "{:.2f}"), ("psnr_y", "PSNR Y", "{:.2f}"), ("ssim_rgb", "SSIM RGB", "{:.4f}"),
           ("ssim_y", "SSIM Y", "{:.4f}"), ("consistency", "consistency", "{:.2e}"),
           ("hf_energy_vs_truth", "HF energy / truth", "{:.3f}"), ("colour_shift", "colour shift /255", "{:.2f}"),
           ("fid", "FID", "{:.2f}"), ("seam_ratio", "seam ratio", "{:.3f}"), ("psnr_vs_whole", "PSNR vs whole", "{:.2f}")]


def table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table with the columns some row has."""
    present = [c for c in COLUMNS if any(c[0] in r for r in rows.values())]
    lines = ["| method | " + " | ".join(title for _, title, _ in present) + " |", "|---" * (len(present) + 1) + "|"]
    for name, r in rows.items():
        cells = [fmt.format(r[key]) if key in r else "" for key, _, fmt in present]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def tile_edges(tiles, multiple: int) -> tuple[list[int], list[int]]:
    """The rows and columns where a seam could show: where some tile starts or ends, and the middle
    of each overlap (where `independent_tiles` cuts), all on the tiles' `multiple` grid."""
    def lines(starts, size):
        starts = sorted(set(starts))
        return sorted({*starts, *(s + size for s in starts), *cut_lines(starts, size, multiple)})

    return lines([t.top for t in tiles], tiles[0].height), lines([t.left for t in tiles], tiles[0].width)


def cut_lines(starts: list[int], size: int, multiple: int) -> list[int]:
    """The middle of the overlap of each pair of consecutive tiles, rounded down to the grid."""
    return [(s + size + nxt) // 2 // multiple * multiple for s, nxt in zip(starts, starts[1:])]


def independent_tiles(pipe, lr_unit, tiles, multiple, scale, args, start, level, first: int) -> torch.Tensor:
    """The naive baseline: every tile upscaled on its own (own noise, no fusion), pasted with hard cuts
    at the middle of each overlap; `first` is the index of the batch's first image. uint8 [N x 3 x H x W]."""
    n, (h, w) = lr_unit.shape[0], lr_unit.shape[-2:]
    out = torch.zeros(n, 3, h * scale, w * scale, dtype=torch.uint8)
    tops, lefts = sorted({t.top for t in tiles}), sorted({t.left for t in tiles})
    size_h, size_w = tiles[0].height, tiles[0].width

    def cuts(starts, size, length):  # where each tile's pasted part begins and ends
        mids = cut_lines(starts, size, multiple)
        return [0, *mids], [*mids, length]

    (y0s, y1s), (x0s, x1s) = cuts(tops, size_h, h * scale), cuts(lefts, size_w, w * scale)
    for i, top in enumerate(tops):
        for j, left in enumerate(lefts):
            if top % scale or left % scale:
                raise ValueError(f"tile at ({top}, {left}) is not on the x{scale} grid")
            crop = lr_unit[..., top // scale:(top + size_h) // scale, left // scale:(left + size_w) // scale]
            seed = args.seed + first + 100_000 * (i * len(lefts) + j + 1)  # each tile its own noise
            sr = unit_to_uint8(pipe.upscale(crop, seed=seed, start_at=start,
                                            aug_level=level, output_type="pt", progress=False).cpu())
            out[..., y0s[i]:y1s[i], x0s[j]:x1s[j]] = sr[..., y0s[i] - top:y1s[i] - top, x0s[j] - left:x1s[j] - left]
    return out


def write_picture(shown, rows: int, scale: int, zoom: int, out: str) -> None:
    """Up to `rows` images of the first batches (same-size ones only) as low-res | bicubic | SR | truth."""
    size = shown[0][3].shape[-2:]
    quads = [q for q in shown if q[3].shape[-2:] == size]
    tiles = []
    for lr, bicubic, sr, hr in quads:
        nearest = torch.nn.functional.interpolate(lr.float(), scale_factor=scale, mode="nearest")
        tiles += [t for i in range(hr.shape[0]) for t in (nearest[i], bicubic[i].float(), sr[i].float(), hr[i].float())]
    tiles = uint8_to_unit(torch.stack(tiles[:4 * rows]), torch.float32)
    grid = make_grid(from_unit(tiles), nrow=4)
    if zoom > 1:
        grid = grid.resize((grid.width * zoom, grid.height * zoom), 0)
    grid.save(out)


if __name__ == "__main__":
    run_cli(main)
