"""`python -m cascade info PIPELINE`: what a pipeline folder (or Hub id) holds, one line per stage: kind, sizes,
parameters, sampler and steps, guidance, augmentation level, where it came from; the network evaluations per
output pixel; and the evaluation reports saved beside it."""

from __future__ import annotations

from ..inference.card import describe
from ..inference.pipeline import Pipeline
from .common import add_hub_arguments, hub_kwargs


def add_parser(commands) -> None:
    info = commands.add_parser("info", help="describe a pipeline folder or Hub id: one line per stage")
    info.add_argument("pipeline", help="a pipeline folder, or a Hub id (org/name)")
    add_hub_arguments(info)
    info.set_defaults(run=run)


def run(args) -> None:
    pipe = Pipeline.from_pretrained(args.pipeline, **hub_kwargs(args))
    print(describe(pipe, pipe.folder))
