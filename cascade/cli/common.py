"""What the commands (cascade.cli) and the scripts in train/ and eval/ share: one-line errors, sampling
and source options, sizes, image files and JSON reports."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from PIL import Image, UnidentifiedImageError

from ..diffusion.sampling import SAMPLERS
from ..errors import CascadeError, DataError
from ..io.atomic import write_text


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's main; a user error prints one line (`error: ...`) and exits with status 2. The process group
    of a launched run (several processes) is ended here, once, after all of its training runs have ended well."""
    try:
        main()
    except CascadeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():  # after a success only: after a failed collective it may block
        dist.destroy_process_group()


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """`--sampler`, `--steps` and `--final-timestep`, each for every stage (`dpm++`, `20`) or for one stage
    (`1=ddpm`, `0=10`), repeatable; `apply_sampling_arguments` gives the pipeline to sample with them."""
    parser.add_argument("--sampler", action="append", default=[], metavar="[STAGE=]NAME",
                        help=f"diffusers scheduler for every stage, or for stage STAGE (`--sampler 1=ddpm`); "
                        f"repeatable; one of {', '.join(SAMPLERS)} (default: each stage's stage.json)")
    parser.add_argument("--steps", action="append", default=[], metavar="[STAGE=]N",
                        help="network evaluations for every stage, or for stage STAGE (`--steps 0=10 --steps 1=20`); "
                        "repeatable (default: each stage's stage.json)")
    parser.add_argument("--final-timestep", action="append", default=[], metavar="[STAGE=]T",
                        help="a few-step student's (lcm, tcd, pcm) 2+ steps end at grid point T (t = 20 n - 1, "
                        "e.g. 99) instead of their sampler's own last; repeatable (default: each stage's stage.json)")


def sampling_settings(pipe, args: argparse.Namespace) -> dict[int, dict]:
    """`--sampler` / `--steps` / `--final-timestep` as per-stage settings {stage index: {field: value}} (a value
    without a stage applies to every stage, then `STAGE=` values override it; STAGE may be negative: -1 = last)."""
    settings: dict[int, dict] = {i: {} for i in range(len(pipe.stages))}
    for flag, key, parse in (("--sampler", "sampler", _sampler_name), ("--steps", "steps", _positive_int),
                             ("--final-timestep", "final_timestep", _timestep)):
        for item in sorted(getattr(args, key, None) or [], key=lambda text: "=" in text):  # every-stage values first
            index, _, text = item.rpartition("=")
            value = parse(text, f"{flag} {item}")
            if not index:
                targets = range(len(pipe.stages))
            else:
                try:
                    targets = [range(len(pipe.stages))[int(index)]]
                except (ValueError, IndexError):
                    raise CascadeError(f"{flag} {item}: no stage {index!r}; the pipeline has stages "
                                       f"0..{len(pipe.stages) - 1}") from None
            for i in targets:
                settings[i][key] = value
    return settings


def apply_sampling_arguments(pipe, args: argparse.Namespace):
    """The pipeline to sample with: `pipe`'s models with `--sampler` / `--steps` / `--final-timestep` as their
    defaults (a new Pipeline; `pipe` is unchanged)."""
    settings = sampling_settings(pipe, args)
    try:  # every stage's settings checked (a final timestep off a student's grid): one line now, not mid-run
        return pipe.with_settings(settings)
    except ValueError as e:
        raise CascadeError(str(e)) from None


def sampling_report(stages) -> dict[str, list]:
    """The samplers and steps the stages sample with, for a script's JSON."""
    return {"samplers": [s.defaults.sampler for s in stages], "steps": [s.defaults.steps for s in stages]}


def _sampler_name(text: str, where: str) -> str:
    if text not in SAMPLERS:
        raise CascadeError(f"{where}: unknown sampler {text!r}; choose one of {', '.join(SAMPLERS)}")
    return text


