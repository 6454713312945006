"""The papers' central findings at the demo's scale, and the painted-texture study (docs/studies.md).

    make study-texture          # trains the variants it needs (runs/study/), then runs this script
    python eval/bench_studies.py texture --runs runs/study --num 256 --seeds 0 1 --out docs/studies
    python eval/bench_studies.py regression --runs runs/study --fid --out docs/studies
    python eval/bench_studies.py compute --runs runs/study --fid --out docs/studies
    python eval/bench_studies.py augmentation --runs runs/study --num 128 --seeds 0 1 --out docs/studies

Every study reads trained stages from `--runs` (one folder per variant, each with pipeline/; the
Makefile's study targets train them with the commands docs/studies.md lists) and scores them on
the same held-out crops of the built-in photos (the right 20% of each photo, never trained on):

- texture (study 4): where the texture SR stages paint onto smooth regions comes from: the sampler
  (the SDE sampler's injected noise; ODE samplers at a few steps), the residual x4 scaling, blur
  augmentation and training time, each by its HF energy / truth on smooth and textured regions.
- regression (study 2, SR3 table 2): SR3 beside the same UNet trained as a one-step L2 regression.
- compute (study 3): the SR stage after 1x, 2x and 4x the demo's 700 training steps.
- augmentation (study 1, CDM table 2b): the demo cascade (32 px base -> 64 px SR) with the SR stage
  trained with no augmentation, blur only, noise only and noise + blur, each sampled at several
  noise levels, beside a non-cascaded 64 px base stage trained for the same time: FID of the
  cascade's samples against held-out crops, and CAS (a classifier trained on the samples, scored on
  real held-out crops).

Every study runs once per `--seeds` value: seed s draws other held-out crops (or base samples) and
other sampling noise, so the spread between seeds is each number's noise floor. Output: a Markdown
table per study (mean over seeds, and the largest difference between two seeds) printed and
written to OUT/STUDY.md with the per-seed numbers in OUT/STUDY.json, and a picture OUT/STUDY.png.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from tqdm import tqdm

from cascade.cli.common import run_cli
from cascade.errors import DataError
from cascade.inference.pipeline import Pipeline
from cascade.io.atomic import save_image, write_text
from cascade.io.images import uint8_grid, uint8_to_unit, unit_to_uint8
from cascade.metrics.cas import classification_accuracy
from cascade.metrics.inception import load_feature_network
from cascade.metrics.scores import FeatureStats, fid_from_stats
from cascade.metrics.sources import collect, labelled_set, load_real, parse_source, pipeline_batches, real_batches
from cascade.metrics.sr import texture_regions
from cascade.metrics.upscaling import SRScores, bicubic, low_res

RECORDED_BEFORE = {"cas_epochs": 30}  # options studies did not record before they became options: their value then
SDE = {"sampler": "dpm++sde", "steps": 20, "aug_level": 0.0, "consistent": False}
ODE = {**SDE, "sampler": "dpm++"}
PRESET = {"sampler": "ddpm", "steps": 50, "aug_level": 0.0, "consistent": True}  # configs/sr3_photos.yaml's

# study -> rows: (row name, run folder under --runs, SR stage settings); "bicubic" needs no run.
# Run folders (the Makefile's study targets train them): sr3 = configs/sr3_photos.yaml (residual x8,
# noise augmentation, no blur); sr3_x4 = the previous preset (residual x4, noise + blur); the others
# change one thing (docs/studies.md).
SR_STUDIES = {
    "texture": [
        ("bicubic", None, None),
        ("x4 + blur (previous preset), dpm++sde 20", "sr3_x4", SDE),
        ("x4 + blur, ddpm 100 (ancestral)", "sr3_x4", {**SDE, "sampler": "ddpm", "steps": 100}),
        ("x4 + blur, dpm++ 20 (ODE)", "sr3_x4", ODE),
        ("x1 + blur", "sr3_x1", SDE),
        ("x8 + blur", "sr3_x8_blur", SDE),
        ("x16 + blur", "sr3_x16_blur", SDE),
        ("x4, no blur", "sr3_x4_noblur", SDE),
        ("x8, no blur", "sr3", SDE),
        ("x8, no blur, consistent", "sr3", {**SDE, "consistent": True}),
        ("x8, no blur, consistent, ddpm 50 (preset)", "sr3", PRESET),
    ],
    "regression": [
        ("bicubic", None, None),
        ("regression (one step, L2; x4 + blur)", "regression", {"consistent": False}),
        ("SR3 (x4 + blur), dpm++sde 20", "sr3_x4", SDE),
        ("SR3 preset (x8, no blur, consistent, ddpm 50)", "sr3", PRESET),
    ],
    "compute": [
        ("bicubic", None, None),
        *[(f"preset, {k}x ({700 * k} steps)", run, PRESET) for k, run in ((1, "sr3"), (2, "sr3_1400"), (4, "sr3_2800"))],
    ],
}
AUG_VARIANTS = [("no aug", "sr3_x4_noaug"), ("blur", "sr3_x4_blur_only"), ("noise", "sr3_x4_noblur"),
                ("noise + blur", "sr3_x4")]
COLUMNS = [("psnr_y", "PSNR Y", "{:.2f}"), ("ssim_y", "SSIM Y", "{:.4f}"), ("consistency", "consistency", "{:.1e}"),
           ("hf_energy_vs_truth", "HF / truth", "{:.2f}"), ("hf_smooth_vs_truth", "HF smooth", "{:.2f}"),
           ("hf_textured_vs_truth", "HF textured", "{:.2f}"), ("colour_shift", "colour /255", "{:.2f}"),
           ("fid", "FID", "{:.1f}"), ("cas_top1", "CAS top-1 %", "{:.1f}"), ("seconds", "s / image", "{:.3f}")]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", choices=[*SR_STUDIES, "augmentation"])
    parser.add_argument("--runs", default="runs/study", help="folder with one trained run per variant")
    parser.add_argument("--num", type=int, default=256, help="held-out crops (or cascade samples) per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one repeat per seed (noise floor)")
    parser.add_argument("--levels", type=float, nargs="+", default=[0.0, 0.05, 0.1],
                        help="augmentation: the SR stages' sampling noise levels")
    parser.add_argument("--cas-per-class", type=int, default=50,
                        help="augmentation: real held-out crops per class that score the CAS classifiers")
    parser.add_argument("--cas-epochs", type=int, default=30,
                        help="augmentation: epochs of each CAS classifier (30: the protocol of eval/cas.py)")
    parser.add_argument("--rows", nargs="+", help="only the rows whose name contains one of these texts ("
                        "\"s=0\" also matches \"s=0.05\"); the others are kept from OUT/STUDY.json, the picture is "
                        "left as it is")
    parser.add_argument("--fid", action="store_true", help="SR studies: add FID against the truths (slow)")
    parser.add_argument("--weights", help="FID Inception weights (see eval/fid.py)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--cpu", action="store_true")
    parser.add_argument("--out", default="docs/studies", help="folder for STUDY.md, STUDY.json and STUDY.png")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.cas_epochs < 1:
        raise DataError(f"--cas-epochs {args.cas_epochs}: must be >= 1")
    device = Accelerator(cpu=args.cpu).device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{args.study}.json"
    check_mergeable(path, args)
    if args.study == "augmentation":
        runs = merged(path, augmentation_study(args, device), list(augmentation_rows(args.levels)), args)
    else:
        rows = [r for r in SR_STUDIES[args.study] if not args.rows or r[0] == "bicubic"
                or any(k in r[0] for k in args.rows)]
        if len(rows) == 1 and args.rows:
            raise DataError(f"--rows {' '.join(args.rows)}: no row of the {args.study} study matches")
        runs = merged(path, sr_study(rows, args, device), [r[0] for r in SR_STUDIES[args.study]], args)
    text = summary_table(runs)
    print(text)
    write_text(out / f"{args.study}.md", text + "\n")
    write_text(path, json.dumps({"study": args.study, **options(args), "runs": runs}, indent=2))
    print(f"wrote {out / args.study}.md and .json" + ("" if args.rows else " and .png"))


def options(args) -> dict:
    """The options a study's numbers depend on (a --rows rerun must use the same)."""
    if args.study == "augmentation":
        return {"num": args.num, "seeds": args.seeds, "levels": args.levels, "cas_per_class": args.cas_per_class,
                "cas_epochs": args.cas_epochs}
    return {"num": args.num, "seeds": args.seeds, "fid": args.fid}


