"""`python -m cascade push PIPELINE ORG/NAME`: publish a pipeline folder on the Hugging Face Hub with its model
card (README.md: YAML metadata, its stages, training and evaluation numbers, a sample grid, code to run it)."""

from __future__ import annotations

from ..inference.pipeline import Pipeline
from .common import add_hub_arguments, hub_kwargs


def add_parser(commands) -> None:
    push = commands.add_parser("push", help="publish a pipeline on the Hugging Face Hub, with a model card")
    push.add_argument("pipeline", help="the pipeline folder (or a Hub id: copied to another repository)")
    push.add_argument("repo_id", help="the model repository, org/name (created if missing)")
    push.add_argument("--private", action="store_true", help="create the repository private")
    push.add_argument("--message", help="the commit message (default: Upload cascade pipeline)")
    push.add_argument("--license", default="apache-2.0", help="the model card's license (default apache-2.0)")
    add_hub_arguments(push)
    push.set_defaults(run=run)


def run(args) -> None:
    pipe = Pipeline.from_pretrained(args.pipeline, **hub_kwargs(args))
    url = pipe.push_to_hub(args.repo_id, private=args.private or None, commit_message=args.message,
                           token=args.token, license=args.license)
    print(f"pushed {args.pipeline} to {args.repo_id}: {url}")
