"""Streamed upscaling (cascade.giant): time per output megapixel per step and memory, 1K to 16K outputs.

    python eval/bench_streaming.py                                   # 1024x1024, 4096x2160, 16384x8640; 1 step
    python eval/bench_streaming.py --outputs 16384x16384 --out bench/streaming_16k2
    python eval/bench_streaming.py --outputs 1024x1024 4096x2160 --steps 2 --sampler ddim

The stage is the SR3 upsampler of `--sr` (default: runs/sr3_photos/pipeline after `make demo`,
else the demo preset trained into runs/bench once), x2, with tiles of `--tile-size` output pixels
and its measured overlap. The input is a real photograph (scikit-image's astronaut, 512 x 512)
resized (bicubic) to output / 2. Each output size runs in a fresh process, so its peak resident
memory is its own. Columns:
- seconds for the whole upscale (noise, every step, writing the PNG; not loading the model or
  measuring its ERF, which happen once), and per output megapixel
  per step (the time should grow linearly with the pixels: this column should stay flat);
- peak RSS: the process's peak resident memory (VmHWM), everything included (torch, the model);
- network peak: the most tensor memory one tile-batch call allocated beyond what was alive when
  it started (the first calls; on a GPU, torch.cuda.max_memory_allocated);
- state on disk: what the upscale checks for before it starts (cascade.giant.state_bytes).
Writes OUT.md and OUT.json.
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

from cascade.bench.profiling import CallPeak, status_kib
from cascade.bench.reports import add_run_arguments, markdown_table, trained_stage, write_report
from cascade.cli.common import run_cli
from cascade.inference.pipeline import Pipeline
from cascade.inference.streamed.upscale import upscale_to_file

DEMO = "runs/sr3_photos/pipeline"


def run_case(args) -> dict:
    width, height = map(int, args.case.split("x"))
    pipe = Pipeline.from_pretrained(args.sr, device=args.device)
    stage = pipe.stages[-1]
    stage.tile_overlap()  # the ERF measurement (once per stage, cached) is not part of the timing
    peak = CallPeak(stage.unet, torch.device(args.device).type == "cuda", limit=3)
    scale = stage.kind.scale
    photo = Image.fromarray(skimage.data.astronaut()).resize((width // scale, height // scale), Image.BICUBIC)
    settings = {len(pipe.stages) - 1: dict(steps=args.steps, **({"sampler": args.sampler} if args.sampler else {}))}
    with tempfile.TemporaryDirectory() as scratch:
        folder = args.save_dir or scratch
        Path(folder).mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        report = upscale_to_file(pipe, photo, Path(folder) / f"{args.case}.png", start_at=len(pipe.stages) - 1,
                                 settings=settings, tile_size=args.tile_size, tile_batch=args.tile_batch,
                                 progress=False)
        seconds = time.perf_counter() - start
        file_mb = (Path(folder) / f"{args.case}.png").stat().st_size / 1e6
    mp = width * height / 1e6
    return {"output": args.case, "megapixels": mp, "tiles": report["tiles"][-1], "steps": report["steps"][-1],
            "overlap": report["overlap"][-1], "seconds": seconds, "s_per_mp_step": seconds / mp / report["steps"][-1],
            "peak_rss_mib": status_kib("VmHWM") / 1024, "network_peak_mib": peak.call_peak / 2 ** 20,
            "weights_mib": peak.params / 2 ** 20, "state_gb": report["state_bytes"] / 1e9, "png_mb": file_mb,
            "sampler": stage.settings(settings[len(pipe.stages) - 1]).sampler}


def table(rows: list[dict]) -> str:
    cells = [[r["output"], f"{r['megapixels']:.1f}", r["tiles"], r["steps"], f"{r['seconds']:.0f}",
              f"{r['s_per_mp_step']:.2f}", f"{r['peak_rss_mib']:.0f}", f"{r['network_peak_mib']:.1f}",
              f"{r['state_gb']:.2f}", f"{r['png_mb']:.0f}"] for r in rows]
    return markdown_table(["output", "MP", "tiles", "steps", "seconds", "s / MP / step", "peak RSS MiB",
                           "network peak MiB", "state on disk GB", "PNG MB"], cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sr", help=f"SR stage or pipeline folder (default: {DEMO}, else the demo preset trained "
                        f"into --runs)")
    parser.add_argument("--runs", default="runs/bench")
    parser.add_argument("--outputs", nargs="+", default=["1024x1024", "4096x2160", "16384x8640"], help="WxH")
    parser.add_argument("--steps", type=int, default=1, help="sampling steps (time per step is the number)")
    parser.add_argument("--sampler", help="default: the stage's")
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--tile-batch", type=int, default=8)
    parser.add_argument("--save-dir", help="keep the outputs here (WxH.png) to look at; default: deleted")
    add_run_arguments(parser, "bench/streaming")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one output size in this process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return
    args.sr = args.sr or (DEMO if Path(DEMO, "cascade.json").is_file() else trained_stage("sr", None, args.runs))
    rows, start = [], time.perf_counter()
    for size in args.outputs:
        command = [sys.executable, __file__, "--case", size, "--sr", args.sr, "--steps", str(args.steps),
                   "--tile-size", str(args.tile_size), "--tile-batch", str(args.tile_batch), "--device", args.device,
                   *(["--sampler", args.sampler] if args.sampler else []),
                   *(["--save-dir", args.save_dir] if args.save_dir else [])]
        print(f"{size} ...", flush=True)
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{size}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(table(rows[-1:]), flush=True)
    r = rows[0]
    note = (f"{args.sr}, x2, {r['sampler']}, tiles {args.tile_size} px (overlap {r['overlap']} px, "
            f"{args.tile_batch} per call)")
    write_report(args.out, "Streamed upscaling", note + "\n\n" + table(rows), rows, torch.device(args.device),
                 time.perf_counter() - start, {"steps": args.steps, "tile_size": args.tile_size})


if __name__ == "__main__":
    run_cli(main)
