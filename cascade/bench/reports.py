"""What the benchmark scripts (eval/bench_*.py) share: the models they measure, the device line and
their report files. The measuring tools themselves are in cascade.bench.profiling.

The quality and memory benchmarks measure the demo presets (configs/sr3_photos.yaml,
configs/base_photos.yaml) trained on the built-in photos, ~6 minutes each on 2 CPU cores: trained
into `--runs` (default runs/bench) by train/*.py the first time and reused afterwards; `--sr` /
`--base` take other stage folders.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from ..diffusion.sampling import make_sampler
from ..io.atomic import write_text

ROOT = Path(__file__).resolve().parents[2]  # the repository (cascade/bench/reports.py)
PRESETS = {"sr": ("train/sr3.py", "configs/sr3_photos.yaml"), "base": ("train/base.py", "configs/base_photos.yaml")}


def add_model_arguments(parser: argparse.ArgumentParser, *kinds: str) -> None:
    parser.add_argument("--runs", default="runs/bench", help="where the benchmark's models are trained and kept")
    for kind in kinds:
        script, config = PRESETS[kind]
        parser.add_argument(f"--{kind}", help=f"{kind} stage or pipeline folder (default: train {config} once)")


def add_run_arguments(parser: argparse.ArgumentParser, out: str, quality: bool = False) -> None:
    """--device and --out; with `quality`, the sampling and FID arguments too."""
    if quality:
        parser.add_argument("--reference-steps", type=int, default=1000, help="DDPM steps of the reference rows")
        parser.add_argument("--batch-size", type=int, default=64)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--weights", help="FID Inception weights (see eval/fid.py)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=out, help="writes OUT.md and OUT.json")


def trained_stage(kind: str, given: str | None, runs: str) -> str:
    """The stage folder to benchmark: `given`, else the demo preset trained into `runs` (once)."""
    if given:
        return given
    folder = Path(runs) / f"{kind}_photos"
    if not (folder / "pipeline" / "cascade.json").is_file():
        script, config = PRESETS[kind]
        print(f"training {config} into {folder} (once; reused by later runs)", flush=True)
        subprocess.run([sys.executable, str(ROOT / script), "--config", str(ROOT / config),
                        f"train.output_dir={folder}"], check=True)
    return str(folder / "pipeline")


def network_evaluations(stage, sampler: str, steps: int) -> int:
    """Network evaluations per image of `sampler` at `steps` (Stage.network_evaluations)."""
    return stage.network_evaluations({"sampler": sampler, "steps": steps})


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = "CPU"
    return f"{model} (CPU)"


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: `header` cells, then one line per row of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)])


def write_report(out: str, title: str, table: str, result, device: torch.device, seconds: float,
                 settings: dict | None = None) -> None:
    """Print the table and write OUT.md (the table under a device line) and OUT.json (the rows)."""
    head = f"Device: {device_name(device)}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    text = f"{head}\n\n## {title}\n\n{table}\n\n({seconds:.0f} s)\n"
    print(text, flush=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    report = {"device": device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
              "seconds": seconds, "settings": settings or {}, "rows": result}
    write_text(out + ".json", json.dumps(report, indent=2))
    write_text(out + ".md", text)
    print(f"wrote {out}.md and {out}.json")

