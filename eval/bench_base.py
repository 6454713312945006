"""Base stage: sampling steps vs FID and CAS.

    python eval/bench_base.py --base runs/base_photos/pipeline --base-num 200 --out bench/base   # after `make demo`
    python eval/bench_base.py                # trains configs/base_photos.yaml into runs/bench once

FID against `--base-num` real crops of the training photos (docs/evaluation.md's eval/fid.py row) and
CAS (eval/cas.py's protocol, cascade.metrics.cas: the classifier trained on the samples, top-1 on 500
real held-out crops) vs steps, from `--base-num` class-balanced samples per row (sample i has seed
`--seed` + i): guided DDPM at 1000 steps (the reference), then each of `--base-samplers` at `--steps`;
the last row is repeated with other seeds as the noise floor. Writes OUT.md and OUT.json.
"""

import argparse
import time

import torch

from cascade.bench.reports import (add_model_arguments, add_run_arguments, markdown_table, network_evaluations,
                                   trained_stage, write_report)
from cascade.cli.common import run_cli
from cascade.inference.pipeline import Pipeline
from cascade.metrics.cas import classification_accuracy
from cascade.metrics.inception import load_feature_network
from cascade.metrics.scores import FeatureStats, fid_from_stats
from cascade.metrics.sources import collect, labelled_set, load_real, parse_source, pipeline_batches, real_batches

STEPS = [5, 10, 20, 50]
REFERENCE = "ddpm"


def base_quality(args, device) -> list[dict]:
    pipe = Pipeline.from_pretrained(trained_stage("base", args.base, args.runs), device=device)
    stage, network = pipe.base, load_feature_network(args.weights, device)
    k, size, per_class = stage.unet.config.num_classes, stage.resolution, max(1, args.base_num // 10)
    photos = load_real(parse_source("photos", "train"))
    real = FeatureStats()  # the reference of eval/fid.py's row in docs/evaluation.md: crops of the training photos
    for images, _ in real_batches(photos, args.base_num, 100, size, True, (0.15, 0.4), args.seed):
        real.update(network(images)[0])
    test = labelled_set(parse_source("photos", "test"), 50, k, size, (0.15, 0.4), args.seed + 1)

    def run(sampler: str, steps: int, seed: int) -> dict:
        start = time.perf_counter()
        batches = pipeline_batches(pipe.with_settings({0: dict(sampler=sampler)}), per_class * k, args.batch_size,
                                   seed, steps=steps, progress=True)
        gen_x, gen_y = collect(batches)
        seconds = (time.perf_counter() - start) / len(gen_x)
        stats = FeatureStats()
        for i in range(0, len(gen_x), 100):
            stats.update(network(gen_x[i:i + 100])[0])
        _, cas = classification_accuracy((gen_x, gen_y), test, k, size, seed=args.seed, device=device,
                                         desc="CAS classifier")
        row = {"sampler": sampler, "steps": steps, "seed": seed, "nfe": network_evaluations(stage, sampler, steps),
               "images": len(gen_x), "fid": fid_from_stats(stats, real), "cas_top1": cas["top1"],
               "seconds_per_image": seconds}
        print(f"  base {sampler} {steps} (seed {seed}): FID {row['fid']:.2f} CAS {100 * row['cas_top1']:.1f}%",
              flush=True)
        return row

    rows = [run(REFERENCE, args.reference_steps, args.seed)]
    for sampler in args.base_samplers:
        rows += [run(sampler, steps, args.seed) for steps in args.steps]
    # The noise floor: the last row again with other seeds (a second 1000-step reference costs as
    # much as the whole sweep; any seed-to-seed difference at this N is noise).
    rows.append({**run(rows[-1]["sampler"], rows[-1]["steps"], args.seed + 10_000), "noise_floor": True})
    return rows


def table(rows: list[dict]) -> str:
    ref = rows[0]
    cells = [[r["sampler"] + (" (2nd seed)" if r.get("noise_floor") else ""), r["steps"], r["nfe"], f"{r['fid']:.2f}",
              f"{100 * (r['fid'] / ref['fid'] - 1):+.1f}%", f"{100 * r['cas_top1']:.1f}%",
              f"{100 * (r['cas_top1'] - ref['cas_top1']):+.1f}", f"{r['seconds_per_image']:.3f}"] for r in rows]
    return (f"{ref['images']} samples per row (guided: 2 network evaluations per step)\n\n"
            + markdown_table(["sampler", "steps", "NFE", "FID", "Δ FID", "CAS top-1", "Δ CAS", "s/img"], cells))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, "base")
    parser.add_argument("--base-num", type=int, default=200, help="samples per FID/CAS row")
    parser.add_argument("--base-samplers", nargs="+", default=["dpm++", "dpm++sde"], help="samplers of the steps sweep")
    parser.add_argument("--steps", type=int, nargs="+", default=STEPS)
    add_run_arguments(parser, "bench/base", quality=True)
    args = parser.parse_args(argv)
    device, start = torch.device(args.device), time.perf_counter()
    rows = base_quality(args, device)
    write_report(args.out, "Base stage: steps vs FID and CAS", table(rows), rows, device, time.perf_counter() - start,
                 {"base_num": args.base_num, "seed": args.seed})


if __name__ == "__main__":
    run_cli(main)
