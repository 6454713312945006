"""Score a one-shot cascade against its training photo, with the baselines measured the same way.

    python eval/one_shot.py --pipeline runs/one_shot/pipeline --out runs/one_shot/eval
    python eval/one_shot.py --pipeline pos=runs/one_shot/pipeline --pipeline no-pos=runs/one_shot_nopos/pipeline \
        --num 8 --out bench/one_shot_positional
    python eval/one_shot.py --pipeline runs/one_shot/pipeline --applications --out runs/one_shot/eval

Samples are drawn at the training photo's aspect ratio, `--eval-side` px on the longer side (the
photo is resized to the same size), sample i with seed `--seed` + i. Metrics (cascade.metrics.one_shot):
SIFID (SinGAN's single-image FID, mean and std over samples), diversity (SinGAN's), the nearest-patch
distance to the photo (8 px patches, RMS on 0..255) with the fraction of patches that are near-exact
copies (< 3), and layout (correlation of row-wise mean colours with the photo's).

Baselines, same size, same metrics: the training photo itself; the photo shifted by 4 px (what a
copy scores; cropped, so it is 4 px smaller); a random 4 x 4 patch shuffle of the photo (every patch real, the layout broken); and
the cascade with its scene stage replaced by a blurred copy of the photo at the scene's size (what
the upsamplers alone add). Writes OUT/metrics.md, OUT/metrics.json and OUT/samples.png (a row per
method); with --applications also OUT/applications.png: an SDEdit, an inpainting, a harmonization
(an object pasted from another photo) and generative-prior SR with the scene stage.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from cascade.cli.common import add_sampling_arguments, apply_sampling_arguments, run_cli
from cascade.data.one_image import load_photo, resize_long_side
from cascade.diffusion.augment import blur_augment
from cascade.diffusion.resize import downsample, upsample
from cascade.errors import CascadeError
from cascade.inference import one_shot
from cascade.inference.pipeline import Pipeline
from cascade.io.atomic import write_text
from cascade.io.images import (label_rows, pil_to_signed, pil_to_uint8, signed_to_pil, signed_to_unit, uint8_grid,
                               uint8_to_pil, uint8_to_signed, unit_to_uint8)
from cascade.metrics import one_shot as metrics
from cascade.metrics.inception import load_feature_network

COPY_BELOW = 3.0  # RMS (0..255) under which a patch counts as a near-exact copy


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", action="append", required=True, metavar="[NAME=]FOLDER",
                        help="a one-shot pipeline (repeatable, to compare variants trained on the same photo)")
    parser.add_argument("--image", help="the training photo (default: the one recorded in the first pipeline)")
    parser.add_argument("--num", type=int, default=8, help="samples per method")
    parser.add_argument("--eval-side", type=int, default=256, help="longer side of samples and photo, px")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blur-sigma", type=float, default=1.5, help="blurred-scene baseline: sigma, scene px")
    parser.add_argument("--applications", action="store_true", help="also draw edit/harmonize/prior-SR examples")
    parser.add_argument("--weights", help="Inception weights for SIFID (see eval/fid.py)")
    add_sampling_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    return parser.parse_args(argv)


def uint8(image: Image.Image) -> torch.Tensor:
    """PIL -> uint8 [1 x 3 x H x W]."""
    return pil_to_uint8(image)[None]


def score(network, images: list[torch.Tensor], reference: torch.Tensor) -> dict:
    """The metrics of uint8 images [1 x 3 x H x W] against the training photo at the same size."""
    sifids = [metrics.sifid(network, x, reference) for x in images]
    distances = torch.cat([metrics.nearest_patch(x, reference) for x in images])
    row = {"n": len(images), "sifid": float(np.mean(sifids)), "sifid_std": float(np.std(sifids)),
           "nearest_patch": float(distances.mean()), "copied_fraction": float((distances < COPY_BELOW).double().mean()),
           "layout": float(np.mean([metrics.layout(x, reference) for x in images]))}
    if len(images) > 1:
        row["diversity"] = metrics.diversity(torch.cat(images), reference)
    return row


def blurred_scene(pipe, photo: Image.Image, size, sigma: float, seed: int) -> torch.Tensor:
    """The baseline cascade: the scene stage replaced by the photo at the scene's size, blurred."""
    p = one_shot.plan(pipe, size)
    scene = pil_to_signed(photo.resize(p.scene[::-1], Image.BICUBIC, reducing_gap=3.0))[None]
    scene = blur_augment(scene, torch.tensor([sigma])).clamp(-1, 1)
    out = p.pipeline().upscale(signed_to_unit(scene), seed=seed, output_type="pt", progress=False)  # [0, 1]
    return unit_to_uint8(out[..., :p.size[0], :p.size[1]])


