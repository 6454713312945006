"""Classification Accuracy Score (Ravuri & Vinyals 2019; CDM table 2) of a class-conditional pipeline.

    python eval/cas.py --pipeline runs/cascade_photos --per-class 100 --out runs/cascade_photos/cas
    python eval/cas.py --pipeline runs/base_cifar10/pipeline --data cifar10 --per-class 1000 --out cas/

1. Draw `--per-class` samples of every class from the pipeline (seeded, the last stage's output or `--stage`).
2. Train a small ResNet (cascade/models/classifier.py) on those samples only.
3. Report its top-1 / top-5 accuracy on real held-out images (`--data`, split `--split`).
4. Train the same classifier, with the same seed and schedule, on as many real training images
   (split `--train-split`, balanced per class) and report its accuracy: the upper bound.
CAS near the bound means the samples carry the class information of real data; a large gap means
they miss modes or look wrong. For the built-in photos (one class per photo) the images are seeded
random crops of the pipeline's size: training crops from the left 80% of each photo, test crops
from the held-out right 20%. Both classifiers are saved under `--out` (safetensors), with cas.json;
`eval/inception_score.py --classifier OUT/classifier_real` reuses one.
"""

import argparse
import json
from pathlib import Path

from accelerate import Accelerator

from cascade.cli.common import add_sampling_arguments, apply_sampling_arguments, run_cli, sampling_report
from cascade.errors import DataError
from cascade.inference.pipeline import Pipeline
from cascade.io.atomic import write_text
from cascade.metrics.cas import classification_accuracy
from cascade.metrics.sources import collect, labelled_set, parse_source, pipeline_batches


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", required=True, help="a class-conditional pipeline folder")
    parser.add_argument("--stage", type=int, default=-1, help="classify this stage's output (default: last)")
    parser.add_argument("--per-class", type=int, default=50, help="training images per class (generated and real)")
    parser.add_argument("--data", default="photos", help="real images: `photos`, an image folder or a dataset name")
    parser.add_argument("--split", default="test", help="held-out split the accuracies are measured on")
    parser.add_argument("--train-split", default="train", help="split the real-data upper bound trains on")
    parser.add_argument("--test-per-class", type=int, help="held-out images per class (photos: crops, default 50; "
                        "others: default all)")
    parser.add_argument("--crop-scale", type=float, nargs=2, default=[0.15, 0.4], help="photos: crop side / shorter side")
    add_sampling_arguments(parser)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--width", type=int, default=32, help="classifier width (channels of its first stage)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even if a GPU is available")
    parser.add_argument("--out", required=True, help="folder for the two classifiers and cas.json")
    args = parser.parse_args(argv)
    if args.per_class < 1 or args.epochs < 1:
        parser.error("--per-class and --epochs must be >= 1")

    device = Accelerator(cpu=args.cpu).device
    pipe = Pipeline.from_pretrained(args.pipeline, device=device)
    pipe = apply_sampling_arguments(pipe, args)
    if pipe.base is None or not pipe.base.unet.config.num_classes:
        raise DataError(f"{args.pipeline}: CAS needs a class-conditional base stage")
    num_classes = pipe.base.unet.config.num_classes
    size = pipe.stages[args.stage].resolution
    crop_scale = tuple(args.crop_scale)

    # real held-out test set and real training set (the upper bound), at the pipeline's size
    test_x, test_y = labelled_set(parse_source(args.data, args.split), args.test_per_class, num_classes, size,
                              crop_scale, args.seed + 1)
    real_x, real_y = labelled_set(parse_source(args.data, args.train_split), args.per_class, num_classes, size,
                              crop_scale, args.seed + 2)
    # generated training set: per_class samples of every class
    gen_x, gen_y = collect(pipeline_batches(pipe, args.per_class * num_classes, args.batch_size, args.seed, args.stage,
                                            progress=True))

    out = Path(args.out)
    results = {}
    for name, train in {"generated": (gen_x, gen_y), "real": (real_x, real_y)}.items():
        model, results[name] = classification_accuracy(
            train, (test_x, test_y), num_classes, size, width=args.width, epochs=args.epochs,
            batch_size=args.batch_size, seed=args.seed, device=device, class_names=pipe.class_names,
            desc=f"classifier on {name}")
        model.save_pretrained(out / f"classifier_{name}")

    k5 = min(5, num_classes)
    print(f"{num_classes} classes, {args.per_class} training images per class, {len(test_x)} held-out real images "
          f"({args.data}, {args.split}), {size} px")
    print(f"| trained on | top-1 | top-{k5} |")
    print("|---|---|---|")
    for name, r in results.items():
        label = "generated (CAS)" if name == "generated" else "real (upper bound)"
        print(f"| {label} | {100 * r['top1']:.1f}% | {100 * r['top5']:.1f}% |")
    report = {"pipeline": args.pipeline, "data": args.data, "split": args.split, "num_classes": num_classes,
              "per_class": args.per_class, "test_images": len(test_x), "resolution": size, "seed": args.seed,
              **sampling_report(pipe.stages),
              "cas": results["generated"], "real": results["real"]}
    write_text(out / "cas.json", json.dumps(report, indent=2))
    print(f"wrote {out / 'cas.json'} and the classifiers {out}/classifier_generated, {out}/classifier_real")


if __name__ == "__main__":
    run_cli(main)