def check_mergeable(path: Path, args) -> None:
    """Before any work: with --rows, the earlier run at `path` must have used the same options."""
    if not args.rows or not path.is_file():
        return
    old = json.loads(path.read_text())
    for key, value in options(args).items():
        if old.get(key, RECORDED_BEFORE.get(key)) != value:
            flag = "--" + key.replace("_", "-")
            was = f"no record of {flag}" if key not in old else f"{flag} {as_flag_value(old[key])}"
            raise DataError(f"{path}: made with {was}, not {flag} {as_flag_value(value)}; rerun rows with the "
                            f"same options, or the whole study without --rows")


def as_flag_value(value) -> str:
    """[0.0, 0.05] -> '0 0.05', as on the command line."""
    items = value if isinstance(value, list) else [value]
    return " ".join(f"{x:g}" if isinstance(x, float) else str(x) for x in items)


def merged(path: Path, runs: dict, order: list[str], args) -> dict:
    """With --rows, the other rows of an earlier run of the same study (same options, see
    check_mergeable) are kept, so one row can be rerun alone; rows in the study's order."""
    if not args.rows or not path.is_file():
        return runs
    old = json.loads(path.read_text())
    every = {int(seed): {**rows, **runs.get(int(seed), {})} for seed, rows in old["runs"].items()}
    return {seed: {name: rows[name] for name in order if name in rows} for seed, rows in every.items()}


