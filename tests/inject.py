"""Run a training script with one fault injected, as a subprocess would see a real failure.

    python tests/inject.py FAULT N train/base.py --config ... [overrides]

    python tests/inject.py FAULT N -m cascade upscale IN OUT ...

FAULT is one of
- `kill-after-save`: SIGKILL the process right after the checkpoint of step N is in place (N/K: the K-th time a
  checkpoint of step N is written, e.g. in the second round of a progressive distillation);
- `kill-mid-save`: SIGKILL it while writing the checkpoint of step N (after Accelerate's files,
  halfway through the EMA weights, before the folder is renamed into place);
- `nan-loss`: make the N-th call of the diffusion loss return NaN (then train normally);
- `kill-mid-export`: SIGKILL it during the export of the trained stage, right after the N-th stage
  folder of the new pipeline is written (its cascade.json not yet);
- `kill-mid-step` / `interrupt-mid-step` (streamed upscales): SIGKILL the process, or raise
  KeyboardInterrupt as Ctrl-C does, when it saves the N-th band of scheduler history (in the middle
  of a step: some bands of x_{t-1} written, others not).
Nothing in cascade/ knows about this file: it patches functions and runs the script with runpy.
"""

import os
import runpy
import signal
import sys

import torch

import cascade.diffusion.schedule
import cascade.inference.stage
import cascade.inference.streamed.state
import cascade.training.checkpoints
import cascade.training.loop

fault, n, script, *args = sys.argv[1:]
n, _, nth = n.partition("/")
n, nth = int(n), int(nth or 1)

if fault == "kill-after-save":
    original_save = cascade.training.loop.save_checkpoint

    saves = [0]

    def save_then_die(accelerator, ema, output_dir, step, *rest, **kwargs):
        path = original_save(accelerator, ema, output_dir, step, *rest, **kwargs)
        saves[0] += step == n
        if step == n and saves[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    cascade.training.loop.save_checkpoint = save_then_die
elif fault == "kill-mid-save":
    original_save_file = cascade.training.checkpoints.save_file

    def half_written_then_die(tensors, filename, *rest, **kwargs):
        if f"step_{n:08d}.tmp" in str(filename):
            original_save_file(tensors, filename, *rest, **kwargs)
            with open(filename, "r+b") as f:  # a partly written file, as a kill during the write leaves it
                f.truncate(os.path.getsize(filename) // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return original_save_file(tensors, filename, *rest, **kwargs)

    cascade.training.checkpoints.save_file = half_written_then_die
elif fault == "nan-loss":
    original_loss = cascade.diffusion.schedule.training_loss
    calls = [0]

    def sometimes_nan(*a, **kw):
        calls[0] += 1
        loss = original_loss(*a, **kw)
        return loss * torch.nan if calls[0] == n else loss

    cascade.diffusion.schedule.training_loss = sometimes_nan
elif fault == "kill-mid-export":
    original_stage_save = cascade.inference.stage.Stage.save_pretrained
    stage_saves = [0]

    def stage_saved_then_die(self, folder):
        original_stage_save(self, folder)
        stage_saves[0] += 1
        if stage_saves[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    cascade.inference.stage.Stage.save_pretrained = stage_saved_then_die
elif fault in ("kill-mid-step", "interrupt-mid-step"):
    original_save_band = cascade.inference.streamed.state.StateFolder.save_band
    saves = [0]

    def save_band_then_stop(self, name, tensors):
        saves[0] += 1
        if saves[0] == n:
            if fault == "kill-mid-step":
                os.kill(os.getpid(), signal.SIGKILL)
            raise KeyboardInterrupt
        return original_save_band(self, name, tensors)

    cascade.inference.streamed.state.StateFolder.save_band = save_band_then_stop
else:
    raise SystemExit(f"unknown fault {fault!r}")

if script == "-m":
    sys.argv = [args[0], *args[1:]]
    runpy.run_module(args[0], run_name="__main__", alter_sys=True)
else:
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")
