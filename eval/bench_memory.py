"""Sampling memory: the peak tensor memory of sampling each demo stage at batch 1 and 16 (cascade.bench.profiling).

    python eval/bench_memory.py --sr runs/sr3_photos/pipeline --base runs/base_photos/pipeline   # after `make demo`

Each stage samples once first (lazily built kernels and caches are not sampling memory), then the
peak beyond what was alive before the call is measured (on the CPU, every tensor an op returns is
counted; on a GPU, torch.cuda.max_memory_allocated). Writes OUT.md and OUT.json.
"""

import argparse
import functools
import time

import torch

from cascade.bench.profiling import peak_memory
from cascade.bench.reports import add_model_arguments, add_run_arguments, markdown_table, trained_stage, write_report
from cascade.cli.common import run_cli
from cascade.inference.pipeline import Pipeline


def memory(args, device) -> list[dict]:
    rows = []
    for kind in ("base", "sr"):
        stage = Pipeline.from_pretrained(trained_stage(kind, getattr(args, kind), args.runs), device=device).stages[-1]
        for batch in (1, 16):
            run = functools.partial(_sample_once, stage, batch, device)
            run()  # warm-up: lazily built kernels and caches are not sampling memory
            rows.append({"stage": kind, "resolution": stage.resolution, "batch": batch,
                         "peak_mib": peak_memory(run, device) / 2 ** 20,
                         "weights_mib": sum(p.numel() * p.element_size() for p in stage.unet.parameters()) / 2 ** 20})
    return rows


def _sample_once(stage, batch: int, device) -> None:
    if stage.kind.takes_input:
        g = torch.Generator().manual_seed(0)
        lowres = torch.rand(batch, 3, stage.input_resolution, stage.input_resolution, generator=g) * 2 - 1
        stage.sample(lowres.to(device), settings=dict(steps=2), seed=0, progress=False)
    else:
        stage.sample(class_labels=[0] * batch, settings=dict(steps=2), seed=0, progress=False)


def table(rows: list[dict]) -> str:
    return markdown_table(["stage", "px", "batch", "sampling peak MiB (beyond weights)", "weights MiB"],
                          [[r["stage"], r["resolution"], r["batch"], f"{r['peak_mib']:.1f}", f"{r['weights_mib']:.1f}"]
                           for r in rows])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser, "base", "sr")
    add_run_arguments(parser, "bench/memory")
    args = parser.parse_args(argv)
    device, start = torch.device(args.device), time.perf_counter()
    rows = memory(args, device)
    write_report(args.out, "Sampling memory", table(rows), rows, device, time.perf_counter() - start)


if __name__ == "__main__":
    run_cli(main)