def _timestep(text: str, where: str) -> int:
    if not text.isdigit():
        raise CascadeError(f"{where}: a timestep must be an integer >= 0, got {text!r}")
    return int(text)


def _positive_int(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise CascadeError(f"{where}: steps must be an integer >= 1, got {text!r}")
    return value


# --- evaluation sources (eval/fid.py, eval/inception_score.py)

def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line options shared by eval/fid.py, eval/inception_score.py and eval/cas.py."""
    parser.add_argument("--split", help="dataset split for real sources (default: test; a plain image folder: all)")
    parser.add_argument("--num-samples", type=int, help="images per source (pipelines: required; real: default all)")
    parser.add_argument("--size", type=int, help="real images: centre square resized to this side "
                        "(default: the pipeline side's resolution when one side is a pipeline)")
    parser.add_argument("--crops", action="store_true", help="real images: --num-samples seeded random crops of "
                        "side --size (for a few large photos, like the built-in ones)")
    parser.add_argument("--crop-scale", type=float, nargs=2, default=[0.15, 0.4], help="crop side / shorter side")
    parser.add_argument("--stage", type=int, default=-1, help="pipelines: evaluate this stage's output (default: last)")
    add_sampling_arguments(parser)  # pipelines: --sampler, --steps (per stage or all)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", help="FID Inception weights: pt_inception-2015-12-05-6726825d.pth or a "
                        "TorchScript (default: found automatically, see cascade/metrics/inception.py)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")


def source_options(args, device, specs):
    """The options that add_source_arguments parsed. Pipelines among `specs` are loaded (once per
    process) with --sampler/--steps applied, and real images are brought to the first pipeline's
    output side unless --size says otherwise."""
    from ..metrics.extract import SourceOptions, load_pipeline

    resolution, pipelines = None, {}
    for spec in specs:
        if spec.kind == "pipeline":
            pipelines[spec.path] = pipe = apply_sampling_arguments(load_pipeline(spec.path, str(device)), args)
            resolution = resolution or pipe.stages[args.stage].resolution
    return SourceOptions(num=args.num_samples, batch_size=args.batch_size, size=args.size or resolution,
                         crops=args.crops, crop_scale=tuple(args.crop_scale), seed=args.seed, stage=args.stage,
                         device=device, pipelines=pipelines)


def emit_json(report: dict, path: str | None) -> None:
    """Print the result as one JSON line (the last line of output) and write it to `path` if given."""
    print(json.dumps(report))
    if path:
        write_text(path, json.dumps(report, indent=2))


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = map(int, text.lower().split("x"))
        assert width > 0 and height > 0
    except (ValueError, AssertionError):
        raise CascadeError(f"--size {text}: expected WIDTHxHEIGHT in pixels, e.g. 16384x8640") from None
    return width, height


def read_image(path: str) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{path}: cannot read image ({' '.join(str(e).split())})") from None
    return image


def add_hub_arguments(parser: argparse.ArgumentParser) -> None:
    """`--revision`, `--cache-dir`, `--local-files-only`, `--token` for a pipeline given as a Hub id."""
    parser.add_argument("--revision", help="Hub ids: a branch, tag or commit (default: main)")
    parser.add_argument("--cache-dir", help="Hub ids: the cache folder (default: huggingface_hub's, HF_HUB_CACHE)")
    parser.add_argument("--local-files-only", action="store_true", help="Hub ids: use the cache only, never the network")
    parser.add_argument("--token", help="Hub ids: an access token (default: HF_TOKEN or `hf auth login`)")


def hub_kwargs(args: argparse.Namespace) -> dict:
    """The `from_pretrained` options that add_hub_arguments parsed (absent ones: the defaults)."""
    return {"revision": getattr(args, "revision", None), "cache_dir": getattr(args, "cache_dir", None),
            "local_files_only": getattr(args, "local_files_only", None) or None, "token": getattr(args, "token", None)}
