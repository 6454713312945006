"""Score a label-map pipeline as pix2pixHD and SDM do: segmentation accuracy, FID and diversity.

    python eval/label_map.py --pipeline runs/labels_layouts --out runs/labels_layouts/eval
    python eval/label_map.py --pipeline runs/labels_city --data paired --path ~/cityscapes_pairs --size 256

1. Held-out pairs (split `--split`; the built-in layouts' test split by default), `--num` of them,
   square crops of the whole shorter side resized to `--size` (default: the last stage's size):
   images bicubic, maps nearest.
2. A segmenter (cascade/models/segmenter.py) trained on `--train-pairs` real training pairs of the same
   size, or loaded with `--segmenter`. Its mIoU / pixel accuracy on the real held-out images is the
   upper bound; on images generated from the held-out maps (seed = the map's index, plus 10^6 x
   `--seed`) it scores how well the samples follow their maps.
3. FID of the generated images against the real held-out images (the Inception weights of
   eval/fid.py), beside the FID of as many real training images against them (the floor).
4. Diversity: `--samples` samples of each of the first `--diversity-maps` maps; SinGAN's measure, the
   pixel std across samples averaged over pixels, divided by the std of the real images' pixels.

Writes `--out`/label_map.json (also printed as the last line), the segmenter (safetensors), and
`--out`/label_map.png: rows of (label map | samples | real).
"""

import argparse
import json
from pathlib import Path

import torch

from cascade.cli.common import add_sampling_arguments, apply_sampling_arguments, emit_json, run_cli, sampling_report
from cascade.config.sections import DataConfig
from cascade.data.label_maps import colourise
from cascade.data.paired import crop_pair, load_pairs
from cascade.errors import DataError
from cascade.inference.pipeline import Pipeline
from cascade.io.atomic import write_text
from cascade.io.images import signed_to_uint8, uint8_grid, unit_to_uint8, upscale_nearest
from cascade.metrics.inception import load_feature_network
from cascade.metrics.scores import FeatureStats, fid_from_stats
from cascade.models.segmenter import Segmenter, confusion, scores, segment, train_segmenter


def pairs(cfg: DataConfig, num_labels: int, ignore_id, split: str, size: int, num: int | None, seed: int) -> dict:
    """Up to `num` pairs of `split` as {"image": uint8 [N x 3 x s x s], "label_map", "instances"?}."""
    source = load_pairs(cfg, num_labels, ignore_id, split=split)
    generator = torch.Generator().manual_seed(seed)
    examples = [crop_pair(*source.load(i), size, (1.0, 1.0), False, generator)
                for i in range(min(num or len(source), len(source)))]
    batch = {key: torch.stack([e[key] for e in examples]) for key in examples[0]}
    batch["image"] = signed_to_uint8(batch["image"])
    return batch


