"""Distil a trained stage, or every stage of a pipeline, into a few-step student (1-8 network evaluations).

    accelerate launch train/distill.py --teacher runs/sr3_photos/pipeline
    accelerate launch train/distill.py --teacher runs/sr3_photos/pipeline --config configs/distill_sr3_photos.yaml
    accelerate launch train/distill.py --teacher runs/sr3_photos/pipeline distill.target=data train.max_steps=3000
    accelerate launch train/distill.py --teacher runs/one_shot/pipeline          # every stage: a one-shot student
    accelerate launch train/distill.py --teacher runs/sr3_photos/pipeline --resume  # continue where it stopped
    accelerate launch train/distill.py --teacher runs/sr3_photos/pipeline distill.method=progressive  # 64 -> 4 DDIM
    python -m cascade upscale photo.png big.png --pipeline runs/sr3_photos_distilled/pipeline   # 4 evaluations

The student starts as the teacher and learns its consistency function on the 50-point grid that diffusers'
LCMScheduler samples from: one DDIM step of the teacher (`distill.target=teacher`, its guidance baked in), or
the clean example noised again (`distill.target=data`); pseudo-Huber loss (cascade.training.distill). Or, with
`distill.method=progressive`, it learns two of the teacher's DDIM steps per step of its own, halving the steps
each round from `distill.start_steps` (64) to `distill.steps`, `train.max_steps` iterations a round (the default
1000 makes 4000 for 64 -> 4; 400 a round took 24 min for the demo SR stage). Its data
are the teacher's own, as its stage.json records them (or the config's `data` section).

Writes to `train.output_dir` (default runs/<teacher>_distilled, progressive runs/<teacher>_progressive): for a
one-stage teacher what every training script writes (config.yaml, logs/, samples/, checkpoints/, pipeline/, the
student as a one-stage pipeline whose stage.json samples with `lcm` (phased, `distill.phases`: `pcm`; progressive:
`ddim`) at `distill.steps` and records its teacher; a progressive run's earlier rounds in rounds/<steps>_steps/,
each such a folder); for several stages one such folder per distilled stage (stage_0/, ...) and pipeline/: the
teacher's cascade with its students in place.
"""

import json
from dataclasses import replace
from pathlib import Path

from cascade.cli.common import run_cli
from cascade.config.distill import DistillConfig
from cascade.errors import ConfigError
from cascade.inference.pipeline import Pipeline
from cascade.training import parse_args
from cascade.training.distill import distill_stage
from cascade.training.loop import process_state


def default_output(teacher: str, method: str = "consistency") -> str:
    """runs/<name>_distilled for a teacher runs/<name>/pipeline (or runs/<name>, or a Hub id org/<name>);
    runs/<name>_progressive for progressive distillation (so neither run resumes the other's folder)."""
    path = Path(teacher)
    name = path.parent.name if path.name == "pipeline" else path.name
    return str(Path("runs") / f"{name}_{'progressive' if method == 'progressive' else 'distilled'}")


def main(argv=None):
    cfg, args = parse_args(DistillConfig, __doc__, argv, {
        "--teacher": "the teacher: a pipeline folder or a Hub id (or `teacher:` in the config)"})
    source = args.teacher or cfg.teacher
    if not source:
        raise ConfigError("no teacher: pass --teacher runs/STAGE/pipeline (or set teacher: in the config)")
    teacher = Pipeline.from_pretrained(source)
    indices = cfg.stages if cfg.stages is not None else list(range(len(teacher.stages)))
    bad = [i for i in indices if i >= len(teacher.stages)]
    if bad:
        raise ConfigError(f"stages={cfg.stages}: {source} has stages 0..{len(teacher.stages) - 1}")
    out = Path(cfg.train.output_dir or default_output(source, cfg.distill.method))
    cfg = replace(cfg, teacher=str(source), train=replace(cfg.train, output_dir=str(out)))

    # --- one student per stage (a one-stage teacher: the output folder itself holds it)
    state = process_state()  # under `accelerate launch` with several processes: one of them prints and writes
    stages = list(teacher.stages)
    for i in indices:
        folder = out if len(teacher.stages) == 1 else out / f"stage_{i}"
        state.print(f"--- stage {i} ({teacher.stages[i].kind.name}) -> {folder}", flush=True)
        stages[i] = distill_stage(teacher.stages[i], cfg, folder, resume=args.resume, teacher_source=str(source),
                                  data=cfg.data)

    # --- several stages: the teacher's cascade with its students in place (and what it records of a one-shot photo)
    if len(teacher.stages) > 1 and state.is_main_process:  # one writer (it measured the students' ERFs)
        kept = teacher.folder / "one_shot.json" if teacher.folder else None
        extra = {"one_shot.json": kept.read_text()} if kept and kept.is_file() else None
        Pipeline(stages).save_pretrained(out / "pipeline", extra_files=extra)
        print(f"wrote {out / 'pipeline'}: {len(stages)} stages, students at {', '.join(map(str, indices))}")
    state.print(json.dumps({"student": str(out / "pipeline"), "stages": indices}))


if __name__ == "__main__":
    run_cli(main)
