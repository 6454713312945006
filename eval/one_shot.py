"""Score a one-shot cascade against its training photo, with the baselines measured the same way.

    python eval/one_shot.py --pipeline runs/one_shot/pipeline --out runs/one_shot/eval
    python eval/one_shot.py --pipeline pos=runs/one_shot/pipeline --pipeline no-pos=runs/one_shot_nopos/pipeline \
        --num 16 --out bench/one_shot_positional
    python eval/one_shot.py --pipeline runs/one_shot/pipeline --applications --out runs/one_shot/eval

SinGAN's protocol: samples drawn at the training photo's aspect ratio, `--eval-side` (250) px on the longer side,
the photo resized to the same size, sample i with seed `--seed` + i, `--num` (16) per method. Metrics
(cascade.metrics.one_shot): SIFID at the paper's layer (Conv2d_4a_3x3, before the second pooling, 192
channels) and at SinGAN's code's (Conv2d_2b_3x3, 64), mean and std over samples, with the weights named in the
report; diversity (SinGAN's, on intensity) and its LPIPS-free pairwise alternative; the nearest-patch distance
to the photo (8 px patches, RMS on 0..255) with the fraction of near-exact copies (< 3); layout (correlation of
row-wise mean colours with the photo's); the largest shift of a channel's mean from the photo's; the detail in
each of the three finest octaves over the photo's (`octave_energy`: below 1 soft, above 1 grain).

Baselines, same size, same metrics: the training photo itself; the photo shifted by 4 px (what a copy scores;
cropped, so it is 4 px smaller); the photo mirrored left to right (what a copy scores that a scene trained on
flipped crops may draw: the Inception features are not mirror-invariant, so SIFID is not); the photo under a
Gaussian blur of 0.5 and 1 px (every pixel in place, the finest detail lost); a random 4 x 4 and 8 x 8 patch
shuffle of the photo (every patch real, the layout broken); a row shuffle (each row's pixels in random order: the
layout kept exactly, so its diversity is about what a sampler that keeps each row's colours can reach); and the
cascade with its scene stage replaced by a blurred copy of the photo at the scene's size (what the upsamplers
alone add); the same with the photo sharp, and the last upsampler alone from the photo at its input size (what the
cascade scores with a perfect scene, or with every stage before its last perfect: the upsamplers' ceiling).
`--from-photo-at S ...` adds rows with each pipeline's scene started from the photo noised
to strength S (SinGAN's generation from a coarser scale). Each keeps the photo's row profile, as `generate` does by
default; `--free-rows` adds each with the scene's rows free. Also the scene stage's colours: the photo at the
scene's size, the crops the stage was trained on, and its scenes (where a colour shift comes from).
Writes OUT/metrics.md, OUT/metrics.json and OUT/samples.png (a row per method); with --applications also
OUT/applications.png: an SDEdit, an inpainting, a harmonization (an object pasted from another photo) and
generative-prior SR with the scene stage, with the inpainting's edge measured.
"""

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from cascade.bench.reports import markdown_table
from cascade.cli.common import add_sampling_arguments, apply_sampling_arguments, run_cli
from cascade.data.one_image import load_photo, one_image_data, resize_long_side
from cascade.diffusion.augment import blur_augment
from cascade.diffusion.resize import downsample, upsample
from cascade.errors import CascadeError
from cascade.inference import one_shot
from cascade.inference.pipeline import Pipeline
from cascade.io.atomic import save_image, write_text
from cascade.io.images import (label_rows, pil_to_uint8, signed_to_pil, signed_to_unit, uint8_grid,
                               uint8_to_signed, unit_to_uint8)
from cascade.metrics import one_shot as metrics
from cascade.metrics.colour import colour_shift, colour_stats

