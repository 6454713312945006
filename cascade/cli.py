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
    repeatable; `apply_sampling_arguments` writes them into a loaded pipeline."""
    parser.add_argument("--sampler", action="append", default=[], metavar="[STAGE=]NAME",
                        help=f"diffusers scheduler for every stage, or for stage STAGE (`--sampler 1=ddpm`); "
                        f"repeatable; one of {', '.join(SAMPLERS)} (default: each stage's stage.json)")
    parser.add_argument("--steps", action="append", default=[], metavar="[STAGE=]N",
                        help="network evaluations for every stage, or for stage STAGE (`--steps 0=10 --steps 1=20`); "
                        "repeatable (default: each stage's stage.json)")


def apply_sampling_arguments(pipe, args: argparse.Namespace) -> None:
    """Write `--sampler` / `--steps` into the pipeline's stage settings for this run (a value without a
    stage applies to every stage, then `STAGE=` values override it; STAGE may be negative: -1 = last)."""
    for flag, key, parse in (("--sampler", "sampler", _sampler_name), ("--steps", "steps", _positive_int)):
        items = getattr(args, key) or []
        for item in sorted(items, key=lambda text: "=" in text):  # every-stage values first
            index, _, text = item.rpartition("=")
            value = parse(text, f"{flag} {item}")
            if not index:
                stages = pipe.stages
            else:
                try:
                    stages = [pipe.stages[int(index)]]
                except (ValueError, IndexError):
                    raise CascadeError(f"{flag} {item}: no stage {index!r}; the pipeline has stages "
                                       f"0..{len(pipe.stages) - 1}") from None
            for stage in stages:
                setattr(stage.settings, key, value)


def sampling_report(stages) -> dict[str, list]:
    """The samplers and steps the stages ran with (after `apply_sampling_arguments`), for a script's JSON."""
    return {"samplers": [s.settings.sampler for s in stages], "steps": [s.settings.steps for s in stages]}


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
