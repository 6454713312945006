"""`upscale_to_file`: one image through a pipeline's upsamplers into an image file of any size.

Host memory stays bounded (cascade.inference.streamed.engine keeps the full-size state in a state folder and
writes the output as it is produced), long runs can be continued, and `accelerate launch` with
N processes shares every step's tiles among them (the output is the one-process output, bit for
bit). The state folder:

- default: a fresh folder in the system's temporary directory, removed when the upscale ends,
  also when it fails or is stopped with Ctrl-C or SIGTERM;
- `state_dir`: kept when the upscale is interrupted, so that `resume=True` continues after the last
  completed step (removed after success). A resume checks that the input, the weights and every
  setting are those the state was made with.

    from cascade.giant import upscale_to_file
    upscale_to_file(pipe, Image.open("photo.png"), "photo_16k.png", tile_size=256)
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import signal
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...config.sections import SampleConfig
from ...errors import CascadeError, DataError
from ...io.images import pad_to_multiple, signed_to_uint8, user_images_to_signed
from ...models.weights import weights_hash
from ..pipeline import input_multiple
from .engine import Processes, StreamedStage, history_copies
from .files import check_writable, write_bands
from .state import StateFolder

STREAM_ABOVE = 4096 * 4096  # `python -m cascade upscale` streams outputs with more pixels than this


def upscale_to_file(pipe, image, path: str | Path, *, seed: int = 0, start_at: int | None = None,
                    steps: int | None = None, aug_level: float | None = None, consistent: bool | None = None,
                    settings: dict | None = None, size: tuple[int, int] | None = None, tile_size: int = 256,
                    overlap: int | None = None, tile_batch: int = 8, state_dir: str | Path | None = None, resume: bool = False,
                    storage: str = "disk", crop: tuple[int, int] | None = None, progress: bool = True) -> dict:
    """Upscale `image` (one image, any form `Pipeline.upscale` takes) with the upsamplers from
    `start_at` into `path` (.png or .tif). `size` (width, height): the output size; the input is
    first resized (antialiased bicubic) to size / the pipeline's scale, which must not exceed the
    input. `crop` (width, height): write only the top-left part of the output of this size. Returns a
    report (sizes, tiles, seconds). Settings as in `Pipeline.upscale`."""
    started, procs = time.perf_counter(), Processes()
    start = start_at if start_at is not None else (1 if pipe.base is not None else 0)
    if not 0 <= start < len(pipe.stages) or not pipe.stages[start].kind.takes_input:
        raise ValueError(f"start_at={start_at}: stage {start} is not an upsampler")
    stages = pipe.stages[start:]
    scale = math.prod(s.kind.scale for s in stages)
    x = _input(image, scale, size)
    out_h, out_w = x.shape[-2] * scale, x.shape[-1] * scale
    if crop is not None:
        if not (0 < crop[0] <= out_w and 0 < crop[1] <= out_h):
            raise ValueError(f"crop {crop[0]}x{crop[1]}: must fit in the {out_w}x{out_h} output")
        out_w, out_h = crop
    x = pad_to_multiple(x, input_multiple(stages)).contiguous()
    per_stage = pipe.stage_settings(settings, steps=steps)[start:]
    for key, value in (("aug_level", aug_level), ("consistent", consistent)):
        if value is not None:
            per_stage = [{key: value, **s} for s in per_stage]
    streamed, source = [], tuple(x.shape[-2:])
    for i, (stage, changes) in enumerate(zip(stages, per_stage)):
        if stage.defaults.consistent and "consistent" not in changes and stage.kind.iterative:  # a default, not asked
            warnings.warn(f"stage {start + i} samples with exact consistency by default; a streamed upscale "
                          f"cannot project onto the whole input, so it samples without", stacklevel=2)
            changes = {**changes, "consistent": False}
        streamed.append(StreamedStage(i, stage, stage.settings(changes), source, tile_size, overlap, tile_batch, seed))
        source = streamed[-1].geo.size
    record = {"input": hashlib.sha256(memoryview(x.numpy())).hexdigest(), "seed": seed, "size": [out_w, out_h],
              "tile_size": tile_size, "overlap": overlap, "tile_batch": tile_batch,
              "stages": [{"kind": s.kind.to_dict(), "settings": asdict(st.settings), "weights": weights_hash(s.unet)}
                         for s, st in zip(stages, streamed)]}
    record = json.loads(json.dumps(record))  # as progress.json holds it (tuples are lists)

    root = procs.share(_state_root(state_dir, resume, record, path, streamed, storage) if procs.main else None)
    if isinstance(root, Exception):
        raise root
    folder = StateFolder(root, storage)
    done = False
    try:
        with torch.no_grad(), _stop_on_sigterm():
            bands = _run(streamed, folder, x, record, procs, progress)
            if procs.main:
                write_bands(path, out_w, out_h, _uint8_rows(bands, out_h, out_w))
            else:
                for _ in bands:
                    pass
        done = True
    finally:
        if done:
            procs.barrier()
        if procs.main and (done or state_dir is None):
            shutil.rmtree(root, ignore_errors=True)
        if procs.main and not done:
            print(f"upscale stopped: its state is kept in {root}; continue it with --resume" if state_dir else
                  "upscale stopped: its temporary state is removed (with --state-dir DIR a long upscale can be resumed)",
                  flush=True)
    return {"output": str(path), "size": [out_w, out_h], "input": [x.shape[-1], x.shape[-2]],
            "tiles": [len(s.geo.tiles) for s in streamed], "steps": [len(s.timesteps) for s in streamed],
            "overlap": [s.overlap for s in streamed], "processes": procs.world,
            "state_bytes": state_bytes(streamed, [out_w, out_h]),
            "seconds": time.perf_counter() - started}


def _input(image, scale: int, size) -> torch.Tensor:
    """One image as [1 x 3 x h x w] in [-1, 1], resized to `size` / `scale` if given."""
    batches = user_images_to_signed(image)
    if len(batches) != 1 or batches[0].shape[0] != 1:
        raise ValueError("upscale_to_file takes one image")
    x = batches[0].float()
    if size is None:
        return x
    width, height = size
    if width % scale or height % scale:
        raise ValueError(f"size {width}x{height} is not a multiple of the pipeline's scale x{scale}")
    h, w = x.shape[-2:]
    if width // scale > w or height // scale > h:
        raise ValueError(f"size {width}x{height} needs x{max(width / w, height / h):g} from a {w}x{h} input, "
                         f"more than the pipeline's upsamplers make (x{scale}: at most {w * scale}x{h * scale})")
    if (height // scale, width // scale) == (h, w):
        return x
    return F.interpolate(x.double(), size=(height // scale, width // scale), mode="bicubic", antialias=True,
                         align_corners=False).clamp(-1, 1).float()


def _state_root(state_dir, resume: bool, record: dict, path, streamed, storage: str):
    """Process 0: the state folder, after the checks (an exception to raise on every process)."""
    temporary = None
    try:
        check_writable(path)
        if state_dir is None:
            if resume:
                raise CascadeError("resume needs the state folder of the interrupted upscale (--state-dir)")
            root = temporary = Path(tempfile.mkdtemp(prefix="cascade-upscale-"))
        else:
            root = Path(state_dir)
            saved = StateFolder(root).progress() if root.is_dir() else None
            if resume and saved is None:
                raise CascadeError(f"{root}: no upscale state to resume (missing progress.json)")
            if not resume and saved is not None:
                raise CascadeError(f"{root}: holds the state of an earlier upscale; pass --resume to continue it, "
                                   f"or remove the folder")
            if resume:
                known = _with_new_settings(saved["record"])
                differ = next((k for k in record if known.get(k) != record[k]), None)
                if differ is not None:
                    raise CascadeError(f"{root}: the state was made with another {differ!r} than this upscale's; "
                                       f"resume with the same input, pipeline and settings")
            if not root.exists():
                root.mkdir(parents=True)
                temporary = root  # made here: removed again if a check fails
        if storage == "disk" and not resume:
            _check_disk(root, streamed, record["size"])
        return root
    except (CascadeError, DataError, OSError) as e:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        return e if not isinstance(e, OSError) else DataError(f"{state_dir or tempfile.gettempdir()}: {e}")


def _with_new_settings(record: dict) -> dict:
    """A saved record whose stages' settings have every sampling setting: one added since the state was saved
    (final_timestep) takes its default, which is how that upscale sampled."""
    known = asdict(SampleConfig())
    stages = [{**stage, "settings": {**known, **stage["settings"]}} if isinstance(stage.get("settings"), dict)
              else stage for stage in record.get("stages", [])]
    return {**record, "stages": stages}


def state_bytes(streamed, size) -> int:
    """Disk the upscale needs at most: the largest stage's files (its input and noisy copy, x_t
    twice, two generations of scheduler history, the next stage's input) and the output."""
    need = 0
    for i, s in enumerate(streamed):
        out = s.channels * math.prod(s.geo.size)
        copies = history_copies(s.settings.sampler, s.stage.noise_scheduler.config, s.settings.steps)
        following = 3 * math.prod(s.geo.size) if i + 1 < len(streamed) else 0
        need = max(need, 4 * (2 * 3 * math.prod(s.source_size) + (2 + 2 * copies) * out + following))
    return need + 3 * size[0] * size[1]


