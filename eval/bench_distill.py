"""Few-step students against their teacher: quality per network evaluation, measured honestly.

    python eval/bench_distill.py --teacher runs/sr3_photos/pipeline --student runs/sr3_photos_distilled/pipeline \
        --regression runs/sr3_regression/pipeline --num 128 --seeds 0 1 --out docs/distill/sr
    python eval/bench_distill.py ... --rows "student 4" "ddim 4" --out docs/distill/sr   # rerun rows, keep the rest

Held-out crops of the built-in photos (the right 20% of each, never trained on), upscaled with the eval/sr.py
protocol (cascade.metrics.upscaling: uint8 input, PSNR/SSIM on Y with the border cropped, consistency, colour
shift, HF energy over the truth's on its smooth and textured regions), per seed; a seed draws other crops and
other sampling noise, and the spread between seeds is every column's noise floor. Rows:
- the teacher's preset (its stage.json: DDPM 50 with exact consistency for the demo stage) and DDPM 1000;
- the teacher's own samplers at 1, 2, 4 and 8 network evaluations (DDIM, DPM-Solver++, and LCM's sampler on the
  undistilled teacher: the equal-cost baselines);
- the student at 1, 2, 4 and 8 (and at 2+ ending at each `--final-timesteps` T); the regression stage
  (`--regression`) and bicubic.
Columns besides eval/sr.py's: FID of the outputs against the truths (biased at this count, shared by every row),
ProGAN's sliced Wasserstein distance of Laplacian-pyramid patches against the truths (cascade.metrics.swd; PSNR
rewards blur, SWD does not), and diversity: the per-pixel std over 4 seeds of the same inputs (`--diversity-crops`
of them), relative to the teacher preset's (not for the many-step reference). Writes OUT.md, OUT.json and OUT.png (low-res | rows | truth).
"""

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from cascade.bench.reports import markdown_table, write_report
from cascade.cli.common import run_cli
from cascade.errors import CascadeError
from cascade.inference.pipeline import Pipeline
from cascade.io.atomic import save_image
from cascade.io.images import uint8_grid, uint8_to_unit, unit_to_uint8
from cascade.metrics.inception import load_feature_network
from cascade.metrics.sources import load_real, parse_source, real_batches
from cascade.metrics.swd import swd
from cascade.metrics.upscaling import SRScores, bicubic, low_res

NFE = [1, 2, 4, 8]
DIVERSITY_SEEDS = 4
COLUMNS = [("nfe", "NFE", "{:.0f}"), ("psnr_y", "PSNR Y", "{:.2f}"), ("ssim_y", "SSIM Y", "{:.4f}"),
           ("consistency", "consistency", "{:.1e}"), ("colour_shift", "colour /255", "{:.2f}"),
           ("hf_smooth_vs_truth", "HF smooth", "{:.2f}"), ("hf_textured_vs_truth", "HF textured", "{:.2f}"),
           ("fid", "FID", "{:.1f}"), ("swd", "SWD x1e3", "{:.1f}"), ("diversity", "diversity", "{:.2f}"),
           ("seconds_per_image", "s/img", "{:.3f}")]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", required=True, help="the teacher's pipeline (one SR stage)")
    parser.add_argument("--student", action="append", required=True, metavar="[NAME=]FOLDER",
                        help="a student's pipeline (train/distill.py); repeatable, to compare students (rows 'student "
                        "NAME N')")
    parser.add_argument("--regression", help="a regression stage trained like the teacher (sr.kind=regression)")
    parser.add_argument("--num", type=int, default=128, help="held-out crops per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--nfe", type=int, nargs="+", default=NFE, help="network evaluations of the few-step rows")
    parser.add_argument("--reference-steps", type=int, default=1000, help="the DDPM reference row (0: leave it "
                        "out; a later --rows run adds it)")
    parser.add_argument("--final-timesteps", type=int, nargs="+", default=[], metavar="T",
                        help="also the students' rows ending their steps at T (rows 'student NAME N, final t=T')")
    parser.add_argument("--diversity-crops", type=int, default=16, help="inputs drawn 4 times for diversity")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rows", nargs="+", help="run only these rows, keeping the others of OUT.json")
    parser.add_argument("--weights", help="FID Inception weights (see eval/fid.py)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", required=True, help="writes OUT.md, OUT.json and OUT.png")
    return parser.parse_args(argv)


