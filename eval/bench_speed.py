"""Time of the headline outputs: each teacher preset against its few-step student (docs/performance.md).

    python eval/bench_speed.py --sr runs/sr3_photos/pipeline --sr-student runs/sr3_photos_distilled/pipeline \
        --one-shot runs/one_shot/pipeline --one-shot-student runs/one_shot_distilled/pipeline \
        --labels runs/labels_layouts --labels-student runs/labels_layouts_distilled/pipeline --out docs/distill/speed

Rows, every one in a fresh process (its own peak memory), on one machine in one run:
- the streamed 16384 x 8640 x2 upscale (`upscale_to_file`, tiles of 128 px) of a real photograph: a band the
  output's full width and `--band` rows tall is made, and the whole output's time extrapolated by rows (the
  streamed engine visits tile rows one after the other: its time is linear in the rows, docs/sampling.md);
- a 3840 x 2160 one-shot sample (`cascade.inference.one_shot.generate`, streamed above 16 MP as the command does);
- a 2048 x 1024 label-map photo (`Pipeline.__call__` with tiles of 256, as `python -m cascade synthesize` does).
A pipeline left out skips its rows. Writes OUT.md and OUT.json.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import skimage.data
import torch
from PIL import Image

from cascade.bench.profiling import status_kib
from cascade.bench.reports import add_run_arguments, markdown_table, write_report
from cascade.cli.common import run_cli
from cascade.inference.pipeline import Pipeline

STREAMED = (16384, 8640)
ONE_SHOT = (3840, 2160)
LABELS = (2048, 1024)


def streamed_band(folder: str, band: int, tile: int) -> dict:
    """The x2 upscale of a photograph to a 16384-wide band `band` rows tall; the whole 16384 x 8640 by rows."""
    from cascade.inference.streamed import upscale_to_file

    pipe = Pipeline.from_pretrained(folder)
    pipe.stages[-1].tile_overlap()  # the ERF measurement is once per stage: not part of the timing
    width = STREAMED[0]
    photo = Image.fromarray(skimage.data.astronaut()).resize((width // 2, band // 2), Image.BICUBIC)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        upscale_to_file(pipe, photo, Path(scratch) / "band.png", tile_size=tile, consistent=False, progress=False)
        seconds = time.perf_counter() - start
    return {"seconds": seconds * STREAMED[1] / band, "measured": f"16384 x {band} band in {seconds:.0f} s, x {STREAMED[1] / band:.1f}"}


def one_shot_sample(folder: str) -> dict:
    from cascade.inference import one_shot

    pipe = Pipeline.from_pretrained(folder)
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        one_shot.generate(pipe, ONE_SHOT, seed=0, path=Path(scratch) / "sample.png", progress=False)
        return {"seconds": time.perf_counter() - start, "measured": "whole output"}


def label_photo(folder: str) -> dict:
    from cascade.data.layouts import layout

    pipe = Pipeline.from_pretrained(folder)
    _, ids, _ = layout(0, (LABELS[1], LABELS[0]), "test")
    start = time.perf_counter()
    pipe(label_maps=torch.as_tensor(ids)[None, None].long(), num_images=1, seed=0, tile_size=256, progress=False)
    return {"seconds": time.perf_counter() - start, "measured": "whole output"}


CASES = {"streamed": streamed_band, "one_shot": one_shot_sample, "labels": label_photo}


def network_evaluations(folder: str) -> str:
    pipe = Pipeline.from_pretrained(folder)
    return " + ".join(f"{s.defaults.sampler} {s.network_evaluations()}" for s in pipe.stages)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("sr", "one-shot", "labels"):
        parser.add_argument(f"--{name}", help=f"the {name} teacher pipeline")
        parser.add_argument(f"--{name}-student", help="its student (train/distill.py)")
    parser.add_argument("--band", type=int, default=256, help="rows of the measured band of the streamed output")
    parser.add_argument("--tile-size", type=int, default=128)
    add_run_arguments(parser, "bench/speed")
    parser.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: CASE FOLDER in this process
    args = parser.parse_args(argv)
    if args.case:
        case, folder = args.case
        kwargs = {"band": args.band, "tile": args.tile_size} if case == "streamed" else {}
        result = CASES[case](folder, **kwargs)
        print(json.dumps({**result, "peak_rss_mib": status_kib("VmHWM") / 1024}))
        return
    jobs = [("streamed 16384x8640 upscale", "streamed", args.sr, args.sr_student),
            ("one-shot 3840x2160 sample", "one_shot", args.one_shot, args.one_shot_student),
            ("label map -> 2048x1024 photo", "labels", args.labels, args.labels_student)]
    rows, started = [], time.perf_counter()
    for title, case, teacher, student in jobs:
        if not (teacher and student):
            continue
        times = {}
        for who, folder in (("teacher", teacher), ("student", student)):
            command = [sys.executable, __file__, "--case", case, folder, "--band", str(args.band), "--tile-size",
                       str(args.tile_size)]
            proc = subprocess.run(command, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{title} ({who}) failed:\n{proc.stderr[-3000:]}")
            times[who] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "sampling": network_evaluations(folder)}
            print(f"  {title}, {who}: {times[who]['seconds']:.0f} s ({times[who]['measured']})", flush=True)
        rows.append({"output": title, **{f"{w}_{k}": v for w, r in times.items() for k, v in r.items()},
                     "speedup": times["teacher"]["seconds"] / times["student"]["seconds"]})
    cells = [[r["output"], r["teacher_sampling"], f"{r['teacher_seconds']:.0f}", r["student_sampling"],
              f"{r['student_seconds']:.0f}", f"{r['speedup']:.1f}x", f"{r['teacher_peak_rss_mib']:.0f} / "
              f"{r['student_peak_rss_mib']:.0f}", r["teacher_measured"]] for r in rows]
    table = markdown_table(["output", "teacher (NFE per stage)", "teacher s", "student (NFE per stage)", "student s",
                            "less time", "peak RSS MiB (teacher / student)", "how"], cells)
    write_report(args.out, "Teacher presets vs few-step students: time", table, rows, torch.device(args.device),
                 time.perf_counter() - started, {"band": args.band, "tile_size": args.tile_size})


if __name__ == "__main__":
    run_cli(main)
