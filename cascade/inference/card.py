"""A pipeline that describes itself: one line per stage (`describe`, `repr(pipe)`, `python -m cascade info`),
and the model card (`model_card`: README.md with YAML metadata) that `save_pretrained` and `push_to_hub` write.

Everything comes from what the folder knows: each stage's kind, sizes, parameters, sampling settings and
where it came from (`Stage.origin`: its training run or its distillation); `samples.png` beside
cascade.json; and the evaluation reports saved in its `eval/` folder (JSON files that eval/*.py write
with `--out` or `--json`).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..diffusion.sampling import STUDENT_SAMPLERS

CARD_FILE = "README.md"
SAMPLES_FILE = "samples.png"
EVAL_FOLDER = "eval"
LIBRARY = "cascade"


def size_text(size) -> str:
    return f"{size[1]}x{size[0]}" if size else "any size"


def origin_text(origin: dict) -> str:
    """Where a stage came from, in a few words."""
    parts = []
    if "distilled" in origin:
        d = origin["distilled"]
        how = (f"rounds {' -> '.join(map(str, [2 * d['rounds'][0], *d['rounds']]))} steps" if "rounds" in d
               else f"target {d.get('target', '?')}")
        how += f", {d['phases']} phases" if d.get("phases") else ""
        how += f", critic at {d['adversarial']:g}" if d.get("adversarial") else ""
        parts.append(f"distilled ({d.get('method', '?')}, {how}, {d.get('iterations', '?')} iterations) from teacher "
                     f"{str(d.get('teacher', '?'))[:12]}")
    if "trained" in origin:
        t = origin["trained"]
        data = t.get("data")
        parts.append(f"trained {t.get('steps', '?')} steps" + (f" on {data}" if data else "")
                     + (f" ({t['seconds'] / 60:.1f} min)" if t.get("seconds") else ""))
    return "; ".join(parts) or "origin not recorded"


def stage_row(index: int, stage) -> dict:
    """The facts `describe` and the model card show for one stage."""
    kind, s = stage.kind, stage.defaults
    if kind.takes_input:
        inp = "any size" if kind.any_size else f"{stage.input_resolution}x{stage.input_resolution}"
        out = f"x{kind.scale}" if kind.any_size else size_text((stage.resolution, stage.resolution))
    else:
        inp = "-"
        out = size_text(getattr(kind, "size", None)) if kind.any_size else size_text((stage.resolution,) * 2)
    sampling = "one evaluation" if not kind.iterative else f"{s.sampler} x{s.steps}"
    extras = []
    if s.guidance_scale != 1 and stage.guided:
        extras.append(f"guidance {s.guidance_scale:g}")
    if kind.takes_input:
        extras.append(f"aug {s.aug_level:g}")
    if s.consistent:
        extras.append("consistent")
    if s.final_timestep is not None and kind.iterative and s.sampler in STUDENT_SAMPLERS:  # as the steps taken
        extras.append("t = " + ", ".join(map(str, stage.timesteps())))
    return {"stage": index, "kind": kind.name + (f" x{kind.scale}" if kind.takes_input else ""),
            "input": inp, "output": out,
            "parameters": sum(p.numel() for p in stage.unet.parameters()), "sampling": sampling,
            "settings": ", ".join(extras), "nfe": stage.network_evaluations(), "origin": origin_text(stage.origin)}


def evaluations_per_pixel(pipe) -> float:
    """Network evaluations per output pixel of the whole cascade: each stage's evaluations per image times
    the share of the output's pixels it makes (1 for the last stage, 1 / scale^2 for the one before, ...)."""
    total, share = 0.0, 1.0
    for stage in reversed(pipe.stages):
        total += stage.network_evaluations() * share
        share /= stage.kind.scale ** 2
    return total


