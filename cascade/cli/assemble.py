"""`python -m cascade assemble OUT STAGE...`: chain separately trained stages into one pipeline folder: stage or
pipeline folders, or pipelines on the Hub by id (copied, or with `--link` named in cascade.json)."""

from __future__ import annotations

import json

from ..errors import CascadeError
from ..inference.folders import CASCADE_FILE, load_stages, save
from ..inference.hub import is_repo_id
from ..inference.pipeline import Pipeline
from .common import add_hub_arguments, hub_kwargs


def add_parser(commands) -> None:
    asm = commands.add_parser("assemble", help="chain separately trained stages into one pipeline folder")
    asm.add_argument("output")
    asm.add_argument("stages", nargs="+", help="pipeline or stage folders, or pipelines' Hub ids, base first")
    asm.add_argument("--link", action="store_true", help="Hub ids: name their stages in cascade.json instead of "
                     "copying them (the cascade then loads them from the Hub, or the cache)")
    add_hub_arguments(asm)
    asm.set_defaults(run=run)


def run(args) -> None:
    options = hub_kwargs(args)
    if not args.link:
        pipe = Pipeline.from_stages(args.stages, hub=options)
        pipe.save_pretrained(args.output)
    else:
        stages, links = [], []
        for item in args.stages:
            if not is_repo_id(item):
                raise CascadeError(f"--link: {item} is not a Hub id (org/name); links name stages on the Hub")
            found, folder = load_stages(item, options)
            entries = json.loads((folder / CASCADE_FILE).read_text())["stages"]
            stages += found
            links += [e if isinstance(e, dict) else {"repo": item, "revision": options["revision"], "subfolder": e}
                      for e in entries]
        try:
            pipe = Pipeline(stages)
        except ValueError as e:
            raise CascadeError(f"cannot chain {', '.join(args.stages)}: {e}") from None
        save(pipe, args.output, links=links)
    sizes = " -> ".join(f"{s.resolution} px" for s in pipe.stages)
    print(f"wrote {args.output}: {len(pipe.stages)} stages ({sizes})" + (" linked to the Hub" if args.link else ""))
