"""Upscale held-out crops with a pipeline's upsamplers; compare with bicubic and the ground truth.

    python eval/sr_heldout.py --pipeline runs/sr3_photos/pipeline --out runs/sr3_photos/heldout.png
    python eval/sr_heldout.py --pipeline runs/sr3_photos/pipeline --aug-levels 0 0.05 0.1 0.2 --out sweep.png

The high-res crops come from the built-in photos' held-out split (or `--data-path`, a folder of
images); the low-res input is made with cascade.resize.downsample. For every noise-augmentation
level (CDM's amortised augmentation: one model, a sweep of levels) prints a table with, for the
SR output and for bicubic upsampling: PSNR (dB), SR3's consistency (MSE of the downsampled output
against the input, [0, 1] scale), high-frequency energy relative to the ground truth (1.0 = as
sharp as the truth) and the largest per-channel colour shift (in 1/255). The picture has a row per
crop: low-res (nearest) | bicubic | SR | ground truth, at the first level given.
"""

import argparse
import json

import torch

from cascade.cli import run_cli
from cascade.config import DataConfig
from cascade.data import fixed_crops
from cascade.images import from_unit, make_grid, to_unit
from cascade.metrics import sr as metrics
from cascade.pipeline import Pipeline
from cascade.resize import downsample, upsample


def evaluate(sr: torch.Tensor, lr: torch.Tensor, hr: torch.Tensor) -> dict:
    """Metrics of an upscaled batch; all tensors in [0, 1]."""
    return {
        "psnr_db": metrics.psnr(sr, hr).mean().item(),
        "consistency_mse": metrics.consistency(sr, lr).mean().item(),
        # ratio of totals: per-image ratios explode on nearly flat crops (e.g. the dark Hubble field)
        "hf_energy_vs_truth": (metrics.high_frequency_energy(sr).sum() / metrics.high_frequency_energy(hr).sum()).item(),
        "colour_shift_255": metrics.colour_shift(sr, lr).abs().amax(dim=1).mean().item() * 255,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="pipeline folder; its upsamplers are used")
    parser.add_argument("--num", type=int, default=16, help="held-out crops")
    parser.add_argument("--crop-scale", type=float, nargs=2, default=[0.15, 0.4], help="crop side / shorter side")
    parser.add_argument("--data-path", help="a folder of images to crop instead of the built-in photos' test split")
    parser.add_argument("--aug-levels", type=float, nargs="+", help="noise-augmentation levels (default: the stage's)")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rows", type=int, default=6, help="crops shown in the picture")
    parser.add_argument("--zoom", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="PNG to write; the table goes next to it as .json")
    args = parser.parse_args(argv)

    pipe = Pipeline.from_pretrained(args.pipeline, device=args.device)
    ups = pipe.upsamplers
    if not ups:
        parser.error(f"{args.pipeline} has no upsampler stage")
    scale = 1
    for stage in ups:
        scale *= stage.settings.scale
    data_cfg = DataConfig(source="imagefolder" if args.data_path else "photos", path=args.data_path,
                          crop_scale=list(args.crop_scale))
    hr = to_unit(fixed_crops(data_cfg, ups[-1].resolution, args.num, seed=args.seed))
    lr = downsample(hr, scale).clamp(0, 1)
    bicubic = upsample(lr, hr.shape[-2:]).clamp(0, 1)
    levels = args.aug_levels or [ups[0].settings.aug_level]

    rows = {"bicubic": evaluate(bicubic, lr, hr)}
    first = None
    for level in levels:
        sr = pipe.upscale(lr, generator=torch.Generator().manual_seed(args.seed), steps=args.steps, aug_level=level,
                          output_type="pt").clamp(0, 1)
        rows[f"SR s={level:g}"] = evaluate(sr, lr, hr)
        first = sr if first is None else first

    print(f"{args.num} held-out crops, {lr.shape[-1]} px -> {hr.shape[-1]} px (x{scale})")
    print(f"| {'method':<12} | PSNR dB | consistency MSE | HF energy / truth | colour shift /255 |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name:<12} | {r['psnr_db']:7.2f} | {r['consistency_mse']:15.2e} | {r['hf_energy_vs_truth']:17.3f} "
              f"| {r['colour_shift_255']:17.2f} |")

    n = min(args.rows, args.num)
    nearest = torch.nn.functional.interpolate(lr[:n], scale_factor=scale, mode="nearest")
    picture = torch.stack([nearest, bicubic[:n], first[:n], hr[:n]], dim=1).flatten(0, 1)
    grid = make_grid(from_unit(picture), nrow=4)
    if args.zoom > 1:
        grid = grid.resize((grid.width * args.zoom, grid.height * args.zoom), 0)
    grid.save(args.out)
    with open(args.out.rsplit(".", 1)[0] + ".json", "w") as f:
        json.dump({"pipeline": args.pipeline, "num": args.num, "scale": scale, "rows": rows}, f, indent=2)
    print(f"wrote {args.out} (rows: low-res | bicubic | SR s={levels[0]:g} | ground truth)")


if __name__ == "__main__":
    run_cli(main)
