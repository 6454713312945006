"""Run an evaluation source through a feature network: FID statistics (with an .npz cache for real
images) and, where the network has them, logits for the Inception Score.

The pieces stay separate and checkable: `sources` makes uint8 batches, `inception` turns them into
features, `scores` does the maths. This module only wires them together for the eval/ scripts.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from ..errors import DataError
from .inception import FeatureNetwork
from .scores import FeatureStats
from .sources import SourceSpec, cache_key, load_real, parse_source, pipeline_batches, real_batches


def default_cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "cascade" / "fid_stats"


@dataclass
class SourceOptions:
    """How many images to take from a source and how (see cascade.metrics.sources)."""

    num: int | None = None  # images (pipelines: samples; real sources: None = all)
    batch_size: int = 50
    size: int | None = None  # real images: centre square resized to this side (None: as stored)
    crops: bool = False  # real images: `num` seeded random crops of side `size` instead
    crop_scale: tuple[float, float] = (0.15, 0.4)
    seed: int = 0
    stage: int = -1  # pipelines: which stage's output
    device: str | torch.device = "cpu"  # pipelines: where to sample
    pipelines: dict = field(default_factory=dict)  # pipeline path -> the Pipeline to sample (with the flags' settings)


@dataclass
class Extracted:
    stats: FeatureStats
    logits: torch.Tensor | None = None  # [N x 1008] when the network has logits and they were asked for
    cached: Path | None = None  # the statistics file read or written
    reused: bool = False
    description: str = ""


@functools.lru_cache(maxsize=2)
def load_pipeline(path: str, device: str):
    """A pipeline folder, loaded once per process (the scripts ask for its size, then sample it)."""
    from ..inference.pipeline import Pipeline

    return Pipeline.from_pretrained(path, device=device)


def batches_of(spec: SourceSpec, opts: SourceOptions):
    """(iterator of uint8 batches, number of images expected or None, description)."""
    if spec.kind == "pipeline":
        if opts.num is None:
            raise DataError(f"{spec.path}: say how many samples to draw from a pipeline (--num-samples)")
        pipe = opts.pipelines.get(spec.path) or load_pipeline(spec.path, str(opts.device))
        last = opts.stage % len(pipe.stages)
        samplers = " -> ".join(f"{s.defaults.sampler} {s.defaults.steps}" for s in pipe.stages[:last + 1])
        text = f"pipeline {spec.path} (stage {last}, {pipe.stages[last].resolution} px, {samplers}, seed {opts.seed})"
        return pipeline_batches(pipe, opts.num, opts.batch_size, opts.seed, opts.stage), opts.num, text
    source = load_real(spec)
    total = opts.num if opts.crops else min(opts.num or len(source), len(source))
    how = f", {opts.size} px crops" if opts.crops else (f", centre {opts.size} px" if opts.size else "")
    return (real_batches(source, opts.num, opts.batch_size, opts.size, opts.crops, tuple(opts.crop_scale), opts.seed),
            total, f"{source.name} ({spec.split}{how})")


def extract(spec: SourceSpec | str, network: FeatureNetwork, opts: SourceOptions, want_logits: bool = False,
            cache_dir: Path | None = None, label: str = "") -> Extracted:
    """FID statistics of a source (and logits if asked); real sources are cached in `cache_dir`."""
    spec = parse_source(spec) if isinstance(spec, str) else spec
    if spec.kind == "stats":
        if want_logits:
            raise DataError(f"{spec.path}: a statistics file has no logits for the Inception Score")
        stats = FeatureStats.load(spec.path)
        return Extracted(stats, cached=Path(spec.path), reused=True, description=f"statistics {spec.path}")
    settings = {"num": opts.num, "size": opts.size, "crops": opts.crops, "crop_scale": list(opts.crop_scale),
                "seed": opts.seed}
    cache = None
    if spec.is_real and cache_dir is not None and not want_logits:
        cache = Path(cache_dir) / f"{cache_key(spec, settings, network.sha256)}.npz"
        if cache.is_file():
            stats = FeatureStats.load(cache)
            return Extracted(stats, cached=cache, reused=True, description=stats.meta.get("description", spec.path))
    iterator, total, description = batches_of(spec, opts)
    stats, logits = FeatureStats(), []
    with tqdm(total=total, desc=f"features {label}".strip(), unit="img") as bar:
        for images, _ in iterator:
            feats, batch_logits = network(images)
            stats.update(feats)
            if want_logits:
                logits.append(batch_logits)
            bar.update(images.shape[0])
    if stats.count == 0:
        raise DataError(f"{spec.path}: no images")
    if cache is not None:
        stats.save(cache, description=description, network=network.identity, **settings)
    return Extracted(stats, torch.cat(logits) if want_logits else None, cache, False, description)