def eval_reports(folder: str | Path | None) -> list[tuple[str, dict]]:
    """(file name, report) of the JSON reports in `folder`/eval/, sorted by name (unreadable files skipped)."""
    if folder is None or not (Path(folder) / EVAL_FOLDER).is_dir():
        return []
    reports = []
    for path in sorted((Path(folder) / EVAL_FOLDER).glob("*.json")):
        try:
            reports.append((path.name, json.loads(path.read_text())))
        except (OSError, ValueError):
            continue
    return reports


HEADLINE = ("psnr_y", "ssim_y", "fid", "hf_smooth_vs_truth", "hf_textured_vs_truth", "swd", "sifid", "diversity",
            "miou", "cas_top1", "layout")  # the numbers a report's rows are summed up by, where they have them


def report_lines(report: dict, limit: int = 12, per_row: int | None = None) -> list[str]:
    """The numbers of one report: each row's headline metrics (all its numbers without `per_row`), or its
    top-level numbers."""
    rows = report.get("rows")
    lines = []
    if isinstance(rows, dict):
        for name, row in list(rows.items())[:limit]:
            if isinstance(row, dict):
                numbers = [(k, v) for k, v in row.items() if isinstance(v, (int, float))]
                if per_row is not None:
                    numbers = [(k, v) for k, v in numbers if k in HEADLINE][:per_row] or numbers[:per_row]
                lines.append(f"{name}: " + ", ".join(f"{k} {_number(v)}" for k, v in numbers))
    numbers = ", ".join(f"{k} {_number(v)}" for k, v in report.items() if isinstance(v, (int, float)))
    return lines + ([numbers] if numbers else [])