def main(argv=None):
    args = parse_args(argv)
    pipes = {}
    for item in args.pipeline:
        name, sep, folder = item.rpartition("=")
        name = name if sep else Path(folder).parent.name
        pipes[name] = apply_sampling_arguments(Pipeline.from_pretrained(folder), args)
    first = next(iter(pipes.values())).folder  # where it was read from (the Hub cache for an id)
    if not args.image and not (first and (first / "one_shot.json").is_file()):
        raise CascadeError(f"{args.pipeline[0]}: records no training photo (one_shot.json); pass --image")
    image = args.image or json.loads((first / "one_shot.json").read_text())["image"]
    photo, _ = load_photo(image, 4096)
    photo = resize_long_side(photo, args.eval_side)
    size = photo.size
    reference = uint8(photo)
    network = load_feature_network(args.weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # --- baselines, then each pipeline's samples (image i: seed + i)
    shifted = reference[..., 4:, 4:]  # the photo moved up and left by 4 px (cropped): a copy
    g = torch.Generator().manual_seed(args.seed)
    methods = {"training photo": [reference], "photo shifted 4 px": [shifted],
               "patch shuffle 4x4": [metrics.patch_shuffle(reference, 4, g) for _ in range(args.num)]}
    base_name = next(iter(pipes))
    with tqdm(total=args.num * (len(pipes) + 1), desc="sampling", unit="img") as bar:
        blurred = []
        for i in range(args.num):
            blurred.append(blurred_scene(pipes[base_name], photo, size, args.blur_sigma, args.seed + i))
            bar.update(1)
        methods[f"blurred scene + upsamplers ({base_name})"] = blurred
        for name, pipe in pipes.items():
            samples = []
            for i in range(args.num):
                samples.append(uint8(one_shot.generate(pipe, size, args.seed + i, progress=False)))
                bar.update(1)
            methods[name] = samples
    rows = {name: score(network, images, reference) for name, images in methods.items()}
    table = markdown(rows)
    print(f"{args.num} samples per method at {size[0]}x{size[1]} px; photo {image}")
    print(table)
    write_text(out / "metrics.md", table + "\n")
    write_text(out / "metrics.json", json.dumps({"image": image, "size": list(size), "num": args.num,
                                                  "seed": args.seed, "pipelines": args.pipeline, "rows": rows}, indent=2))
    picture = [(name, images[:4]) for name, images in methods.items() if name != "photo shifted 4 px"]
    write_rows(picture, out / "samples.png")
    print(f"wrote {out / 'metrics.md'}, {out / 'samples.png'}")
    if args.applications:
        applications(pipes[base_name], photo, methods[base_name][0], args.seed, out / "applications.png")


def write_rows(rows: list[tuple[str, list[torch.Tensor]]], path: Path) -> None:
    """One labelled row per method (missing cells white)."""
    h, w = rows[0][1][0].shape[-2:]
    per_row = max(len(images) for _, images in rows)
    cells = []
    for _, images in rows:
        cells += [x[0] for x in images]
        cells += [torch.full((3, h, w), 255, dtype=torch.uint8)] * (per_row - len(images))
    grid = uint8_grid(torch.stack(cells), nrow=per_row)
    label_rows(grid, [name for name, _ in rows], h, width=170).save(path)


def applications(pipe, photo: Image.Image, sample: torch.Tensor, seed: int, path: Path) -> None:
    """Rows of (input | output): SDEdit of a crude paste, inpainting, harmonization, prior SR."""
    from skimage import data as sk

    image = uint8_to_pil(sample)[0]
    W, H = image.size
    rows = []
    # SDEdit: the top-left quarter (sky) pasted low in the picture, then strength 0.55, no mask
    crude = image.copy()
    crude.paste(image.crop((0, 0, W // 3, H // 3)), (W // 2, H // 2))
    rows.append(("SDEdit s=0.55", crude, one_shot.edit(pipe, crude, 0.55, seed=seed, progress=False)))
    # inpainting: a rectangle resampled (strength 1), the rest kept exactly
    mask = np.zeros((H, W), np.int64)
    mask[H // 4:3 * H // 4, W // 3:2 * W // 3] = 1
    holed = image.copy()
    ImageDraw.Draw(holed).rectangle((W // 3, H // 4, 2 * W // 3 - 1, 3 * H // 4 - 1), fill=(128, 128, 128))
    rows.append(("inpaint (mask)", holed, one_shot.edit(pipe, image, 1.0, mask=mask, seed=seed, progress=False)))
    # harmonization: a cat's face from another photo pasted in, its square resampled at strength 0.45
    cat = Image.fromarray(sk.chelsea()).crop((90, 40, 260, 210)).resize((H // 3, H // 3), Image.BICUBIC)
    pasted = image.copy()
    left, top = W // 2 - cat.width // 2, H // 2
    pasted.paste(cat, (left, top))
    box = np.zeros((H, W), np.int64)
    box[top:top + cat.height, left:left + cat.width] = 1
    rows.append(("harmonize s=0.45", pasted, one_shot.edit(pipe, pasted, 0.45, mask=box, seed=seed, progress=False)))
    # generative-prior SR with the scene stage: the photo at half the scene's size, x2, projected every step
    scene = pipe.stages[0]
    h, w = scene.kind.size
    truth = photo.resize((w, h), Image.BICUBIC, reducing_gap=3.0)
    lowres = uint8_to_signed(uint8(truth))
    lowres = downsample(lowres, 2)
    sr = one_shot.prior_upscale(scene, lowres, 2, seed=seed, progress=False)
    error = (downsample(sr.double(), 2) - lowres.double()).abs().max().item()
    zoom = lambda x: signed_to_pil(upsample(x, (H, W)))[0]  # noqa: E731
    rows.append((f"prior SR x2 ({error:.0e})", zoom(lowres), zoom(sr)))
    cells = [pil_to_uint8(im.resize((W, H), Image.NEAREST)) for _, a, b in rows for im in (a, b)]
    grid = uint8_grid(torch.stack(cells), nrow=2)
    label_rows(grid, [name for name, _, _ in rows], H, width=150).save(path)
    print(f"wrote {path}: input | output for {', '.join(name for name, _, _ in rows)}; prior SR downsamples to its "
          f"input within {error:.1e}")


def markdown(rows: dict) -> str:
    lines = ["| method | n | SIFID | diversity | nearest patch (RMS /255) | copied patches | layout |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        div = f"{r['diversity']:.3f}" if "diversity" in r else "-"
        lines.append(f"| {name} | {r['n']} | {r['sifid']:.3f} ± {r['sifid_std']:.3f} | {div} | "
                     f"{r['nearest_patch']:.2f} | {r['copied_fraction']:.1%} | {r['layout']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)