COPY_BELOW = 3.0  # RMS (0..255) under which a patch counts as a near-exact copy


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", action="append", required=True, metavar="[NAME=]FOLDER",
                        help="a one-shot pipeline (repeatable, to compare variants trained on the same photo)")
    parser.add_argument("--image", help="the training photo (default: the one recorded in the first pipeline)")
    parser.add_argument("--num", type=int, default=16, help="samples per method")
    parser.add_argument("--eval-side", type=int, default=250, help="longer side of samples and photo, px (SinGAN: 250)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blur-sigma", type=float, default=1.5, help="blurred-scene baseline: sigma, scene px")
    parser.add_argument("--from-photo-at", type=float, nargs="+", default=[], metavar="STRENGTH",
                        help="also score each pipeline with its scene started from the photo at these strengths "
                             "(SinGAN's generation from a coarser scale; cascade.inference.one_shot.generate)")
    parser.add_argument("--free-rows", action="store_true", help="also score each pipeline (from noise and at each "
                        "--from-photo-at strength) with the scene's rows free (generate's keep_rows=False; by default "
                        "they keep the photo's row profile)")
    parser.add_argument("--applications", action="store_true", help="also draw edit/harmonize/prior-SR examples")
    parser.add_argument("--sifid-weights", help="torchvision's ImageNet Inception-v3 state dict for SIFID (SinGAN's "
                        "weights; default: found in torch hub's cache, else the FID weights: the report names them)")
    add_sampling_arguments(parser)
    parser.add_argument("--out", required=True, help="output folder")
    return parser.parse_args(argv)


def uint8(image: Image.Image) -> torch.Tensor:
    """PIL -> uint8 [1 x 3 x H x W]."""
    return pil_to_uint8(image)[None]


def score(network, images: list[torch.Tensor], reference: torch.Tensor) -> dict:
    """The metrics of uint8 images [1 x 3 x H x W] against the training photo at the same size: SIFID at the
    paper's layer (Conv2d_4a_3x3) and at SinGAN's code's (Conv2d_2b_3x3), nearest patches, layout, colour."""
    sifids = [metrics.sifid(network, x, reference) for x in images]
    sifids_64 = [metrics.sifid(network, x, reference, layer="Conv2d_2b_3x3") for x in images]
    distances = torch.cat([metrics.nearest_patch(x, reference) for x in images])
    shift = colour_shift(colour_stats(torch.cat(images)), colour_stats(reference)) if images[0].shape == reference.shape \
        else {"mean": float("nan")}
    row = {"n": len(images), "sifid": float(np.mean(sifids)), "sifid_std": float(np.std(sifids)),
           "sifid_64": float(np.mean(sifids_64)), "sifid_64_std": float(np.std(sifids_64)),
           "nearest_patch": float(distances.mean()), "copied_fraction": float((distances < COPY_BELOW).double().mean()),
           "layout": float(np.mean([metrics.layout(x, reference) for x in images])), "colour_mean_shift": shift["mean"],
           "octaves": (metrics.octave_energy(torch.cat(images)).mean(0) / metrics.octave_energy(reference)[0]).tolist()}
    if len(images) > 1:
        row["diversity"] = metrics.diversity(torch.cat(images), reference)
        row["pairwise"] = metrics.pairwise(torch.cat(images), reference)
    return row


def blurred_photo(reference: torch.Tensor, sigma: float) -> torch.Tensor:
    """The photo (uint8 [1 x 3 x H x W]) under a Gaussian blur of `sigma` px: what a loss of the finest detail alone
    costs in each metric (a texture-like photo's SIFID is far more sensitive to it than to rearrangement)."""
    return blur_augment(reference.double(), sigma).round().clamp(0, 255).to(torch.uint8)