def methods(args, teacher, students: dict, regression) -> dict[str, tuple]:
    """Row name -> (pipeline or None for bicubic, settings of its one stage)."""
    rows = {f"teacher preset ({teacher.stages[0].defaults.sampler} {teacher.stages[0].defaults.steps})": (teacher, {}),
            f"teacher ddpm {args.reference_steps}": (teacher, {"sampler": "ddpm", "steps": args.reference_steps})}
    if args.reference_steps == 0 and not args.rows:  # left out now, to be merged later with --rows
        rows = {k: v for k, v in rows.items() if not k.startswith("teacher ddpm")}
    for sampler in ("ddim", "dpm++", "lcm"):  # LCM's sampler on the teacher itself: x0 and fresh noise at each step
        rows.update({f"teacher {sampler} {n}": (teacher, {"sampler": sampler, "steps": n}) for n in args.nfe})
    for name, student in students.items():
        named = f"student {name + ' ' if name else ''}"
        rows.update({f"{named}{n}": (student, {"steps": n}) for n in args.nfe})
        rows.update({f"{named}{n}, final t={t}": (student, {"steps": n, "final_timestep": t})
                     for t in args.final_timesteps for n in args.nfe if n > 1})
    if regression is not None:
        rows["regression"] = (regression, {})
    rows["bicubic"] = (None, {})
    return rows


def truth_scores(crops, scale, network) -> SRScores:
    """The truths' FID statistics of one seed's crops, computed once and shared by every row."""
    scores = SRScores(network)
    for hr, _ in crops:
        scores.add_truth(low_res(hr, scale)[0])
    return scores


def run_row(pipe, settings, crops, scale, seed, truths_seen: SRScores, diversity_crops, batch_size):
    """One row on one seed's crops: the SR protocol's numbers, FID, SWD, the per-pixel std over 4 seeds."""
    scores, outputs, truths, seconds, done = SRScores(truths_seen.network), [], [], 0.0, 0
    scores.truth, scores.images = truths_seen.truth, truths_seen.images
    for hr, _ in crops:
        hr, lr = low_res(hr, scale)
        start = time.perf_counter()
        out = bicubic(lr, hr.shape[-2:]) if pipe is None else unit_to_uint8(pipe.upscale(
            uint8_to_unit(lr, torch.float32), seed=seed * 1_000_000 + done, settings={0: settings}, output_type="pt",
            progress=False).cpu())
        seconds += time.perf_counter() - start
        scores.add("row", out, lr, hr, scale)
        outputs.append(out)
        truths.append(hr)
        done += len(hr)
    row = scores.rows()["row"]
    row.update(swd(torch.cat(outputs), torch.cat(truths), seed=seed))
    row["seconds_per_image"] = seconds / done
    reference = settings.get("steps", 0) > 50  # the many-step reference: its diversity is not worth its time
    row["spread"] = 0.0 if pipe is None else float("nan") if reference else pixel_spread(
        pipe, settings, crops, scale, seed, diversity_crops, batch_size)
    return row, torch.cat(outputs)


