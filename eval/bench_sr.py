"""SR3 stage: sampling steps vs quality.

    python eval/bench_sr.py --sr runs/sr3_photos/pipeline --num 64 --out bench/sr   # after `make demo`
    python eval/bench_sr.py                  # trains configs/sr3_photos.yaml into runs/bench once

The stage upscales `--num` held-out 64 px crops of the built-in photos with the eval/sr.py protocol
(cascade.metrics.upscaling: uint8 low-res input, PSNR/SSIM on Y with the border cropped,
consistency, FID of the outputs against the truths), for DDPM ancestral sampling at 1000 steps (the
reference, run with two seeds: their difference is the noise floor of every column) and each
sampler at 5, 10, 20 and 50 steps. NFE = network evaluations per image; the Δ columns are against
the reference's first seed. Writes OUT.md and OUT.json.
"""

import argparse
import time

import torch
from tqdm.auto import tqdm

from cascade.bench.reports import (add_model_arguments, add_run_arguments, markdown_table, network_evaluations,
                                   trained_stage, write_report)
from cascade.cli.common import run_cli
from cascade.inference.pipeline import Pipeline
from cascade.metrics.inception import load_feature_network
from cascade.metrics.sources import load_real, parse_source, real_batches
from cascade.metrics.upscaling import SRScores, low_res, upscale_batch

SAMPLERS = ["ddim", "dpm++", "dpm++sde", "unipc", "euler", "heun"]
STEPS = [5, 10, 20, 50]
REFERENCE = "ddpm"  # ancestral sampling at --reference-steps (1000: the training schedule's every step)


def sr_quality(args, device) -> list[dict]:
    pipe = Pipeline.from_pretrained(trained_stage("sr", args.sr, args.runs), device=device)
    index = len(pipe.stages) - 1
    stage, network = pipe.stages[index], load_feature_network(args.weights, device)
    crops = list(real_batches(load_real(parse_source("photos")), args.num, args.batch_size, stage.resolution, True,
                              (0.15, 0.4), args.seed))

    def run(sampler: str, steps: int, seed: int) -> dict:
        scores, seconds, done = SRScores(network), 0.0, 0
        for hr, _ in tqdm(crops, desc=f"SR {sampler} {steps}", unit="batch", leave=False):
            hr, lr = low_res(hr, stage.kind.scale)
            method = {"settings": {index: dict(sampler=sampler, steps=steps, consistent=False)}}  # samplers alone
            outputs, times = upscale_batch(pipe, lr, {"sr": method}, seed + done, start_at=index)
            scores.add_truth(hr)
            scores.add("sr", outputs["sr"], lr, hr, stage.kind.scale)
            seconds, done = seconds + times["sr"], done + len(hr)
        return {"sampler": sampler, "steps": steps, "seed": seed, "nfe": network_evaluations(stage, sampler, steps),
                "seconds_per_image": seconds / done, **scores.rows()["sr"]}

    rows = [run(REFERENCE, args.reference_steps, args.seed), run(REFERENCE, args.reference_steps, args.seed + 10_000)]
    print(f"  reference done: PSNR Y {rows[0]['psnr_y']:.2f}, FID {rows[0]['fid']:.2f}", flush=True)
    for sampler in args.samplers:
        for steps in args.steps:
            rows.append(run(sampler, steps, args.seed))
            r = rows[-1]
            print(f"  {sampler} {steps}: PSNR Y {r['psnr_y']:.2f} SSIM Y {r['ssim_y']:.4f} FID {r['fid']:.2f}", flush=True)
    return rows


def table(rows: list[dict]) -> str:
    ref = rows[0]
    cells = [[r["sampler"] + (" (2nd seed)" if r is rows[1] else ""), r["steps"], r["nfe"], f"{r['psnr_y']:.2f}",
              f"{r['psnr_y'] - ref['psnr_y']:+.2f}", f"{r['ssim_y']:.4f}", f"{r['ssim_y'] - ref['ssim_y']:+.4f}",
              f"{r['consistency']:.2e}", f"{r['fid']:.2f}", f"{100 * (r['fid'] / ref['fid'] - 1):+.1f}%",
              f"{r['seconds_per_image']:.2f}"] for r in rows]
    return markdown_table(["sampler", "steps", "NFE", "PSNR Y", "Δ dB", "SSIM Y", "Δ SSIM", "consistency", "FID",
                           "Δ FID", "s/img"], cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, "sr")
    parser.add_argument("--num", type=int, default=256, help="held-out crops")
    parser.add_argument("--samplers", nargs="+", default=SAMPLERS)
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS)
    add_run_arguments(parser, "bench/sr", quality=True)
    args = parser.parse_args(argv)
    device, start = torch.device(args.device), time.perf_counter()
    rows = sr_quality(args, device)
    write_report(args.out, "SR3 stage: steps vs quality", table(rows), rows, device, time.perf_counter() - start,
                 {"num": args.num, "seed": args.seed})


if __name__ == "__main__":
    run_cli(main)