def from_photo(pipe, photo: Image.Image, size, seed: int, sigma: float = 0.0, last: int | None = None) -> torch.Tensor:
    """The cascade with its scene stage (or, with `last`, every stage before its last `last` upsamplers) replaced by
    the photo at that stage's output size, under a Gaussian blur of `sigma` px there (0: sharp)."""
    p = one_shot.plan(pipe, size)
    start = 1 if last is None else len(p.upsamplers) + 1 - last  # the first upsampler to run, as a stage index
    scale = math.prod(s.kind.scale for s in p.upsamplers[start - 1:])
    x = one_shot.photo_at(photo, (p.full[0] // scale, p.full[1] // scale))
    x = blur_augment(x, torch.tensor([sigma])).clamp(-1, 1)
    out = p.pipeline().upscale(signed_to_unit(x), seed=seed, start_at=start, output_type="pt", progress=False)  # [0, 1]
    return unit_to_uint8(out[..., :p.size[0], :p.size[1]])


def scene_colour(pipe, photo: Image.Image, num: int, seed: int) -> dict:
    """Where the scene stage's colours come from: the mean and std of each channel (0..255) of the photo at the
    scene's size, of 1024 of the crops the stage was trained on (rebuilt from the recipe its stage.json keeps;
    absent for stages without one), and of `num` scenes drawn with its sampling settings and free rows (the stage's
    own colours)."""
    stage = one_shot.scene_stage(pipe)
    p = one_shot.plan(pipe, photo.size)
    stats = lambda x: {"mean": (x.mean((0, 2, 3)) * 127.5 + 127.5).tolist(),  # noqa: E731
                       "std": (x.std((2, 3)).mean(0) * 127.5).tolist()}
    rows = {"photo at the scene's size": stats(one_shot.photo_at(photo, p.scene))}
    recipe = stage.origin.get("trained", {}).get("recipe")
    try:
        crops = one_image_data(recipe).crops if recipe else None
    except (CascadeError, ValueError):  # its training photo is not on this machine (a pipeline from the Hub)
        crops = None
    if crops is not None:
        rows["training crops (1024)"] = stats(torch.stack([crops[i]["image"] for i in range(1024)]))
    s = stage.settings(None)
    scenes = torch.cat([one_shot.draw_scene(p, seed + i, progress=False) for i in range(num)])
    rows[f"scenes, rows free ({s.sampler} {s.steps}, {num})"] = stats(scenes)
    return rows


def main(argv=None):
    args = parse_args(argv)
    for s in args.from_photo_at:
        if not 0 <= s < 1 or args.from_photo_at.count(s) > 1:
            raise CascadeError(f"--from-photo-at {s:g}: strengths must be in [0, 1), each once")
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
    network, weights = metrics.sifid_network(args.sifid_weights)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # --- baselines, then each pipeline's samples (image i: seed + i)
    shifted = reference[..., 4:, 4:]  # the photo moved up and left by 4 px (cropped): a copy
    g = torch.Generator().manual_seed(args.seed)
    methods = {"training photo": [reference], "photo shifted 4 px": [shifted], "photo mirrored": [reference.flip(-1)],
               **{f"photo blurred, sigma {s:g} px": [blurred_photo(reference, s)] for s in (0.5, 1)},
               **{f"patch shuffle {n}x{n}": [metrics.patch_shuffle(reference, n, g) for _ in range(args.num)]
                  for n in (4, 8)},
               "row shuffle": [metrics.row_shuffle(reference, g) for _ in range(args.num)]}
    base_name = next(iter(pipes))
    blurred = f"blurred scene + upsamplers ({base_name})"
    references = {blurred: dict(sigma=args.blur_sigma),  # the cascade from the photo
                  f"photo at the scene's size + upsamplers ({base_name})": {}}
    if len(one_shot.plan(pipes[base_name], size).upsamplers) > 1:
        references[f"photo at half size + last upsampler ({base_name})"] = dict(last=1)
    # in the table, not in samples.png
    left_out = (set(methods) | set(references)) - {"training photo", "patch shuffle 4x4", blurred}
    keeps = [True, False] if args.free_rows else [True]
    variants = [(strength, keep) for strength in [1.0, *args.from_photo_at] for keep in keeps]
    with tqdm(total=args.num * (len(pipes) * len(variants) + len(references)), desc="sampling", unit="img") as bar:
        for label, how in references.items():
            methods[label] = []
            for i in range(args.num):
                methods[label].append(from_photo(pipes[base_name], photo, size, args.seed + i, **how))
                bar.update(1)
        for name, pipe in pipes.items():
            for strength, keep in variants:
                samples = []
                for i in range(args.num):
                    samples.append(uint8(one_shot.generate(pipe, size, args.seed + i, progress=False, photo=photo,
                                                           strength=strength, keep_rows=keep)))
                    bar.update(1)
                label = name if strength == 1 else f"{name}, scene from the photo at s={strength:g}"
                methods[label + ("" if keep else ", rows free")] = samples
    rows = {name: score(network, images, reference) for name, images in methods.items()}
    colours = scene_colour(pipes[base_name], photo, args.num, args.seed)
    table = markdown(rows) + f"\n\nThe scene stage's colours ({base_name}), per channel, 0..255:\n\n" + markdown_table(
        ["", "mean R, G, B", "std R, G, B"],
        [[name, ", ".join(f"{v:.1f}" for v in c["mean"]), ", ".join(f"{v:.1f}" for v in c["std"])]
         for name, c in colours.items()])
    print(f"{args.num} samples per method at {size[0]}x{size[1]} px; photo {image}; SIFID weights: {weights}")
    print(table)
    picture = [(name, images[:4]) for name, images in methods.items() if name not in left_out]
    write_rows(picture, out / "samples.png")
    edits = applications(pipes[base_name], photo, args.seed, out / "applications.png") if args.applications else {}
    write_text(out / "metrics.md", table + "\n")
    write_text(out / "metrics.json", json.dumps({"image": image, "size": list(size), "num": args.num, "seed": args.seed,
                                                  "pipelines": args.pipeline, "sifid_weights": weights,
                                                  "sifid_layers": [metrics.SIFID_LAYER, "Conv2d_2b_3x3"], "rows": rows,
                                                  "scene_colour": colours, "applications": edits}, indent=2))
    print(f"wrote {out / 'metrics.md'}, {out / 'samples.png'}")


def write_rows(rows: list[tuple[str, list[torch.Tensor]]], path: Path) -> None:
    """One labelled row per method (missing cells white)."""
    h, w = rows[0][1][0].shape[-2:]
    per_row = max(len(images) for _, images in rows)
    cells = []
    for _, images in rows:
        cells += [x[0] for x in images]
        cells += [torch.full((3, h, w), 255, dtype=torch.uint8)] * (per_row - len(images))
    grid = uint8_grid(torch.stack(cells), nrow=per_row)
    save_image(label_rows(grid, [name for name, _ in rows], h, width=170), path)


def applications(pipe, photo: Image.Image, seed: int, path: Path, resample: int = 4) -> dict:
    """Rows of (input | output) on the photo: SDEdit of a crude paste, inpainting without and with RePaint's
    resampling (the edge measured: cascade.metrics.one_shot.edge_ratio), harmonization of a pasted object,
    prior SR. Returns their numbers."""
    from skimage import data as sk

    image = photo
    W, H = image.size
    rows, numbers = [], {}
    # SDEdit: the top-left third (sky) pasted low in the picture, then strength 0.55, no mask
    crude = image.copy()
    crude.paste(image.crop((0, 0, W // 3, H // 3)), (W // 2, H // 2))
    rows.append(("SDEdit s=0.55", crude, one_shot.edit(pipe, crude, 0.55, seed=seed, progress=False)))
    # inpainting: a rectangle redrawn (strength 1), the rest kept exactly; one step at a time, then RePaint's
    mask = np.zeros((H, W), np.int64)
    mask[H // 4:3 * H // 4, W // 3:2 * W // 3] = 1
    holed = image.copy()
    ImageDraw.Draw(holed).rectangle((W // 3, H // 4, 2 * W // 3 - 1, 3 * H // 4 - 1), fill=(128, 128, 128))
    for r in (1, resample):
        out = one_shot.edit(pipe, image, 1.0, mask=mask, seed=seed, resample=r, progress=False)
        numbers[f"inpaint_edge_ratio_resample_{r}"] = metrics.edge_ratio(uint8(out), uint8(image), torch.from_numpy(mask))
        rows.append((f"inpaint r={r}: {numbers[f'inpaint_edge_ratio_resample_{r}']:.2f}", holed, out))
    # harmonization: a cat's face from another photo pasted in, redrawn at the finest two scales and at all
    cat = Image.fromarray(sk.chelsea()).crop((90, 40, 260, 210)).resize((H // 3, H // 3), Image.BICUBIC)
    pasted = image.copy()
    left, top = W // 2 - cat.width // 2, H // 2
    pasted.paste(cat, (left, top))
    box = np.zeros((H, W), np.int64)
    box[top:top + cat.height, left:left + cat.width] = 1
    inside = torch.from_numpy(box == 1)
    luma = lambda im: float(metrics.intensity(uint8(im))[0][inside].mean())  # noqa: E731
    rgb = lambda im: [round(float(v), 1) for v in uint8(im)[0][:, inside].double().mean(1)]  # noqa: E731
    numbers.update(harmonize_object_luma_before=luma(pasted), harmonize_photo_luma_there=luma(image),
                   harmonize_object_rgb_before=rgb(pasted))
    for stages, name in ((2, "fine 2"), (None, "all")):  # the default redraws every scale (cascade.one_shot.harmonize)
        harmonized = one_shot.harmonize(pipe, pasted, box, stages=stages, seed=seed, progress=False)
        key = "harmonize" if stages is None else "harmonize_finest_2"
        numbers.update({f"{key}_object_luma_after": luma(harmonized), f"{key}_object_rgb_after": rgb(harmonized)})
        rows.append((f"harmonize {name}", pasted, harmonized))
    # generative-prior SR with the scene stage: the photo at half the scene's size, x2, projected every step
    scene = pipe.stages[0]
    h, w = scene.kind.size
    truth = photo.resize((w, h), Image.BICUBIC, reducing_gap=3.0)
    lowres = downsample(uint8_to_signed(uint8(truth)), 2)
    sr = one_shot.prior_upscale(scene, lowres, 2, seed=seed, progress=False)
    numbers["prior_sr_error"] = (downsample(sr.double(), 2) - lowres.double()).abs().max().item()
    zoom = lambda x: signed_to_pil(upsample(x, (H, W)))[0]  # noqa: E731
    rows.append(("prior SR x2", zoom(lowres), zoom(sr)))
    cells = [pil_to_uint8(im.resize((W, H), Image.NEAREST)) for _, a, b in rows for im in (a, b)]
    grid = uint8_grid(torch.stack(cells), nrow=2)
    save_image(label_rows(grid, [name for name, _, _ in rows], H, width=170), path)
    print(f"wrote {path}: input | output for {', '.join(name for name, _, _ in rows)}; " + ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in numbers.items()))
    return numbers


def zero(value: float) -> float:
    """0 for what rounds to zero at 3 decimals (a SIFID of the photo with itself is ~ -1e-9 after sqrtm)."""
    return 0.0 if abs(value) < 5e-4 else value


def markdown(rows: dict) -> str:
    cells = []
    for name, r in rows.items():
        div = lambda key: f"{r[key]:.3f}" if key in r else "-"  # noqa: E731
        cells.append([name, r["n"], f"{zero(r['sifid']):.3f} ± {r['sifid_std']:.3f}", f"{zero(r['sifid_64']):.3f}", div("diversity"),
                      div("pairwise"), f"{r['nearest_patch']:.2f}", f"{r['copied_fraction']:.1%}", f"{r['layout']:.3f}",
                      f"{r['colour_mean_shift']:.1f}", ", ".join(f"{v:.2f}" for v in r["octaves"])])
    return markdown_table(["method", "n", "SIFID (4a, 192)", "SIFID (2b, 64)", "diversity", "pairwise",
                           "nearest patch (RMS /255)", "copied patches", "layout", "colour shift /255",
                           "detail / photo's (octaves 1, 2, 3)"], cells)


if __name__ == "__main__":
    run_cli(main)
