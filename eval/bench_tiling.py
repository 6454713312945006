"""Memory of tiled upscaling at two input sizes: does it depend on the tile, not on the image?

    python eval/bench_tiling.py --pipeline runs/sr3_photos/pipeline            # 256x256 and 1024x768 inputs, x4
    python eval/bench_tiling.py --pipeline runs/sr3_photos/pipeline --sizes 128x128 512x384 --steps 2

A x4 chain is the pipeline's last upsampler applied twice (the second copy takes the first one's
output size), so the demo's x2 stage gives a 4x upscale. Each input size runs in a fresh process.
Columns:
- network peak: the most tensor memory one tile-batch call of the UNet allocated beyond what was
  alive when it started (activations; the weights, listed apart, are resident throughout). On a
  GPU, torch.cuda.max_memory_allocated; on the CPU the same count, kept by a TorchDispatchMode
  over every tensor the call creates (resident-memory readings mostly show the allocator's cache).
- process peak: the whole process's peak resident memory (host), which also holds the input, the
  output and the full-size sampling state (x_t, fused prediction, scheduler history: about ten
  float32 copies of the output) and so grows with the image; the last column is one such copy.
Writes the table to stdout and `--out` (JSON).
"""

import argparse
import json
import subprocess
import sys
import time

import torch

from cascade.bench.profiling import CallPeak, status_kib
from cascade.cli.common import run_cli
from cascade.inference.pipeline import Pipeline, Stage
from cascade.models.unet import UNet


def chain_x4(stage: Stage) -> Pipeline:
    """The stage, then a copy of it that takes the first one's output size."""
    config, k = dict(stage.unet.config), stage.kind.scale
    # Attention resolutions are absolute sizes: scale them with the sample size so the same layers have it.
    second = UNet.from_config({**config, "sample_size": stage.resolution * k,
                               "attention_resolutions": [r * k for r in config["attention_resolutions"]]})
    second.load_state_dict(stage.unet.state_dict())
    return Pipeline([stage, Stage(second.eval(), stage.noise_scheduler, stage.kind, stage.defaults)])


def run_case(args) -> dict:
    width, height = map(int, args.case.split("x"))
    stage = Pipeline.from_pretrained(args.pipeline).upsamplers[-1]
    pipe = chain_x4(stage).to(args.device)
    cuda = torch.device(args.device).type == "cuda"
    peaks = [CallPeak(s.unet, cuda) for s in pipe.stages]
    image = torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    out = pipe.upscale(image, seed=0, steps=args.steps, tile_size=args.tile_size, consistent=False,  # tiles alone
                       overlap=args.overlap, tile_batch=args.tile_batch, output_type="pt", progress=False)
    seconds = time.perf_counter() - start
    return {"input": f"{width}x{height}", "output": f"{out.shape[-1]}x{out.shape[-2]}",
            "network_peak_mib": max(p.call_peak for p in peaks) / 2 ** 20,
            "model_mib": max(p.params for p in peaks) / 2 ** 20,
            "process_peak_mib": status_kib("VmHWM") / 1024,
            "output_copy_mib": out.numel() * 4 / 2 ** 20, "calls": sum(p.calls for p in peaks),
            "overlap": [s.tile_overlap() if args.overlap is None else args.overlap for s in pipe.stages],
            "seconds": seconds, "device": str(args.device)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="runs/sr3_photos/pipeline", help="its last upsampler is used, twice")
    parser.add_argument("--sizes", nargs="+", default=["256x256", "1024x768"], help="input sizes WxH")
    parser.add_argument("--tile-size", type=int, default=128)
    parser.add_argument("--overlap", type=int, help="default: the stage's measured ERF radius")
    parser.add_argument("--tile-batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="memory does not depend on the steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench_tiling.json")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one size in this process
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return

    rows = []
    for size in args.sizes:
        command = [sys.executable, __file__, "--case", size, *(sys.argv[1:] if argv is None else argv)]
        proc = subprocess.run(command, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"{size}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'failed'}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"x4 = {args.pipeline}'s upsampler twice; tiles {args.tile_size} px, overlap {rows[0]['overlap']} px, "
          f"batch {args.tile_batch}, {args.steps} steps, {rows[0]['device']}")
    print("| input | output | network calls | network peak MiB | weights MiB | process peak MiB | one output copy MiB "
          "| seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['input']} | {r['output']} | {r['calls']} | {r['network_peak_mib']:.1f} | {r['model_mib']:.1f} | "
              f"{r['process_peak_mib']:.0f} | {r['output_copy_mib']:.0f} | {r['seconds']:.0f} |")
    ratio = rows[-1]["network_peak_mib"] / rows[0]["network_peak_mib"]
    print(f"network peak, {rows[-1]['input']} / {rows[0]['input']}: {ratio:.3f}")
    with open(args.out, "w") as f:
        json.dump({"rows": rows, "network_peak_ratio": ratio, "tile_size": args.tile_size,
                   "tile_batch": args.tile_batch, "steps": args.steps}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    run_cli(main)