def _check_disk(root: Path, streamed, size) -> None:
    need, free = state_bytes(streamed, size), shutil.disk_usage(root).free
    if need > free:
        raise DataError(f"{root}: the upscale's state needs {_bytes(need)} of free disk, {_bytes(free)} is free; "
                        f"pass --state-dir on a larger disk")


def _bytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@contextmanager
def _stop_on_sigterm():
    """SIGTERM (a job scheduler's stop) ends the upscale like Ctrl-C, so the cleanup runs."""
    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run(streamed, folder: StateFolder, x: torch.Tensor, record: dict, procs: Processes, progress: bool):
    """Every stage's steps from the saved progress on; yields the last stage's finished bands."""
    saved = folder.progress() or {"stage": 0, "step": 0, "started": False}
    done = sum(s.evaluations for s in streamed[:saved["stage"]])
    if saved["stage"] < len(streamed):
        done += saved["step"] * len(streamed[saved["stage"]].geo.tiles)
    bar = tqdm(total=sum(s.evaluations for s in streamed), initial=done, unit="tile", smoothing=0.05,
               desc=f"upscaling: {len(streamed)} stage{'s' * (len(streamed) > 1)}", disable=not (progress and procs.main))
    try:
        for i, st in enumerate(streamed):
            if i < saved["stage"]:
                continue
            resumed = i == saved["stage"] and saved["started"]
            source = folder.array(f"source{i}", (x.shape[1], *st.source_size), create=procs.main and i == 0
                                  and not resumed)
            if not resumed:
                if procs.main:
                    if i == 0:
                        source.write(slice(None), x[0])
                    st.start(folder, source)
                    folder.set_progress({"record": record, "stage": i, "step": 0, "started": True})
                procs.barrier()
            for k in range(saved["step"] if resumed else 0, len(st.timesteps)):
                last = k == len(st.timesteps) - 1
                following = None
                if last and i + 1 < len(streamed):
                    following = folder.array(f"source{i + 1}", (x.shape[1], *st.geo.size), create=procs.main)
                for (r0, r1), band in st.run_step(k, folder, source, procs, bar):
                    band = band.clamp(-1, 1)
                    if following is not None:
                        following.write(slice(r0, r1), band[0])
                    else:
                        yield (r0, r1), band
                if procs.main:
                    folder.set_progress({"record": record, "stage": i, "step": k + 1, "started": True})
                procs.barrier()
            if procs.main:
                for prefix in (f"x{i}_", f"band{i}_", f"noisy{i}", f"source{i}."):
                    folder.remove(prefix)
                folder.set_progress({"record": record, "stage": i + 1, "step": 0, "started": False})
            procs.barrier()
    finally:
        bar.close()


def _uint8_rows(bands, height: int, width: int):
    """Finished bands in [-1, 1] -> uint8 [rows x W x 3], cropped to the output size."""
    for (r0, r1), band in bands:
        if r0 >= height:
            continue
        rows = signed_to_uint8(band[0, :, :min(r1, height) - r0, :width])
        yield np.ascontiguousarray(rows.permute(1, 2, 0).numpy())
