"""Training checkpoints: Accelerate's `save_state` written crash-safe, plus EMA weights and progress.

Layout of `<output_dir>/checkpoints/step_00001000/`:
    model.safetensors, optimizer.bin   (Accelerate; the .bin file is read with weights_only=True)
    model_1.safetensors, optimizer_1.bin  an adversary's (a distillation's critic), where the run has one
    ema.safetensors                 EMA weights (safetensors, not pickle); ema_NAME.safetensors: other averages
                                    a run keeps (e.g. a distillation's target network)
    rng_state_<rank>.safetensors    each process's torch/CUDA/numpy/Python RNG states (cascade.diffusion.rng)
    data_state_<rank>.json          streamed data (cascade.data.streams): each process's partition positions
    trainer_state.json              {"step", "ema_updates", "batches_seen", "skipped_steps", "processes", "samples",
                                     "warmup_samples"}; written last

A checkpoint is first written to `step_XXXXXXXX.tmp/`, its files are fsynced, and only then is the
folder renamed into place, so a kill during a save leaves the previous checkpoint untouched; a folder
without `trainer_state.json` is never picked up. The newest `keep_last` are kept.

RNG states are ours, not Accelerate's: Accelerate pickles them (`random_states_<rank>.pkl`) and, on
resume, logs a failure to read that file at INFO level and goes on, so a resumed run with dropout
would silently stop being the run it continues. Each process replaces its pickle with a safetensors
file, and a missing or unreadable one is an error that names it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..diffusion import rng
from ..errors import CheckpointError
from ..io.atomic import fsync_dir, fsync_tree
from ..models.ema import EMA

STATE_FILE = "trainer_state.json"
ACCELERATE_RNG_FILE = "random_states_{rank}.pkl"
RNG_FILE = "rng_state_{rank}.safetensors"
DATA_FILE = "data_state_{rank}.json"


def checkpoint_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return None
    complete = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_FILE).is_file()]
    return max(complete, key=lambda p: int(p.name.split("_")[1]), default=None)


def save_checkpoint(accelerator: Accelerator, ema: EMA, output_dir: str | Path, step: int, batches_seen: int,
                    keep_last: int, skipped_steps: int = 0, data_state: dict | None = None, samples: int | None = None,
                    warmup_samples: int | None = None, averages: dict[str, EMA] | None = None,
                    adversary: bool = False) -> Path:
    """Write checkpoint `step` crash-safe (every process must call this); `data_state` is this
    process's position in a streamed dataset; `averages`: more EMAs of the weights (ema_NAME.safetensors);
    `adversary`: whether the run trains an adversary (its model and optimizer are Accelerate's second ones)."""
    root = checkpoint_dir(output_dir)
    final = root / f"step_{step:08d}"
    tmp = root / f"step_{step:08d}.tmp"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    rank = accelerator.process_index
    (tmp / ACCELERATE_RNG_FILE.format(rank=rank)).unlink(missing_ok=True)
    save_file(rng.global_state(), str(tmp / RNG_FILE.format(rank=rank)))
    if data_state is not None:
        (tmp / DATA_FILE.format(rank=rank)).write_text(json.dumps(data_state))
    accelerator.wait_for_everyone()  # every process's files are in place before the folder is renamed
    if accelerator.is_main_process:
        for name, average in {"": ema, **(averages or {})}.items():
            weights = {k: v.detach().cpu().contiguous() for k, v in average.model.state_dict().items()}
            save_file(weights, str(tmp / (f"ema_{name}.safetensors" if name else "ema.safetensors")))
        state = {"step": step, "ema_updates": ema.updates, "batches_seen": batches_seen, "skipped_steps": skipped_steps,
                 "processes": accelerator.num_processes, "samples": samples, "warmup_samples": warmup_samples,
                 "average_updates": {name: a.updates for name, a in (averages or {}).items()}, "adversary": adversary}
        (tmp / STATE_FILE).write_text(json.dumps(state))
        fsync_tree(tmp)
        if final.exists():  # re-saving the same step (e.g. the final save after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        old = sorted((p for p in root.glob("step_*") if not p.name.endswith(".tmp")), key=lambda p: p.name)
        for stale in old[:-keep_last]:
            shutil.rmtree(stale, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, ema: EMA, path: Path, averages: dict[str, EMA] | None = None,
                    adversary: bool = False) -> dict:
    """Restore model, optimizer, LR schedule (Accelerate), the EMA and this process's RNG states;
    return the trainer state, with "data_states" (every process's streamed-data position) and, when
    the checkpoint was written by another number of processes, "processes_before"."""
    rng_file = path / RNG_FILE.format(rank=accelerator.process_index)
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path / STATE_FILE}: unreadable ({' '.join(str(e).split())[:200]})") from None
    if bool(state.get("adversary", False)) != adversary:  # Accelerate would fail on (or drop) the second model
        raise CheckpointError(f"{path}: written by a run {'with' if state.get('adversary') else 'without'} a critic, "
                              f"and this run has {'one' if adversary else 'none'}: resume with the run's "
                              f"distill.adversarial ({'> 0' if state.get('adversary') else '0'})")
    written = state.get("processes", len(list(path.glob(RNG_FILE.format(rank="*")))))
    resized = bool(written) and written != accelerator.num_processes
    if not rng_file.is_file() and not resized:
        why = ("a checkpoint from before cascade kept its own RNG states" if list(path.glob("random_states_*.pkl"))
               else "deleted or never written")
        raise CheckpointError(f"{rng_file}: missing ({why}); without it, dropout would not continue the run")
    data_files = [path / DATA_FILE.format(rank=r) for r in range(written)]
    present = [f.is_file() for f in data_files]
    if any(present) and not all(present):
        missing = data_files[present.index(False)]
        raise CheckpointError(f"{missing}: missing (the checkpoint has the stream positions of only "
                              f"{sum(present)} of its {written} processes)")
    try:
        accelerator.load_state(str(path), load_kwargs={"weights_only": True})
        ema.model.load_state_dict(load_file(str(path / "ema.safetensors"), device=str(accelerator.device)))
        for name, average in (averages or {}).items():
            average.model.load_state_dict(load_file(str(path / f"ema_{name}.safetensors"), device=str(accelerator.device)))
            average.updates = int(state["average_updates"][name])
        state["data_states"] = [json.loads(f.read_text()) for f in data_files if f.is_file()]
    except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as e:
        raise CheckpointError(f"{path}: cannot load checkpoint ({' '.join(str(e).split())[:300]})") from None
    if resized:  # the other processes' RNG streams have no counterpart: keep this run's seeded ones
        state["processes_before"] = written
    else:
        try:
            rng.set_global_state(load_file(str(rng_file)))
        except (OSError, ValueError, RuntimeError, KeyError, TypeError, SafetensorError) as e:
            raise CheckpointError(f"{rng_file}: unreadable RNG state ({' '.join(str(e).split())[:200]})") from None
    ema.updates = int(state["ema_updates"])
    return state