def pixel_spread(pipe, settings, crops, scale, seed, count, batch_size) -> float:
    """Mean per-pixel std (0..255) over DIVERSITY_SEEDS samples of each of the first `count` inputs."""
    hr = torch.cat([b for b, _ in crops])[:count]
    _, lr = low_res(hr, scale)
    repeated = lr.repeat_interleave(DIVERSITY_SEEDS, 0)
    seeds = [seed * 1_000_000 + 500_000 + i for i in range(len(repeated))]
    outs = []
    for i in range(0, len(repeated), batch_size):
        outs.append(unit_to_uint8(pipe.upscale(uint8_to_unit(repeated[i:i + batch_size], torch.float32),
                                               seed=seeds[i:i + batch_size], settings={0: settings},
                                               output_type="pt", progress=False).cpu()))
    out = torch.cat(outs).double().view(count, DIVERSITY_SEEDS, *lr.shape[1:-2], *outs[0].shape[-2:])
    return out.std(dim=1).mean().item()


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    teacher = Pipeline.from_pretrained(args.teacher, device=device)
    students = {}
    for item in args.student:
        name, _, folder = item.rpartition("=")
        students[name] = Pipeline.from_pretrained(folder, device=device)
    regression = Pipeline.from_pretrained(args.regression, device=device) if args.regression else None
    for name, pipe in (("--teacher", teacher), *(("--student", s) for s in students.values()),
                       ("--regression", regression)):
        if pipe is not None and (len(pipe.stages) != 1 or not pipe.stages[0].kind.takes_input):
            raise CascadeError(f"{name}: expected a pipeline of one upsampler stage")
    stage = teacher.stages[0]
    scale, size = stage.kind.scale, stage.resolution
    network = load_feature_network(args.weights, device)
    rows = methods(args, teacher, students, regression)
    chosen = args.rows or list(rows)
    unknown = [r for r in chosen if r not in rows]
    if unknown:
        raise CascadeError(f"--rows {unknown[0]!r}: not a row; rows are: {', '.join(rows)}")
    out = Path(args.out)
    saved = Path(str(out) + ".json")
    runs, pictures, started = {}, {}, time.perf_counter()
    source = load_real(parse_source("photos"))  # split "test": the held-out right 20% of each photo
    for seed in args.seeds:
        crops = list(real_batches(source, args.num, args.batch_size, size, True, (0.15, 0.4), seed))
        runs[str(seed)] = {}
        truths_seen = truth_scores(crops, scale, network)
        for name in tqdm(chosen, desc=f"seed {seed}", unit="row"):
            pipe, settings = rows[name]
            row, images = run_row(pipe, settings, crops, scale, seed, truths_seen, args.diversity_crops,
                                  args.batch_size)
            row["nfe"] = 0 if pipe is None else pipe.stages[0].network_evaluations(settings)
            runs[str(seed)][name] = row
            if seed == args.seeds[0]:
                pictures[name] = images[:6]
            print(f"  seed {seed} {name}: PSNR Y {row['psnr_y']:.2f}, HF smooth {row['hf_smooth_vs_truth']:.2f}, "
                  f"FID {row['fid']:.1f}, SWD {row['swd']:.1f}", flush=True)
    # --rows: merged into the rows of OUT.json as it is now (read at the end: runs of other rows may run meanwhile)
    previous = json.loads(saved.read_text())["rows"]["runs"] if args.rows and saved.is_file() else {}
    for seed in runs:
        merged = {**previous.get(seed, {}), **runs[seed]}  # rows of students not named this time are kept, last
        runs[seed] = {name: merged[name] for name in [*rows, *(n for n in merged if n not in rows)] if name in merged}
    for seed, seed_rows in previous.items():  # seeds not run this time are kept as they were
        runs.setdefault(seed, seed_rows)
    preset = next(iter(rows))
    for seed_rows in runs.values():  # diversity relative to the teacher preset's per-pixel std
        for row in seed_rows.values():
            row["diversity"] = row["spread"] / seed_rows[preset]["spread"] if seed_rows.get(preset) else float("nan")
    if pictures and not previous:  # a run that merges into an earlier one keeps its picture
        hr = torch.cat([b for b, _ in real_batches(source, args.num, args.batch_size, size, True, (0.15, 0.4),
                                                   args.seeds[0])])[:6]
        _, lr = low_res(hr, scale)
        nearest = torch.nn.functional.interpolate(lr.float(), scale_factor=scale, mode="nearest").to(torch.uint8)
        shown = [nearest, *[pictures[n] for n in pictures if n.startswith("teacher preset") or n.endswith(" 4")
                            and not n.startswith(("teacher ddim", "teacher lcm"))], hr]
        grid = uint8_grid(torch.stack([c[i] for i in range(len(hr)) for c in shown]), nrow=len(shown))
        save_image(grid.resize((grid.width * 3, grid.height * 3), 0), Path(str(out) + ".png"))
    write_report(str(out), "Few-step student vs its teacher", table(runs), {"runs": runs, "args": vars(args)}, device,
                 time.perf_counter() - started, {"num": args.num, "seeds": args.seeds})


def table(runs: dict) -> str:
    """Mean over seeds, with the spread between seeds (the noise floor) after ±."""
    seeds = list(runs)
    names = list(runs[seeds[0]])
    cells = []
    for name in names:
        line = [name]
        for key, _, fmt in COLUMNS:
            values = [runs[s][name][key] for s in seeds if key in runs[s].get(name, {})]
            if all(math.isnan(v) for v in values):  # not computed (the many-step reference's diversity)
                line.append("–")
                continue
            mean = sum(values) / len(values)
            spread = max(values) - min(values)
            line.append(fmt.format(mean) + (f" ± {fmt.format(spread)}" if len(values) > 1 and key not in
                                            ("nfe", "seconds_per_image") else ""))
        cells.append(line)
    return markdown_table([f"row ({len(seeds)} seeds)", *(title for _, title, _ in COLUMNS)], cells)


if __name__ == "__main__":
    run_cli(main)