def generate(pipe: Pipeline, held: dict, seeds: list[int], batch_size: int) -> torch.Tensor:
    """uint8 samples [N x 3 x s x s] of the held-out maps (map i with seed seeds[i])."""
    out = []
    for start in range(0, len(seeds), batch_size):
        part = slice(start, start + batch_size)
        inst = held["instances"][part] if "instances" in held else None
        images = pipe(label_maps=held["label_map"][part], instances=inst, seed=seeds[part], output_type="pt",
                      progress=False)
        out.append(unit_to_uint8(images))  # "pt" is [0, 1]
    return torch.cat(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="a label-map pipeline folder")
    parser.add_argument("--data", default="layouts", choices=["layouts", "paired"])
    parser.add_argument("--path", help="--data paired: the folder with images/, labels/ (and a test/ split)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--size", type=int, help="evaluation side (default: the last stage's resolution)")
    parser.add_argument("--num", type=int, default=128, help="held-out pairs")
    parser.add_argument("--samples", type=int, default=3, help="samples per map for the diversity measure")
    parser.add_argument("--diversity-maps", type=int, default=16)
    parser.add_argument("--train-pairs", type=int, default=1000, help="real pairs the segmenter trains on")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--segmenter", help="a segmenter folder to load instead of training one")
    add_sampling_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weights", help="FID Inception weights (default: found automatically)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.data == "paired" and not args.path:
        parser.error("--data paired needs --path (the folder with images/ and labels/)")
    if min(args.num, args.samples, args.diversity_maps, args.train_pairs, args.epochs) < 1:
        parser.error("--num, --samples, --diversity-maps, --train-pairs and --epochs must be >= 1")

    pipe = apply_sampling_arguments(Pipeline.from_pretrained(args.pipeline), args)
    if pipe.base is None or not pipe.base.kind.uses_label_maps:
        raise DataError(f"{args.pipeline}: not a label-map pipeline (its base stage is not a label-map stage)")
    kind, num_labels = pipe.base.kind, pipe.base.unet.config.num_labels
    size = args.size or pipe.stages[-1].resolution
    cfg = DataConfig(source=args.data, path=args.path)
    held = pairs(cfg, num_labels, kind.ignore_id, args.split, size, args.num, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # --- the segmenter, trained on real training pairs
    train = pairs(cfg, num_labels, kind.ignore_id, "train", size, args.train_pairs, args.seed + 1)
    if args.segmenter:
        segmenter = Segmenter.from_pretrained(args.segmenter)
    else:
        torch.manual_seed(args.seed)
        segmenter = train_segmenter(Segmenter(num_labels, label_names=list(kind.label_names)), train["image"],
                                    train["label_map"], epochs=args.epochs, seed=args.seed)
        segmenter.save_pretrained(out / "segmenter")
    truth = held["label_map"]
    real = scores(confusion(segment(segmenter, held["image"]), truth, num_labels))

    # --- samples of the held-out maps: seed i for map i; more seeds of the first maps for diversity
    first = args.seed * 1_000_000  # --seed 1 draws other samples of the same maps: the noise floor
    fake = generate(pipe, held, [first + i for i in range(len(truth))], args.batch_size)
    synth = scores(confusion(segment(segmenter, fake), truth, num_labels))
    d = min(args.diversity_maps, len(truth))
    extra = {key: value[:d].repeat_interleave(args.samples - 1, 0) for key, value in held.items()}
    more = generate(pipe, extra, [first + len(truth) + i for i in range(d * (args.samples - 1))], args.batch_size) \
        if args.samples > 1 else fake[:0]
    per_map = torch.cat([fake[:d, None], more.view(d, args.samples - 1, *fake.shape[1:])], dim=1).double() / 255
    diversity = (per_map.std(dim=1).mean() / (held["image"].double() / 255).std()).item() if args.samples > 1 else 0.0

    # --- FID against the real held-out images; the same count of real training images sets the floor
    network = load_feature_network(args.weights)
    stats = [FeatureStats(), FeatureStats(), FeatureStats()]
    reals = train["image"][:len(fake)]
    for images, stat in ((held["image"], stats[0]), (fake, stats[1]), (reals, stats[2])):
        for start in range(0, len(images), 50):
            stat.update(network(images[start:start + 50])[0])
    fid = fid_from_stats(stats[0], stats[1])
    fid_real = fid_from_stats(stats[0], stats[2]) if len(reals) > 1 else None

    # --- picture: label map | samples | real
    rows = []
    for i in range(min(4, d)):
        shown = colourise(truth[i:i + 1], num_labels)
        samples = unit_to_uint8(per_map[i])
        rows.append(torch.cat([signed_to_uint8(shown), samples, held["image"][i:i + 1]]))
    grid = uint8_grid(torch.cat(rows), nrow=args.samples + 2)
    upscale_nearest(grid, min_side=3 * grid.height // max(1, len(rows))).save(out / "label_map.png")

    report = {"pipeline": args.pipeline, "data": args.data if args.data == "layouts" else args.path,
              "split": args.split, "size": size, "num": len(truth), "labels": list(kind.label_names),
              "miou": synth["miou"], "pixel_accuracy": synth["pixel_accuracy"],
              "miou_real": real["miou"], "pixel_accuracy_real": real["pixel_accuracy"],
              "iou": synth["iou"], "iou_real": real["iou"], "fid": fid, "fid_real_train": fid_real, "fid_network": network.identity,
              "diversity": diversity, "diversity_maps": d, "samples_per_map": args.samples,
              **sampling_report(pipe.stages), "guidance": [s.defaults.guidance_scale for s in pipe.stages]}
    write_text(out / "label_map.json", json.dumps(report, indent=2))
    emit_json(report, None)


if __name__ == "__main__":
    run_cli(main)
