"""Shared command-line plumbing for the scripts in train/ and eval/."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .errors import CascadeError
from .sampling import SAMPLERS


def run_cli(main: Callable[[], None]) -> None:
    """Run a script's main; a user error prints one line (`error: ...`) and exits with status 2."""
    try:
        main()
    except CascadeError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """`--sampler` and `--steps`, each for every stage (`dpm++`, `20`) or for one stage (`1=ddpm`, `0=10`),
    repeatable; `apply_sampling_arguments` gives the pipeline to sample with them."""
    parser.add_argument("--sampler", action="append", default=[], metavar="[STAGE=]NAME",
                        help=f"diffusers scheduler for every stage, or for stage STAGE (`--sampler 1=ddpm`); "
                        f"repeatable; one of {', '.join(SAMPLERS)} (default: each stage's stage.json)")
    parser.add_argument("--steps", action="append", default=[], metavar="[STAGE=]N",
                        help="network evaluations for every stage, or for stage STAGE (`--steps 0=10 --steps 1=20`); "
                        "repeatable (default: each stage's stage.json)")


def sampling_settings(pipe, args: argparse.Namespace) -> dict[int, dict]:
    """`--sampler` / `--steps` as per-stage settings {stage index: {field: value}} (a value without a
    stage applies to every stage, then `STAGE=` values override it; STAGE may be negative: -1 = last)."""
    settings: dict[int, dict] = {i: {} for i in range(len(pipe.stages))}
    for flag, key, parse in (("--sampler", "sampler", _sampler_name), ("--steps", "steps", _positive_int)):
        for item in sorted(getattr(args, key) or [], key=lambda text: "=" in text):  # every-stage values first
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
    """The pipeline to sample with: `pipe`'s models with `--sampler` / `--steps` as their defaults
    (a new Pipeline; `pipe` is unchanged)."""
    return pipe.with_settings(sampling_settings(pipe, args))


def sampling_report(stages) -> dict[str, list]:
    """The samplers and steps the stages sample with, for a script's JSON."""
    return {"samplers": [s.defaults.sampler for s in stages], "steps": [s.defaults.steps for s in stages]}


def _sampler_name(text: str, where: str) -> str:
    if text not in SAMPLERS:
        raise CascadeError(f"{where}: unknown sampler {text!r}; choose one of {', '.join(SAMPLERS)}")
    return text


def _positive_int(text: str, where: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise CascadeError(f"{where}: steps must be an integer >= 1, got {text!r}")
    return value
