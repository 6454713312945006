"""`python -m cascade assemble OUT STAGE...`: chain separately trained stages into one pipeline folder."""

from __future__ import annotations

from ..inference.pipeline import Pipeline


def add_parser(commands) -> None:
    asm = commands.add_parser("assemble", help="chain separately trained stages into one pipeline folder")
    asm.add_argument("output")
    asm.add_argument("stages", nargs="+", help="pipeline or stage folders, base first")
    asm.set_defaults(run=run)


def run(args) -> None:
    pipe = Pipeline.from_stages(args.stages)
    pipe.save_pretrained(args.output)
    sizes = " -> ".join(f"{s.resolution} px" for s in pipe.stages)
    print(f"wrote {args.output}: {len(pipe.stages)} stages ({sizes})")
