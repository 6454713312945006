"""Training data at scale: host memory against dataset size, and loader speed against training speed.

    python eval/bench_data.py                                  # both tables, 1k/10k/100k images
    python eval/bench_data.py --part memory --sizes 1000 10000
    python eval/bench_data.py --part speed --batches 40

Memory: folders of N small generated PNGs (32 px random noise, ~3 KB each), packed once into parquet
shards (`cascade pack`). For each N and way of reading, a fresh process builds the source and the
loader and draws 10 batches; the table has that process's peak RSS, and the row "records in Python
lists" does what cascade.data did before it indexed the Arrow table (`list(ds[image_col])`).
The memory table reports peak RSS and the anonymous RSS at the end (without the pages of
memory-mapped files, which the kernel can drop).

Speed: images per second through the loader (decode + random crop + resize + flip + collate, batch
16) with 0, 1 and 2 DataLoader workers, for 2K JPEG photos (the built-in photos resized to
2048 px wide, as DIV2K's are) read whole for each 64 px crop, and for the same photos packed as
480 px sub-images every 240 px (`cascade pack --crops 480 --stride 240`, DIV2K's BasicSR recipe),
map-style and streamed, stored as PNG (the default) and as JPEG (`--jpeg-quality 95`). Beside
them, the training step's images per second (forward, backward, AdamW) of the demo SR3 stage
(configs/sr3_photos.yaml) and of configs/base_cifar10.yaml's network, on random batches. A setup is loader-bound for a network when its loader rate is below that
network's step rate. Workers share the host's cores with the training step, so on a machine with
few cores the workers' rates do not add to a training run's.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from cascade.bench.reports import ROOT, device_name, write_report
from cascade.cli.common import run_cli

MODES = {
    "imagefolder, map-style": dict(source="imagefolder", packed=False, streaming=False),
    "imagefolder, streamed": dict(source="imagefolder", packed=False, streaming=True),
    "packed parquet, map-style": dict(source="shards", packed=True, streaming=False),
    "packed parquet, streamed": dict(source="shards", packed=True, streaming=True),
    "records in Python lists (before)": dict(source="shards", packed=True, streaming=False, materialise=True),
}


def make_folder(root: Path, count: int) -> Path:
    """`count` 32 px noise PNGs in 10 class folders (kept, and reused by later runs)."""
    done = root / ".complete"
    if done.is_file():
        return root
    rng = np.random.default_rng(0)
    for i in tqdm(range(count), desc=f"writing {count} PNGs", unit="img"):
        folder = root / f"class_{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    done.write_text("")
    return root


def packed(folder: Path, out: Path, **options) -> Path:
    from cascade.data.packing import pack

    if not (out / "pack.json").is_file():
        pack(str(folder), str(out), shard_size="64MB", **options)
    return out


def memory_child(path: str, mode: str) -> None:
    """In a fresh process: build the loader, draw 10 batches, print the peak RSS (MiB)."""
    from cascade.config.sections import DataConfig
    from cascade.data import crops
    from cascade.data import sources as data
    from cascade.data import streams

    spec = MODES[mode]
    cfg = DataConfig(source=spec["source"], path=path, streaming=spec["streaming"])
    start = time.perf_counter()
    if spec["streaming"]:
        loader = streams.make_loader(cfg, 32, 16)
    else:
        source = data.load_source(cfg)
        if spec.get("materialise"):
            source.records = list(source.records.dataset[source.records.column])
        loader = crops.make_loader(source, 32, cfg, 16)
    batches = iter(loader)
    for _ in range(10):
        next(batches)
    seconds = time.perf_counter() - start
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    anon = int(status.get("RssAnon", "0 kB").split()[0]) / 1024  # without file pages (those of the memory-mapped table)
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "seconds": seconds,
                      "anon_mib": anon}))


def measure_memory(work: Path, sizes: list[int]) -> list[dict]:
    rows = []
    for count in sizes:
        folder = make_folder(work / f"png_{count}", count)
        shards = packed(folder, work / f"packed_{count}")
        data_mb = sum(f.stat().st_size for f in shards.glob("*.parquet")) / 2**20
        for mode, spec in MODES.items():
            path = shards if spec["packed"] else folder
            # Map-style: the first run writes datasets' Arrow cache; the row is a later run, as every run after the first.
            first = None if spec["streaming"] else _child(path, mode, count)
            result = _child(path, mode, count)
            rows.append({"images": count, "mode": mode, "data_mib": round(data_mb, 1),
                         "peak_rss_mib": round(result["peak_mib"]), "anon_rss_mib": round(result["anon_mib"]),
                         "seconds": round(result["seconds"], 1),
                         "first_run_peak_rss_mib": round(first["peak_mib"]) if first else None})
            print(rows[-1], flush=True)
    return rows


def _child(path: Path, mode: str, count: int) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, __file__, "--child", str(path), mode], capture_output=True, text=True,
                          cwd=ROOT, env=env)
    if proc.returncode:
        raise SystemExit(f"{mode} on {count} images failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def photos_2k(root: Path) -> Path:
    """The ten built-in photos (and their mirror images) resized to 2048 px wide, as JPEG (quality 95)."""
    if (root / ".complete").is_file():
        return root
    from cascade.data.sources import _photo_loaders

    for name, load in _photo_loaders():
        image = Image.fromarray(np.asarray(load())).convert("RGB")
        image = image.resize((2048, round(image.height * 2048 / image.width)), Image.BICUBIC)
        for flip in (False, True):
            folder = root / name
            folder.mkdir(parents=True, exist_ok=True)
            (image.transpose(Image.FLIP_LEFT_RIGHT) if flip else image).save(folder / f"{name}_{int(flip)}.jpg",
                                                                              quality=95)
    (root / ".complete").write_text("")
    return root


def loader_rate(cfg, batches: int) -> float:
    from cascade.data import crops
    from cascade.data import sources as data
    from cascade.data import streams

    if cfg.streaming:
        loader = streams.make_loader(cfg, 64, 16)
    else:
        source = data.load_source(cfg)
        loader = crops.make_loader(source, 64, cfg, 16)
    it = iter(loader)
    next(it)  # worker start-up and the first batch are not counted
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return 16 * batches / (time.perf_counter() - start)


def step_rate(config: str, kind_name: str, steps: int = 2) -> tuple[float, int, int]:
    """Training images per second of the network in `config` at its batch size, on random data."""
    from cascade.config.loading import load_config
    from cascade.config.stages import BaseStageConfig, SR3StageConfig
    from cascade.diffusion.schedule import make_noise_scheduler
    from cascade.kinds.base import Base
    from cascade.kinds.sr3 import SR3
    from cascade.models.unet import UNet
    from cascade.training.loop import make_optimizer

    cls = SR3StageConfig if kind_name == "sr3" else BaseStageConfig
    cfg = load_config(cls, str(ROOT / config))
    kind = SR3.from_config(cfg.sr) if kind_name == "sr3" else Base()
    torch.manual_seed(0)
    model = UNet(**vars(cfg.model)).train()
    scheduler = make_noise_scheduler(cfg.diffusion, clip_sample=kind.clip_sample)
    optimizer = make_optimizer(model.parameters(), cfg.train)
    b, size = cfg.train.batch_size, cfg.model.sample_size
    batch = {"image": torch.rand(b, 3, size, size) * 2 - 1, "label": torch.zeros(b, dtype=torch.long),
             "seed": torch.arange(b)}
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        loss = kind.loss(model, model.config, scheduler, batch, cfg.train.label_dropout)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return b / min(times[1:]), b, size


def measure_speed(work: Path, batches: int) -> tuple[list[dict], list[dict]]:
    from cascade.config.sections import DataConfig

    photos = photos_2k(work / "photos_2k")
    sub = packed(photos, work / "photos_2k_sub480", crops=480, stride=240)
    sub_jpeg = packed(photos, work / "photos_2k_sub480_q95", crops=480, stride=240, jpeg_quality=95)
    setups = {"2K JPEG photos, map-style": dict(source="imagefolder", path=str(photos), streaming=False),
              "480 px sub-images (packed PNG), map-style": dict(source="shards", path=str(sub), streaming=False),
              "480 px sub-images (packed PNG), streamed": dict(source="shards", path=str(sub), streaming=True),
              "480 px sub-images (packed JPEG q95), streamed": dict(source="shards", path=str(sub_jpeg), streaming=True)}
    loaders = []
    for name, spec in setups.items():
        row = {"data": name}
        for workers in (0, 1, 2):
            cfg = DataConfig(**spec, crop_scale=[0.1, 0.3] if spec["source"] == "imagefolder" else [0.15, 0.4],
                             num_workers=workers, epoch_size=4096)
            row[f"workers={workers}"] = round(loader_rate(cfg, batches), 1)
        loaders.append(row)
        print(row, flush=True)
    steps = []
    for name, config, kind in (("demo SR3 stage (64 px, sr3_photos)", "configs/sr3_photos.yaml", "sr3"),
                               ("base_cifar10 network (32 px)", "configs/base_cifar10.yaml", "base")):
        rate, b, size = step_rate(config, kind)
        steps.append({"network": name, "batch": b, "step_img_per_s": round(rate, 1)})
        print(steps[-1], flush=True)
    return loaders, steps


def tables(memory: list[dict], loaders: list[dict], steps: list[dict]) -> str:
    parts = []
    if memory:
        sizes = sorted({r["images"] for r in memory})
        head = "| reading | " + " | ".join(f"{n:,} images" for n in sizes) + " |"
        lines = [head, "|---|" + "---:|" * len(sizes)]
        for mode in MODES:
            cells = {r["images"]: r for r in memory if r["mode"] == mode}
            lines.append(f"| {mode} | " + " | ".join(f"{cells[n]['peak_rss_mib']} / {cells[n]['anon_rss_mib']} MiB"
                                                     if n in cells else "" for n in sizes) + " |")
        data = {r["images"]: r["data_mib"] for r in memory}
        lines.append("| (packed data on disk) | " + " | ".join(f"{data[n]} MiB" for n in sizes) + " |")
        parts.append("Peak RSS / anonymous RSS at the end (without the pages of memory-mapped files) of a process "
                     "that builds the loader and draws 10 batches of 16:\n\n" + "\n".join(lines))
    if loaders:
        lines = ["| data | 0 workers | 1 worker | 2 workers |", "|---|---:|---:|---:|"]
        lines += [f"| {r['data']} | {r['workers=0']} | {r['workers=1']} | {r['workers=2']} |" for r in loaders]
        lines += ["", "| network | batch | training img/s | loader-bound with 0 workers on |", "|---|---:|---:|---|"]
        for s in steps:
            bound = [r["data"] for r in loaders if r["workers=0"] < s["step_img_per_s"]]
            lines.append(f"| {s['network']} | {s['batch']} | {s['step_img_per_s']} | {'; '.join(bound) or 'none'} |")
        parts.append("Loader images/s (64 px crops, batch 16) and training images/s:\n\n" + "\n".join(lines))
    return "\n\n".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["memory", "speed", "all"], default="all")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--batches", type=int, default=30, help="batches timed per loader setup")
    parser.add_argument("--work", default="bench/data", help="generated data is written here and reused")
    parser.add_argument("--out", default="bench/data_at_scale")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return memory_child(*args.child)
    start, work = time.perf_counter(), Path(args.work)
    memory = measure_memory(work, args.sizes) if args.part in ("memory", "all") else []
    loaders, steps = measure_speed(work, args.batches) if args.part in ("speed", "all") else ([], [])
    write_report(args.out, "Training data at scale", tables(memory, loaders, steps),
                 {"memory": memory, "loaders": loaders, "steps": steps}, torch.device("cpu"),
                 time.perf_counter() - start, {"sizes": args.sizes, "batches": args.batches})
    print(f"(device: {device_name(torch.device('cpu'))})")


if __name__ == "__main__":
    run_cli(main)
