"""Train a whole cascade on one photo: new images of any size from it (OUR-GAN, SinGAN / ConSinGAN, SinDDM).

    accelerate launch train/one_shot.py --image photo.jpg
    accelerate launch train/one_shot.py --image photo.jpg --config configs/one_shot.yaml fine.train.max_steps=2000
    accelerate launch train/one_shot.py --image photo.jpg --resume            # continue where it stopped
    python -m cascade generate --pipeline runs/one_shot/pipeline --size 3840x2160 --num 4 --out samples/

Three stages, one after the other, each on random crops of the photo (cascade.data.one_image):
- `scene`: the whole picture at `scene.scene.long_side` px (the photo's aspect ratio), a light fully
  convolutional denoiser trained on crops of `scene.scene.crop` of each side, with scale jitter and,
  with `scene.scene.positional`, OUR-GAN's vertical positional embedding (cascade.kinds.one_shot.Scene);
- `coarse`: an SR3 upsampler (CDM's noise and blur augmentation) from the scene to its scale;
- `fine`: an SR3 upsampler trained at every later scale up to the photo's own, repeated for larger
  outputs (cascade.one_shot).
The cascade's one_shot.json records the photo's path and sizes, and its row profile (the mean colour of each row,
which `generate` keeps by default).

Writes `<output_dir>/scene`, `coarse`, `fine` (what train/sr3.py writes for a stage: config.yaml,
logs/, samples/, checkpoints/, pipeline/) and `<output_dir>/pipeline`, the cascade. A photo larger
than `max_side` is downscaled first (cascade.data.one_image.load_photo says how memory stays bounded).
"""

import json
import time
from dataclasses import replace
from pathlib import Path

from cascade.cli.common import run_cli
from cascade.config.loading import save_config
from cascade.config.one_shot import OneShotConfig
from cascade.data.one_image import load_photo
from cascade.errors import ConfigError
from cascade.inference.one_shot import row_profile
from cascade.inference.pipeline import Pipeline
from cascade.training import parse_args, train_stage
from cascade.training.loop import process_state
from cascade.training.one_shot import training_stages

STAGES = ("scene", "coarse", "fine")


def main(argv=None):
    cfg, args = parse_args(OneShotConfig, __doc__, argv, {
        "--image": "the training photo (any format PIL reads; or `image:` in the config)"})
    image = args.image or cfg.image
    if not image:
        raise ConfigError("no training photo: pass --image photo.jpg (or set image: in the config)")
    out = Path(cfg.output_dir)
    state = process_state()  # under `accelerate launch` with several processes: one of them prints and writes

    # --- data: the photo (downscaled to max_side), then each stage's crops at its scales
    photo, original = load_photo(image, cfg.max_side)
    resized = f", downscaled to {photo.width}x{photo.height} (max_side={cfg.max_side})" if photo.size != original else ""
    state.print(f"photo: {image}, {original[0]}x{original[1]}{resized}", flush=True)
    stages = training_stages(cfg, photo, str(image))
    out.mkdir(parents=True, exist_ok=True)
    if state.is_main_process:
        save_config(replace(cfg, image=str(image)), out / "config.yaml")

    # --- train the stages in order (each exports its EMA model to <stage>/pipeline)
    seconds = {}
    for name, stage_cfg, kind, data in stages:
        state.print(f"--- {name} stage", flush=True)
        stage_cfg = replace(stage_cfg, train=replace(stage_cfg.train, output_dir=str(out / name)))
        started = time.perf_counter()
        train_stage(stage_cfg, kind, resume=args.resume, examples=data)
        seconds[name] = round(time.perf_counter() - started, 1)

    # --- the cascade: scene, coarse, fine (written in one step: cascade.io.atomic), by the process that wrote
    # each stage's export
    if not state.is_main_process:
        return
    pipe = Pipeline.from_stages([out / name / "pipeline" for name in STAGES])
    final = out / "pipeline"
    profile = (row_profile(photo) * 127.5 + 127.5).tolist()  # what `generate` keeps by default, photo or not
    pipe.save_pretrained(final, extra_files={"one_shot.json": json.dumps(
        {"image": str(image), "image_size": list(original), "trained_on": list(photo.size),
         "scene_size": list(pipe.stages[0].kind.size), "seconds": seconds,
         "row_profile": [[round(v, 2) for v in channel] for channel in profile]}, indent=2)})
    print(f"wrote {final}: scene {pipe.stages[0].kind.size[1]}x{pipe.stages[0].kind.size[0]} px, then x"
          f"{pipe.stages[1].kind.scale} and x{pipe.stages[2].kind.scale} (repeated for larger outputs); trained in "
          + ", ".join(f"{k} {v / 60:.1f} min" for k, v in seconds.items()))


if __name__ == "__main__":
    run_cli(main)
