"""The command line, one module per command: `python -m cascade COMMAND ...`.

    python -m cascade upscale photo.png photo_x2.png          # with the demo cascade's upsampler
    python -m cascade upscale photo.png photo_x2.png --pipeline runs/sr3_photos/pipeline
    python -m cascade upscale small.png big.png --pipeline runs/cascade_photos --aug-level 0.05 --steps 25
    python -m cascade upscale photo.jpg big.png --tile-size 128 --overlap 16 --tile-batch 16 --consistent
    python -m cascade upscale 8k.jpg 16k.png --state-dir 16k.state         # streamed to disk, resumable
    python -m cascade upscale 8k.jpg 16k.png --state-dir 16k.state --resume
    python -m cascade upscale photo.jpg 16k.png --size 16384x8640          # the input resized to 8192x4320 first
    accelerate launch --multi_gpu --num_processes 4 -m cascade upscale 8k.jpg 16k.png   # tiles shared
    python -m cascade synthesize labels.png photo.png --pipeline runs/labels_layouts --num 4 --size 2048x1024
    python -m cascade synthesize labels2.png photo2.png --edit-from photo.png --mask changed.png   # redo one region
    python -m cascade layouts data/layouts_test --num 64 --split test       # the built-in pairs as a folder
    python -m cascade generate --pipeline runs/one_shot/pipeline --size 3840x2160 --num 4 --seed 0 --out samples/
    python -m cascade edit --pipeline runs/one_shot/pipeline --image edited.png --mask mask.png --strength 0.5 --out out.png
    python -m cascade upscale small.png big.png --pipeline runs/one_shot/pipeline --prior --scale 4   # no SR stage
    python -m cascade assemble runs/cascade_photos runs/base_photos/pipeline runs/sr3_photos/pipeline
    python -m cascade info runs/cascade_photos                             # one line per stage (or a Hub id)
    python -m cascade push runs/cascade_photos my-org/cascade-photos       # to the Hub, with a model card
    python -m cascade upscale photo.png big.png --pipeline my-org/cascade-photos --revision v1   # by Hub id
    python -m cascade pack ~/imagenet/train data/imagenet_256 --size 256 --shard-size 1GB
    python -m cascade pack ~/DIV2K_train_HR data/div2k_sub --crops 480 --stride 240 --shard-size 64MB --format webdataset
"""

from __future__ import annotations

import argparse

from . import assemble, edit, generate, info, layouts, pack, push, synthesize, upscale

COMMANDS = (upscale, synthesize, generate, edit, assemble, info, push, pack, layouts)  # each: add_parser(commands), run(args)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cascade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(commands)
    args = parser.parse_args(argv)
    args.run(args)
