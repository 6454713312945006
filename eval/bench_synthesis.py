"""Label-map synthesis at pix2pixHD's size: time and peak memory of one 2048x1024 output, tiled.

    python eval/bench_synthesis.py --pipeline runs/labels_layouts                  # 512x256 and 2048x1024
    python eval/bench_synthesis.py --pipeline runs/labels_city --sizes 2048x1024 --tile-size 512
    python eval/bench_synthesis.py --pipeline runs/labels_distilled --sizes 2048x1024 --steps 0=8 --final-timestep 0=19

The label map is a built-in layout drawn at the output size (cascade/data/layouts.py, split "test").
Each size runs in a fresh process, at the stages' own sampler, steps and guidance (their stage.json,
or `--sampler` / `--steps` / `--final-timestep` as every sampling script takes them), denoising every
stage in tiles of `--tile-size` output px. Columns:
- network peak: the most tensor memory one tile-batch call of a UNet allocated beyond what was
  alive when it started (on a GPU: torch.cuda.max_memory_allocated, which is the accelerator's
  peak; on the CPU the same count kept over every tensor of the first calls, cascade.bench.profiling).
- accelerator peak: torch.cuda.max_memory_allocated over the whole run (CUDA only).
- process peak: the host process's peak resident memory (VmHWM): weights, the label map and the
  full-size sampling state of the last stage, which grows with the output.
Writes OUT.md and OUT.json.
"""

import argparse
import json
import subprocess
import sys
import time

import torch

from cascade.bench.profiling import CallPeak, status_kib
from cascade.bench.reports import markdown_table, write_report
from cascade.cli.common import add_sampling_arguments, apply_sampling_arguments, run_cli
from cascade.data.layouts import layout
from cascade.diffusion.sampling import STUDENT_SAMPLERS
from cascade.inference.pipeline import Pipeline


def run_case(args) -> dict:
    width, height = map(int, args.case.split("x"))
    pipe = apply_sampling_arguments(Pipeline.from_pretrained(args.pipeline, device=args.device), args)
    cuda = torch.device(args.device).type == "cuda"
    peaks = [CallPeak(s.unet, cuda, limit=None if cuda else 2) for s in pipe.stages]
    _, ids, instances = layout(0, (height, width), split="test")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = pipe(label_maps=ids, instances=instances, seed=0, tile_size=args.tile_size, tile_batch=args.tile_batch,
               output_type="pt", progress=False)
    seconds = time.perf_counter() - start
    return {"output": f"{out.shape[-1]}x{out.shape[-2]}", "seconds": seconds,
            "stages": [f"{s.defaults.sampler}/{s.defaults.steps}/w{s.defaults.guidance_scale:g}"
                       + (f"/t{s.timesteps()[-1]}" if s.defaults.final_timestep is not None
                          and s.defaults.sampler in STUDENT_SAMPLERS else "")
                       for s in pipe.stages],
            "network_peak_mib": max(p.call_peak for p in peaks) / 2 ** 20,
            "accelerator_peak_mib": torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else None,
            "process_peak_mib": status_kib("VmHWM") / 1024, "calls": sum(p.calls for p in peaks)}


def table(rows: list[dict], tile: int) -> str:
    cells = [[r["output"], ", ".join(r["stages"]), f"{tile} px", f"{r['seconds']:.0f}", f"{r['network_peak_mib']:.0f}",
              f"{r['accelerator_peak_mib']:.0f}" if r["accelerator_peak_mib"] is not None else "n/a (CPU)",
              f"{r['process_peak_mib']:.0f}"] for r in rows]
    return markdown_table(["output", "stages (sampler/steps/guidance)", "tiles of", "seconds", "network peak MiB",
                           "accelerator peak MiB", "process peak MiB"], cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="runs/labels_layouts", help="a label-map pipeline (make demo-labels)")
    parser.add_argument("--sizes", nargs="+", default=["512x256", "2048x1024"], help="output WIDTHxHEIGHT")
    parser.add_argument("--tile-size", type=int, default=256)
    parser.add_argument("--tile-batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench/synthesis")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one size, in this process (the parent starts these)
    add_sampling_arguments(parser)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return
    apply_sampling_arguments(Pipeline.from_pretrained(args.pipeline), args)  # bad flags: one line, before any run
    sampling = [f"--{flag.replace('_', '-')}={value}" for flag in ("sampler", "steps", "final_timestep")
                for value in getattr(args, flag)]  # passed on to each size's process
    start, rows = time.perf_counter(), []
    for size in args.sizes:
        proc = subprocess.run([sys.executable, __file__, "--pipeline", args.pipeline, "--case", size, "--tile-size",
                               str(args.tile_size), "--tile-batch", str(args.tile_batch), "--device", args.device,
                               *sampling], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"{size}: failed\n{proc.stderr[-2000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    write_report(args.out, "Label-map synthesis", table(rows, args.tile_size), rows, torch.device(args.device),
                 time.perf_counter() - start, {"pipeline": args.pipeline, "tile_size": args.tile_size,
                                               "sampler": args.sampler, "steps": args.steps,
                                               "final_timestep": args.final_timestep})


if __name__ == "__main__":
    run_cli(main)