def _number(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def describe(pipe, folder: str | Path | None = None) -> str:
    """One line per stage, after a summary line; with `folder`, the evaluation reports saved in it."""
    rows = [stage_row(i, s) for i, s in enumerate(pipe.stages)]
    total = sum(r["parameters"] for r in rows)
    where = f", {pipe.source}" if getattr(pipe, "source", None) else ""
    lines = [f"Pipeline: {len(rows)} stage{'s' * (len(rows) > 1)}{where}, {total / 1e6:.2f} M parameters, "
             f"{evaluations_per_pixel(pipe):.1f} network evaluations per output pixel"]
    for r in rows:
        size = f"{r['input']} -> {r['output']}"
        settings = f", {r['settings']}" if r["settings"] else ""
        lines.append(f"  {r['stage']}  {r['kind']:<16} {size:<22} {r['parameters'] / 1e6:5.2f} M  "
                     f"{r['sampling']}{settings} ({r['nfe']} NFE)  {r['origin']}")
    for name, report in eval_reports(folder):
        lines.append(f"  eval/{name}: " + "; ".join(report_lines(report, limit=4, per_row=4)))
    return "\n".join(lines)


def pipeline_tag(pipe) -> str:
    """The Hub's task for the cascade: image-to-image when its first stage takes an image (an upscaler or
    a label map), unconditional image generation otherwise (class labels are the only input)."""
    first = pipe.stages[0].kind
    return "image-to-image" if first.takes_input or first.uses_label_maps else "unconditional-image-generation"


def tags(pipe) -> list[str]:
    names = {s.kind.name for s in pipe.stages}
    found = ["cascade", "diffusion", "cascaded-diffusion"]
    found += ["super-resolution", "sr3"] if names & {"sr3", "label_sr3", "one_shot_sr3", "regression"} else []
    found += ["label-to-image", "semantic-image-synthesis"] if names & {"label_map", "label_sr3"} else []
    found += ["single-image-generation"] if "scene" in names else []
    found += ["class-conditional"] if pipe.stages[0].unet.config.num_classes else []
    found += ["distilled", "few-step"] if any("distilled" in s.origin for s in pipe.stages) else []
    return found


def model_card(pipe, repo_id: str | None = None, folder: str | Path | None = None, license: str = "apache-2.0",
               name: str | None = None) -> str:
    """README.md with YAML metadata (library, task, license, tags) and what `folder` holds (eval reports, a
    sample grid); titled `repo_id`, else `name`."""
    import yaml

    rows = [stage_row(i, s) for i, s in enumerate(pipe.stages)]
    name = repo_id or name or (Path(folder).name if folder else "a cascade")
    meta = {"library_name": LIBRARY, "pipeline_tag": pipeline_tag(pipe), "license": license, "tags": tags(pipe)}
    lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", "", f"# {name}", "",
             f"A {len(rows)}-stage cascaded diffusion pipeline (CDM with SR3 upsamplers) made with `cascade`: "
             f"{sum(r['parameters'] for r in rows) / 1e6:.2f} M parameters, {evaluations_per_pixel(pipe):.1f} network "
             f"evaluations per output pixel.", "", "## Stages", "",
             "| stage | kind | input | output | parameters | sampler | settings | NFE | origin |",
             "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['stage']} | {r['kind']} | {r['input']} | {r['output']} | {r['parameters'] / 1e6:.2f} M | "
              f"{r['sampling']} | {r['settings'] or '-'} | {r['nfe']} | {r['origin']} |" for r in rows]
    training = [(i, s.origin["trained"]) for i, s in enumerate(pipe.stages) if "trained" in s.origin]
    if training:
        lines += ["", "## Training", ""]
        for i, t in training:
            config = t.get("config", {})
            train = config.get("train", {})
            lines.append(f"- stage {i}: {t.get('steps', '?')} steps at batch {train.get('batch_size', '?')}, "
                         f"learning rate {train.get('lr', '?')}, data: {t.get('data', '?')}"
                         + (f"; config `{t['preset']}`" if t.get("preset") else ""))
    reports = eval_reports(folder)
    if reports:
        lines += ["", "## Evaluation", ""]
        for file, report in reports:
            lines.append(f"`eval/{file}`:")
            lines += [f"- {line}" for line in report_lines(report)]
            lines.append("")
    if folder is not None and (Path(folder) / SAMPLES_FILE).is_file():
        lines += ["", "## Samples", "", f"![samples]({SAMPLES_FILE})"]
    lines += ["", "## Use it", "", "```python", *_use_lines(pipe, repo_id or name), "```", "",
              f"Or from the command line: `python -m cascade info {repo_id or name}`, "
              f"`python -m cascade {_command(pipe)} --pipeline {repo_id or name}`.", ""]
    return "\n".join(lines)


def _use_lines(pipe, name: str) -> list[str]:
    """Python that loads the pipeline and runs it on what its first stage takes."""
    first = pipe.stages[0]
    load = f'pipe = Pipeline.from_pretrained("{name}")'
    if first.kind.name == "scene":
        return ["from cascade import Pipeline", "from cascade.one_shot import generate", "", load,
                "image = generate(pipe, (1920, 1080), seed=0)   # any size"]
    if first.kind.takes_input:
        return ["from PIL import Image", "from cascade import Pipeline", "", load,
                'image = pipe.upscale(Image.open("photo.png"), seed=0)[0]']
    if first.kind.uses_label_maps:
        return ["from cascade import Pipeline", "", load, 'photos = pipe(label_maps="labels.png", num_images=2, seed=0)']
    if first.unet.config.num_classes:
        return ["from cascade import Pipeline", "", load, f"images = pipe(class_labels={first.class_names[:2] or [0, 1]!r}, seed=0)"]
    return ["from cascade import Pipeline", "", load, "images = pipe(num_images=2, seed=0)"]


def _command(pipe) -> str:
    first = pipe.stages[0].kind
    if first.name == "scene":
        return "generate --size 1920x1080 --num 4 --out samples"
    if first.uses_label_maps:
        return "synthesize labels.png photo.png"
    return "upscale in.png out.png" if any(s.kind.takes_input for s in pipe.stages) else "info"
