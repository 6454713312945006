"""Super-resolution quality of a pipeline's upsamplers on held-out images, with bicubic as the baseline.

    python eval/sr.py --pipeline runs/sr3_photos/pipeline --num 32 --out runs/sr3_photos/heldout.png
    python eval/sr.py --pipeline runs/sr3_photos/pipeline --aug-levels 0 0.05 0.1 --out sweep.png
    python eval/sr.py --pipeline runs/cascade_photos --data my_photos/ --out mine.png   # whole images
    python eval/sr.py --pipeline runs/sr3_photos/pipeline --consistent --fid --num 200 --out proj.png
    python eval/sr.py --pipeline runs/sr3_photos/pipeline --crop-size 192 --tile-size 64 --out tiles.png

High-res images: the built-in photos' held-out split as seeded crops of the last stage's size
(`--data photos`, the default), or a folder / `datasets` name (whole images, or `--crops`). Each is
cut to a multiple of the total scale factor; the low-res input is made with the documented
downsampler (cascade.diffusion.resize.downsample, antialiased bicubic equal to PIL's) and quantised to
uint8, as a user's image would be. The upsamplers (from `--start-at`, default the first) upscale
it; bicubic upsampling of the same input is the baseline row.

Columns, mean over images (the SR papers' protocol: uint8 images, `scale` border pixels cropped):
- PSNR and SSIM on RGB and on the BT.601 luma Y; equal to scikit-image's (see cascade/metrics/sr.py);
- consistency: SR3's MSE between the downsampled output and the low-res input, on the [0, 1] scale;
- HF energy / truth: high-frequency (Laplacian) energy relative to the ground truth's, totals over
  images (1.0 = as sharp as the truth; bicubic is far below); "HF smooth" / "HF textured": the same
  within the truth's smooth regions (luma local std < 3 grey levels, 7x7) and textured ones (>= 8),
  where painted texture (smooth >> 1) and lost detail (textured << 1) show (cascade/metrics/sr.py);
- colour shift: the largest per-channel difference of means between output and input (0..255 scale);
- FID (`--fid`): between the outputs and the ground truths (cascade.metrics; the same weights as
  eval/fid.py), one number per row; it needs a few hundred images to mean much.
Extra rows:
- `--consistent`: each SR row again with the exact-consistency projection at every step.
- `--prior PIPELINE`: generative-prior SR (PULSE's idea, with diffusion): the first stage of PIPELINE (the
  class-conditional base of the demo cascade, sampled unconditionally at the output size, or a one-shot
  scene stage) generates each output with its x0 projected onto the input at every step; no SR stage.
- `--tile-size T [--overlap O]`: each SR row again, denoised as jointly fused tiles (cascade.inference.tiling),
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

from cascade.cli.common import add_sampling_arguments, apply_sampling_arguments, run_cli, sampling_report
from cascade.errors import DataError
from cascade.inference.one_shot import prior_upscale
from cascade.inference.pipeline import Pipeline
from cascade.inference.tiling import make_tiles
from cascade.io.atomic import save_image, write_text
from cascade.io.images import signed_to_uint8, uint8_grid, uint8_to_signed, uint8_to_unit, unit_to_uint8
from cascade.metrics import sr as metrics
from cascade.metrics.inception import load_feature_network
from cascade.metrics.sources import load_real, parse_source, real_batches
from cascade.metrics.upscaling import SRScores, bicubic, low_res, upscale_batch


def parse_args(argv):
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
    parser.add_argument("--prior", help="add a generative-prior SR row: the first stage of this pipeline (a base or "
                        "one-shot scene stage) generates the output, projected onto the input at every step (no SR stage)")
    parser.add_argument("--prior-steps", type=int, help="--prior: sampling steps (default: the stage's)")
    parser.add_argument("--fid", action="store_true", help="add an FID column (outputs vs ground truths)")
    parser.add_argument("--weights", help="FID Inception weights (see eval/fid.py)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=6, help="images shown in the picture")
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    parser.add_argument("--out", required=True, help="PNG to write; the table goes next to it as .json")
    return parser, parser.parse_args(argv)


def main(argv=None):
    parser, args = parse_args(argv)
    device = Accelerator(cpu=args.cpu).device
    pipe = Pipeline.from_pretrained(args.pipeline, device=device)
    start = args.start_at if args.start_at is not None else (1 if pipe.base is not None else 0)
    ups = pipe.stages[start:]
    if not ups or not all(s.kind.takes_input for s in ups):
        parser.error(f"{args.pipeline}: no upsampler stages from stage {start}")
    pipe = apply_sampling_arguments(pipe, args)
    spec = parse_source(args.data, args.split)
    if not spec.is_real:
        parser.error(f"--data {args.data}: needs real images (photos, a folder or a dataset)")
    crops = args.crops or spec.kind == "photos"
    num = args.num or (16 if crops else None)
    batches = real_batches(load_real(spec), num, args.batch_size, (args.crop_size or ups[-1].resolution) if crops else None,
                           crops, tuple(args.crop_scale), args.seed)
    overlap = (args.overlap if args.overlap is not None else ups[-1].tile_overlap()) if args.tile_size else None
    methods = sr_methods(args, ups[0].defaults.aug_level)
    network = load_feature_network(args.weights, device) if args.fid else None
    args.prior_stage = Pipeline.from_stages([args.prior], device=device).stages[0] if args.prior else None
    rows, shown, count, size = evaluate(pipe, start, batches, num, methods, overlap, network, args)

    scale = math.prod(s.kind.scale for s in ups)
    print(f"{count} images from {args.data} ({spec.split}), {size[0]}x{size[1]} px, x{scale}, border {scale} px cropped"
          + (f"; tiles {args.tile_size} px, overlap {overlap} px" if args.tile_size else ""))
    print(table(rows))
    write_picture(shown, args.rows, scale, args.zoom, args.out)
    write_text(args.out.rsplit(".", 1)[0] + ".json", json.dumps(
        {"pipeline": args.pipeline, "data": args.data, "split": spec.split, "num": count, "scale": scale,
         "border": scale, **sampling_report(ups), "tile_size": args.tile_size, "overlap": overlap, "rows": rows},
        indent=2))
    print(f"wrote {args.out} (rows: low-res | bicubic | {next(iter(methods))} | ground truth)")


def sr_methods(args, default_level: float) -> dict[str, dict]:
    """The SR rows, each with its `Pipeline.upscale` arguments: for every aug level the whole-image
    SR and the variants asked for (consistent, tiled, both)."""
    variants = [("", {})]
    if args.consistent:  # the comparison: without, then with (whatever the stage's default)
        variants = [("", {"consistent": False}), (" consistent", {"consistent": True})]
    if args.tile_size:
        tiling = {"tile_size": args.tile_size, "overlap": args.overlap, "tile_batch": args.tile_batch}
        variants += [(f" tiled{name}", {**kw, **tiling}) for name, kw in list(variants)]
    levels = args.aug_levels or [default_level]
    return {f"SR s={lv:g}{name}": dict(aug_level=lv, **kw) for lv in levels for name, kw in variants}


def evaluate(pipe, start, batches, num, methods, overlap, network, args):
    """(rows, images for the picture, image count, last high-res size): bicubic, the SR methods and,
    when tiled, the independent-tiles baseline, scored with cascade.metrics.upscaling."""
    ups = pipe.stages[start:]
    scale = math.prod(s.kind.scale for s in ups)
    scores, shown, count = SRScores(network), [], 0
    with tqdm(total=num, desc="upscaling", unit="img") as bar:
        for hr, _ in batches:
            try:
                hr, lr = low_res(hr, scale)
            except DataError as e:
                raise DataError(f"{args.data}: {e}") from None
            h, w = hr.shape[-2:]
            outputs = {"bicubic": bicubic(lr, (h, w))}  # image i of the run has seed args.seed + i, whatever the batch
            outputs.update(upscale_batch(pipe, lr, methods, args.seed + count, start)[0])
            if args.prior_stage is not None:  # PULSE's idea with a diffusion prior: no SR stage
                lowres = uint8_to_signed(lr).to(args.prior_stage.device)
                sr = prior_upscale(args.prior_stage, lowres, scale, seed=args.seed + count, steps=args.prior_steps,
                                   progress=False)
                outputs[f"prior ({args.prior_stage.kind.name} stage)"] = signed_to_uint8(sr.cpu())
            if args.tile_size:
                multiple = ups[-1].size_multiple
                grid = make_tiles(h, w, ups[-1].tile_geometry(args.tile_size, overlap)[0], overlap, multiple)
                level = next(iter(methods.values()))["aug_level"]
                outputs["independent tiles"] = independent_tiles(pipe, uint8_to_unit(lr, torch.float32), grid,
                                                                 multiple, scale, args, start, level, count)
            scores.add_truth(hr)
            for name, out in outputs.items():
                extra = {}
                if args.tile_size:
                    extra["seam_ratio"] = metrics.seam_ratio(uint8_to_unit(out), *tile_edges(grid, multiple), multiple)
                    whole = name.replace(" tiled", "")
                    if whole != name:
                        extra["psnr_vs_whole"] = metrics.psnr(uint8_to_unit(out), uint8_to_unit(outputs[whole]))
                scores.add(name, out, lr, hr, scale, **extra)
            if len(shown) < args.rows:
                shown.append((lr, outputs["bicubic"], outputs[next(iter(methods))], hr))
            count += hr.shape[0]
            bar.update(hr.shape[0])
    return scores.rows(), shown, count, (h, w)


COLUMNS = [("psnr_rgb", "PSNR RGB", "{:.2f}"), ("psnr_y", "PSNR Y", "{:.2f}"), ("ssim_rgb", "SSIM RGB", "{:.4f}"),
           ("ssim_y", "SSIM Y", "{:.4f}"), ("consistency", "consistency", "{:.2e}"),
           ("hf_energy_vs_truth", "HF energy / truth", "{:.3f}"), ("hf_smooth_vs_truth", "HF smooth", "{:.3f}"),
           ("hf_textured_vs_truth", "HF textured", "{:.3f}"), ("colour_shift", "colour shift /255", "{:.2f}"),
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
    for lr, base, sr, hr in quads:
        nearest = torch.nn.functional.interpolate(lr.float(), scale_factor=scale, mode="nearest")
        tiles += [t for i in range(hr.shape[0]) for t in (nearest[i].to(torch.uint8), base[i], sr[i], hr[i])]
    grid = uint8_grid(torch.stack(tiles[:4 * rows]), nrow=4)
    if zoom > 1:
        grid = grid.resize((grid.width * zoom, grid.height * zoom), 0)
    save_image(grid, out)


if __name__ == "__main__":
    run_cli(main)
