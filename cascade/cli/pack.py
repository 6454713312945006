"""`python -m cascade pack SRC OUT`: an image folder as shards pre-resized (and cut) for a stage."""

from __future__ import annotations


def add_parser(commands) -> None:
    pk = commands.add_parser("pack", help="write an image folder as shards pre-resized (and cut) for a stage")
    pk.add_argument("src", help="an image folder (class subfolders, or flat) or a folder of .parquet/.tar shards")
    pk.add_argument("out", help="a new folder for the shards and pack.json")
    pk.add_argument("--size", type=int, help="resize so that the shorter side is this (never upsampled)")
    pk.add_argument("--crops", type=int, help="cut into sub-images of this side (after --size), BasicSR-style")
    pk.add_argument("--stride", type=int, help="step between sub-images (default: --crops, no overlap)")
    pk.add_argument("--shard-size", default="1GB", help="bytes of images per shard (default 1GB)")
    pk.add_argument("--format", default="parquet", choices=["parquet", "webdataset"])
    pk.add_argument("--jpeg-quality", type=int, help="store JPEG at this quality instead of lossless PNG")
    pk.add_argument("--workers", type=int, help="decoding processes (default: up to 4 CPU cores)")
    pk.add_argument("--on-bad-image", default="error", choices=["error", "skip"])
    pk.set_defaults(run=run)


def run(args) -> None:
    from ..data.packing import pack as pack_images

    info = pack_images(args.src, args.out, size=args.size, crops=args.crops, stride=args.stride,
                       shard_size=args.shard_size, fmt=args.format, jpeg_quality=args.jpeg_quality,
                       workers=args.workers, on_bad_image=args.on_bad_image)
    skipped = f", {info['skipped']} undecodable images skipped" if info["skipped"] else ""
    print(f"wrote {args.out}: {info['records']} records from {info['images']} images in {len(info['shards'])} "
          f"{info['format']} shards{skipped}; train on it with data.source=shards data.path={args.out}")
