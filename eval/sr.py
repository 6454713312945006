"""Super-resolution quality of a pipeline's upsamplers on held-out images, with bicubic as the baseline.

    python eval/sr.py --pipeline runs/sr3_photos/pipeline --num 32 --out runs/sr3_photos/heldout.png
    python eval/sr.py --pipeline runs/sr3_photos/pipeline --aug-levels 0 0.05 0.1 --out sweep.png
    python eval/sr.py --pipeline runs/cascade_photos --data my_photos/ --out mine.png   # whole images

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
- colour shift: the largest per-channel difference of means between output and input (0..255 scale).
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

from cascade.cli import run_cli
from cascade.errors import DataError
from cascade.images import from_unit, make_grid, unit_to_uint8
from cascade.metrics import sr as metrics
from cascade.metrics.sources import describe_source, load_real, real_batches
from cascade.pipeline import Pipeline
from cascade.resize import downsample, upsample


def evaluate(out: torch.Tensor, lr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
    """Per-image metrics of uint8 output / input / truth [N x 3 x H x W]."""
    row = metrics.quality(out, hr, border=scale)
    row["consistency"] = metrics.consistency(out.double() / 255, lr.double() / 255)
    row["hf_energy"] = metrics.high_frequency_energy(out.double() / 255)
    row["hf_energy_truth"] = metrics.high_frequency_energy(hr.double() / 255)
    row["colour_shift"] = metrics.colour_shift(out.double(), lr.double()).abs().amax(dim=1)  # on the 0..255 scale
    return row


def summarise(per_image: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    cat = {k: torch.cat(v) for k, v in per_image.items()}
    summary = {k: cat[k].mean().item() for k in ("psnr_rgb", "psnr_y", "ssim_rgb", "ssim_y", "consistency",
                                                  "colour_shift")}
    summary["hf_energy_vs_truth"] = (cat["hf_energy"].sum() / cat["hf_energy_truth"].sum()).item()
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="pipeline or stage folder; its upsamplers are used")
    parser.add_argument("--start-at", type=int, help="first upsampler stage to use (default: the first)")
    parser.add_argument("--data", default="photos", help="`photos` (held-out crops), an image folder or a dataset name")
    parser.add_argument("--split", help="dataset split (default: test; a plain image folder: all)")
    parser.add_argument("--num", type=int, help="images (photos: crops, default 16; others: default all)")
    parser.add_argument("--crops", action="store_true", help="folders/datasets: --num seeded crops of the last stage's size")
    parser.add_argument("--crop-scale", type=float, nargs=2, default=[0.15, 0.4], help="crop side / shorter side")
    parser.add_argument("--aug-levels", type=float, nargs="+", help="noise-augmentation levels (default: the stage's)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: each stage's setting)")
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
    if not ups or not all(s.is_upsampler for s in ups):
        parser.error(f"{args.pipeline}: no upsampler stages from stage {start}")
    scale = math.prod(s.settings.scale for s in ups)
    levels = args.aug_levels or [ups[0].settings.aug_level]

    spec = describe_source(args.data, args.split)
    if not spec.is_real:
        parser.error(f"--data {args.data}: needs real images (photos, a folder or a dataset)")
    crops = args.crops or spec.kind == "photos"
    num = args.num or (16 if crops else None)
    batches = real_batches(load_real(spec), num, args.batch_size, ups[-1].resolution if crops else None, crops,
                           tuple(args.crop_scale), args.seed)

    per_image = {"bicubic": {}, **{f"SR s={lv:g}": {} for lv in levels}}
    shown = []
    count = 0
    with tqdm(total=num, desc="upscaling", unit="img") as bar:
        for k, (hr, _) in enumerate(batches):
            h, w = (hr.shape[-2] // scale) * scale, (hr.shape[-1] // scale) * scale  # modcrop
            if h == 0 or w == 0:
                raise DataError(f"{args.data}: an image of {tuple(hr.shape[-2:])} px is smaller than the scale x{scale}")
            hr = hr[..., :h, :w]
            lr = unit_to_uint8(downsample(hr.double() / 255, scale))
            lr_unit = lr.float() / 255
            outputs = {"bicubic": unit_to_uint8(upsample(lr_unit.double(), (h, w)))}
            for level in levels:
                generator = torch.Generator().manual_seed(args.seed + k)
                sr = pipe.upscale(lr_unit, generator=generator, steps=args.steps, aug_level=level, start_at=start,
                                  output_type="pt", progress=False)
                outputs[f"SR s={level:g}"] = unit_to_uint8(sr.cpu())
            for name, out in outputs.items():
                for key, value in evaluate(out, lr, hr, scale).items():
                    per_image[name].setdefault(key, []).append(value)
            if len(shown) < args.rows:
                shown.append((lr, outputs["bicubic"], outputs[f"SR s={levels[0]:g}"], hr))
            count += hr.shape[0]
            bar.update(hr.shape[0])
    rows = {name: summarise(values) for name, values in per_image.items()}

    print(f"{count} images from {args.data} ({spec.split}), x{scale}, border {scale} px cropped")
    print("| method | PSNR RGB | PSNR Y | SSIM RGB | SSIM Y | consistency | HF energy / truth | colour shift /255 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['psnr_rgb']:.2f} | {r['psnr_y']:.2f} | {r['ssim_rgb']:.4f} | {r['ssim_y']:.4f} "
              f"| {r['consistency']:.2e} | {r['hf_energy_vs_truth']:.3f} | {r['colour_shift']:.2f} |")

    write_picture(shown, args.rows, scale, args.zoom, args.out)
    with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
        json.dump({"pipeline": args.pipeline, "data": args.data, "split": spec.split, "num": count, "scale": scale,
                   "border": scale, "rows": rows}, f, indent=2)
    print(f"wrote {args.out} (rows: low-res | bicubic | SR s={levels[0]:g} | ground truth)")


def write_picture(shown, rows: int, scale: int, zoom: int, out: str) -> None:
    """Up to `rows` images of the first batches (same-size ones only) as low-res | bicubic | SR | truth."""
    size = shown[0][3].shape[-2:]
    quads = [q for q in shown if q[3].shape[-2:] == size]
    tiles = []
    for lr, bicubic, sr, hr in quads:
        nearest = torch.nn.functional.interpolate(lr.float(), scale_factor=scale, mode="nearest")
        tiles += [t for i in range(hr.shape[0]) for t in (nearest[i], bicubic[i].float(), sr[i].float(), hr[i].float())]
    tiles = torch.stack(tiles[:4 * rows]) / 255
    grid = make_grid(from_unit(tiles), nrow=4)
    if zoom > 1:
        grid = grid.resize((grid.width * zoom, grid.height * zoom), 0)
    grid.save(out)


if __name__ == "__main__":
    run_cli(main)