def load_stage_pipeline(runs: str, run: str, device) -> Pipeline:
    folder = Path(runs) / run / "pipeline"
    if not folder.is_dir():
        raise DataError(f"{folder}: missing; train it first (docs/studies.md lists the command of every run)")
    return Pipeline.from_pretrained(folder, device=device)


def sr_study(rows, args, device) -> dict[int, dict]:
    """{seed: {row: numbers}} on `args.num` held-out crops per seed; the picture shows seed 0's
    first crops, smooth ones first (most of the painted texture is there)."""
    pipes = {run: load_stage_pipeline(args.runs, run, device) for _, run, _ in rows if run}
    network = load_feature_network(args.weights, device) if args.fid else None
    photos = load_real(parse_source("photos", "test"))
    runs, shown = {}, None
    for seed in args.seeds:
        scores, first, timing = SRScores(network), {}, {}
        crops = real_batches(photos, args.num, args.batch_size, 64, True, (0.15, 0.4), seed)
        count = 0
        for hr, _ in tqdm(crops, total=-(-args.num // args.batch_size), desc=f"seed {seed}", unit="batch"):
            hr, lr = low_res(hr, 2)
            scores.add_truth(hr)
            for name, run, settings in rows:
                t0 = time.perf_counter()
                if run is None:
                    sr = bicubic(lr, hr.shape[-2:])
                else:
                    sr = unit_to_uint8(pipes[run].upscale(uint8_to_unit(lr, torch.float32), seed=seed * 1_000_000 + count,
                                                          settings={0: settings}, output_type="pt",
                                                          progress=False).cpu())
                timing[name] = timing.get(name, 0.0) + time.perf_counter() - t0
                scores.add(name, sr, lr, hr, 2)
                first.setdefault(name, sr)
            first.setdefault("truth", hr)
            first.setdefault("low-res", lr)
            count += hr.shape[0]
        runs[seed] = scores.rows()
        for name in runs[seed]:
            runs[seed][name]["seconds"] = timing[name] / count
        shown = shown or first
    if not args.rows:  # the picture shows every row
        write_sr_picture(shown, [r[0] for r in rows], Path(args.out) / f"{args.study}.png")
    return runs


def write_sr_picture(first: dict, names: list[str], path: Path, per_kind: int = 3, zoom: int = 3) -> None:
    """Columns: low-res (nearest) | every row | truth; rows: the smoothest and the most textured crops."""
    smooth, textured = texture_regions(first["truth"])
    share = smooth.double().mean(dim=(1, 2)) - textured.double().mean(dim=(1, 2))
    order = share.argsort(descending=True)
    picks = [*order[:per_kind].tolist(), *order[-per_kind:].tolist()]
    nearest = torch.nn.functional.interpolate(first["low-res"].float(), scale_factor=2, mode="nearest").to(torch.uint8)
    columns = [nearest, *[first[n] for n in names], first["truth"]]
    tiles = torch.stack([c[i] for i in picks for c in columns])
    grid = uint8_grid(tiles, nrow=len(columns))
    save_image(grid.resize((grid.width * zoom, grid.height * zoom), 0), path)


REAL = "real training crops (reference)"
BASE64 = "64 px base (non-cascaded, same training time)"
BICUBIC = "cascade, bicubic x2 (no SR stage)"
PRESET_VARIANT = ("preset (x8, noise), ddpm 50", "sr3")


def augmentation_rows(levels: list[float]) -> dict[str, tuple[str, dict] | None]:
    """Row name -> (SR run folder, its settings) in table order; None: a row without an SR stage.
    CDM's protocol: the stage sees the base sample noised to s, and is not projected back onto it."""
    rows = {REAL: None, BASE64: None, BICUBIC: None}
    for name, run in [*AUG_VARIANTS, PRESET_VARIANT]:
        settings = SDE if run != PRESET_VARIANT[1] else {**PRESET, "consistent": False}
        for level in levels:
            rows[f"cascade, SR {name}, s={level:g}"] = (run, {**settings, "aug_level": level})
    return rows


def augmentation_study(args, device) -> dict[int, dict]:
    """CDM table 2b at the demo's scale: {seed: {row: {"fid", "cas_top1", "cas_top5"}}}."""
    every = augmentation_rows(args.levels)
    names = [n for n in every if not args.rows or any(k in n for k in args.rows)]
    if not names:
        raise DataError(f"--rows {' '.join(args.rows)}: no row of the augmentation study matches")
    cascaded = [n for n in names if n not in (REAL, BASE64)]
    base = load_stage_pipeline(args.runs, "base32", device)
    base64 = load_stage_pipeline(args.runs, "base64", device) if BASE64 in names else None
    ups = {run: load_stage_pipeline(args.runs, run, device) for run in {every[n][0] for n in cascaded if every[n]}}
    network = load_feature_network(args.weights, device)
    num_classes = base.base.unet.config.num_classes
    runs, shown = {}, None
    for seed in args.seeds:
        real = collect(real_batches(load_real(parse_source("photos", "test")), args.num, args.batch_size, 64, True,
                                    (0.15, 0.4), seed))[0]
        truth = stats_of(network, real)
        test = labelled_set(parse_source("photos", "test"), args.cas_per_class, num_classes, 64, (0.15, 0.4), seed + 1)
        low, labels = collect(pipeline_batches(base, args.num, args.batch_size, seed * 1_000_000, progress=True)) \
            if cascaded else (None, None)
        rows = {}
        for name in names:
            if name == REAL:
                rows[name] = collect(real_batches(load_real(parse_source("photos", "train")), args.num,
                                                  args.batch_size, 64, True, (0.15, 0.4), seed))
            elif name == BASE64:
                rows[name] = collect(pipeline_batches(base64, args.num, args.batch_size, seed * 1_000_000,
                                                      progress=True))
            elif name == BICUBIC:
                rows[name] = (bicubic(low, (64, 64)), labels)
            else:
                run, settings = every[name]
                outs = [unit_to_uint8(ups[run].upscale(uint8_to_unit(low[i:i + args.batch_size], torch.float32),
                                                       seed=seed * 1_000_000 + 500_000 + i, output_type="pt",
                                                       settings={0: settings}, progress=False).cpu())
                        for i in tqdm(range(0, len(low), args.batch_size), desc=name, unit="batch")]
                rows[name] = (torch.cat(outs), labels)
        runs[seed] = {}
        for name, (images, y) in rows.items():
            _, cas = classification_accuracy((images, y), test, num_classes, 64, epochs=args.cas_epochs, seed=0,
                                             device=device, desc=f"CAS {name}")
            runs[seed][name] = {"fid": fid_from_stats(stats_of(network, images), truth),
                                "cas_top1": 100 * cas["top1"], "cas_top5": 100 * cas["top5"]}
            print(name, runs[seed][name], flush=True)
        if shown is None and not args.rows:
            picks = torch.arange(0, len(low), max(1, len(low) // 8))[:8]
            level = args.levels[0]
            shown = [torch.nn.functional.interpolate(low[picks].float(), scale_factor=2, mode="nearest").to(torch.uint8),
                     *[rows[f"cascade, SR {n}, s={level:g}"][0][picks] for n, _ in [*AUG_VARIANTS, PRESET_VARIANT]],
                     rows[BASE64][0][picks]]
    if shown is not None:  # columns: 32 px base (nearest) | the SR variants at the first level | 64 px base
        tiles = torch.stack([c[i] for i in range(len(shown[0])) for c in shown])
        grid = uint8_grid(tiles, nrow=len(shown))
        save_image(grid.resize((grid.width * 2, grid.height * 2), 0), Path(args.out) / "augmentation.png")
    return runs


def stats_of(network, images: torch.Tensor, batch: int = 50) -> FeatureStats:
    stats = FeatureStats()
    for i in range(0, len(images), batch):
        stats.update(network(images[i:i + batch])[0])
    return stats


def summary_table(runs: dict[int, dict]) -> str:
    """Mean over seeds, with the largest difference between two seeds (the noise floor) after ±."""
    seeds = list(runs)
    names = list(runs[seeds[0]])
    present = [c for c in COLUMNS if any(c[0] in runs[seeds[0]][n] for n in names)]
    lines = [f"| row ({len(seeds)} seeds) | " + " | ".join(t for _, t, _ in present) + " |",
             "|---" * (len(present) + 1) + "|"]
    for name in names:
        cells = []
        for key, _, fmt in present:
            values = [runs[s][name][key] for s in seeds if key in runs[s][name]]
            if not values:
                cells.append("")
                continue
            mean = sum(values) / len(values)
            spread = max(values) - min(values)
            cells.append(fmt.format(mean) + (f" ± {fmt.format(spread)}" if len(values) > 1 and key != "seconds" else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)
