"""FID between two image sources, with the reference Inception network, offline.

    python eval/fid.py runs/cascade_photos photos --num-samples 500 --crops     # samples vs held-out crops
    python eval/fid.py path/to/generated/ cifar10 --split test                   # a folder vs a hub dataset
    python eval/fid.py runs/base_cifar10/pipeline cifar10 --split train --num-samples 50000
    python eval/fid.py my_images/ ref_stats.npz                                  # against saved statistics
    python eval/fid.py photos photos --split-a train --num-samples 500 --crops --size 64   # real vs real

A and B are each a pipeline folder (sampled class-balanced and seeded; `--stage` picks an
intermediate stage), an image folder, `photos` (the built-in photos), a `datasets` hub name, or an
`.npz` with `mu` and `sigma`. Statistics of real sources are cached (`--stats-dir`) keyed by the
source, the options and the network's file hash, and reused on the next run.

Output: a table (FID, the image count of each side, the feature network's file and SHA-256) and
the same as JSON (`--json`). Lower is better; 0 means identical feature statistics. FID depends on
the number of images (it is biased upwards for small N): compare numbers only at equal N, and with
the same network hash. Features: the TF Inception graph of 2015-12-05 (see cascade/metrics/inception.py).
"""

import argparse

from accelerate import Accelerator

from cascade.cli.common import add_source_arguments, emit_json, run_cli, source_options
from cascade.metrics.extract import default_cache_dir, extract
from cascade.metrics.inception import load_feature_network
from cascade.metrics.scores import fid_from_stats
from cascade.metrics.sources import parse_source


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="first source")
    parser.add_argument("b", help="second source (usually the real reference)")
    add_source_arguments(parser)
    parser.add_argument("--split-a", help="split of A only (default: --split)")
    parser.add_argument("--split-b", help="split of B only (default: --split)")
    parser.add_argument("--stats-dir", default=str(default_cache_dir()), help="cache of real-image statistics")
    parser.add_argument("--no-cache", action="store_true", help="neither read nor write cached statistics")
    parser.add_argument("--json", help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    if args.crops and not args.num_samples:
        parser.error("--crops needs --num-samples")

    device = Accelerator(cpu=args.cpu).device
    network = load_feature_network(args.weights, device)
    specs = [parse_source(args.a, args.split_a or args.split), parse_source(args.b, args.split_b or args.split)]
    opts = source_options(args, device, specs)
    results = [extract(spec, network, opts, cache_dir=None if args.no_cache else args.stats_dir, label=name)
               for spec, name in zip(specs, "AB")]
    fid = fid_from_stats(results[0].stats, results[1].stats)

    print("| set | source | images | statistics |")
    print("|---|---|---|---|")
    for name, r in zip("AB", results):
        origin = f"reused {r.cached}" if r.reused else (f"saved {r.cached}" if r.cached else "computed")
        print(f"| {name} | {r.description} | {r.stats.count} | {origin} |")
    print(f"\nFID = {fid:.4f}   (network: {network.identity})")
    report = {"fid": fid, "a": {"source": args.a, "description": results[0].description, "count": results[0].stats.count},
              "b": {"source": args.b, "description": results[1].description, "count": results[1].stats.count},
              "network": {"file": network.path, "sha256": network.sha256}}
    emit_json(report, args.json)


if __name__ == "__main__":
    run_cli(main)
