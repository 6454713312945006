"""Train a label-map stage: label map (class IDs) in, photo out, the job of pix2pixHD (cascade.kinds.labels.LabelMap).

    accelerate launch train/label_map.py --config configs/labels_base.yaml          # the base stage
    accelerate launch train/label_map.py --config configs/labels_sr.yaml            # an upsampler after it
    accelerate launch train/label_map.py --config configs/labels_cityscapes_256.yaml data.path=~/cityscapes_pairs
    python -m cascade assemble runs/labels_layouts runs/labels_base/pipeline runs/labels_sr/pipeline

A config without an `sr:` section trains a base stage, which generates an image of the label map's
size; with one, an SR3 upsampler (CDM's noise and blur augmentation of the low-res input) that also
sees the map. Either way the UNet embeds each pixel's label ID (`model.num_labels`,
`model.label_embed_dim`), `model.use_instances` adds pix2pixHD's instance-boundary channel, and
`train.label_dropout` trains the null map that classifier-free guidance needs.

Data (`data.source`): `layouts`, the built-in offline pairs, or `paired`, a folder with images/,
labels/ and optionally instances/ (cascade.data.paired). Writes what train/base.py writes; the
previews are rows of held-out (label map | sample | truth).
"""

from cascade.cli.common import run_cli
from cascade.config.stages import LabelStageConfig
from cascade.kinds.labels import label_kind
from cascade.training import parse_args, train_stage


def main(argv=None):
    cfg, args = parse_args(LabelStageConfig, __doc__, argv)
    train_stage(cfg, label_kind(cfg), resume=args.resume)  # data, model, loss, previews, loop, export


if __name__ == "__main__":
    run_cli(main)
