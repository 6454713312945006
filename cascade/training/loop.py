"""The training loop every stage shares, `fit`: Accelerate (devices, processes, mixed precision, gradient
accumulation), AdamW with a linear warmup counted in samples, gradient clipping, EMA, TensorBoard scalars, a
tqdm bar on the main process, preview grids, crash-safe checkpoints (cascade.training.checkpoints) and an
exact resume, also with another number of processes. What a stage trains on and how is in
cascade.training.stage; `fit` sees only a model, batches and a loss function (and, for an adversarial
distillation, a critic trained beside the model: `Adversary`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, send_to_device, set_seed
from PIL import Image
from tqdm.auto import tqdm

from ..config.loading import save_config
from ..config.sections import TrainConfig
from ..data.streams import StreamLoader
from ..errors import CascadeError, CheckpointError
from ..models.ema import EMA
from .checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint


class TrainingError(CascadeError):
    """Training cannot go on (e.g. the loss is no longer finite)."""


def make_accelerator(cfg: TrainConfig, config) -> Accelerator:
    """The Accelerator for a run; seeds every process and saves the resolved config (main process)."""
    out = Path(cfg.output_dir)
    accelerator = Accelerator(
        cpu=_distributed_without_accelerator(),
        mixed_precision=cfg.mixed_precision,
        gradient_accumulation_steps=cfg.grad_accum,
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
        # The same shuffling seed on every process, so that each takes its own shard of one permutation
        # (left to Accelerate, it would use each process's torch seed, which set_seed makes differ).
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=cfg.seed),
    )
    set_seed(cfg.seed, device_specific=True)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(config, out / "config.yaml")
    accelerator.init_trackers("train")
    return accelerator


def process_state() -> PartialState:
    """This process's place among the launched ones, as the runs' Accelerators see it. For a script that asks
    before its first Accelerator exists: the state is shared and fixed by whoever builds it first, so it is
    built here as `make_accelerator` builds it (a plain PartialState() would leave each process alone)."""
    return PartialState(cpu=_distributed_without_accelerator())


def _distributed_without_accelerator() -> bool:
    """Launched as several processes (torchrun, `accelerate launch --multi_gpu`) on a machine with no
    GPU: tell Accelerate to use the CPU, so the processes join one gloo group instead of each
    training alone (Accelerate only does so by itself under MPI or with ACCELERATE_USE_CPU=1)."""
    from accelerate.utils import is_npu_available, is_xpu_available

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ
    return launched and not (torch.cuda.is_available() or is_npu_available() or is_xpu_available())


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, fused into one kernel over all parameters where this torch supports it (CPU since 2.4,
    CUDA): the same update as the per-parameter loop, ~5x faster (2.4 M parameters: 23 -> 4 ms/step)."""
    params, kwargs = list(params), dict(lr=cfg.lr, betas=tuple(cfg.adam_betas), weight_decay=cfg.weight_decay)
    try:
        return torch.optim.AdamW(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # an older torch, or a device without the fused kernel
        return torch.optim.AdamW(params, **kwargs)


@dataclass
class Progress:
    """Where a run is: optimizer steps done, micro-batches drawn (the data order), steps skipped, samples seen."""

    step: int = 0
    batches_seen: int = 0
    skipped: int = 0
    samples: int = 0  # training examples the optimizer steps so far consumed, over every process
    warmup_samples: int | None = None  # the learning-rate warmup, in samples (fixed at the run's first start)
    bad_window: bool = False  # a non-finite loss in the current optimizer step's micro-batches ("skip" mode)
    resized: bool = False  # resumed from a checkpoint of another number of processes


@dataclass
class Adversary:
    """A network trained beside the model, against it (an adversarial distillation's critic): its own optimizer,
    stepped with the model's (the same micro-batches, accumulation window and skipped steps) on `loss(critic)`,
    which reads what the model's last loss call saw; prepared by Accelerate, so it is in every checkpoint (the
    second model and optimizer) and resumes exactly."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss: Callable[[torch.nn.Module], torch.Tensor]
    terms: Callable[[], dict] | None = None  # the model's loss split into its terms at its last call, for the log
    last: torch.Tensor | None = None  # its last loss, for the log
    bad_window: bool = False  # a non-finite loss of its own in the current accumulation window


def warmup_factor(samples: int, warmup_samples: int) -> float:
    """The learning rate's fraction before a step, `samples` having been seen: a linear warmup counted in
    samples, so a run resumed with another number of processes (another global batch) goes on where it
    was, then constant. Step k of a run with a fixed global batch gets (k - 1) / train.warmup_steps."""
    return 1.0 if samples >= warmup_samples else samples / warmup_samples


def fit(accelerator: Accelerator, cfg: TrainConfig, model: torch.nn.Module, dataloader,
        loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
        preview_fn: Callable[[torch.nn.Module, int], Image.Image] | None = None, resume: bool = False,
        averages: dict[str, EMA] | None = None, adversary: Adversary | None = None) -> EMA:
    """Train `model` for `cfg.max_steps` optimizer steps; return the EMA (its `.model` is exported).

    `loss_fn(model, batch)` returns the scalar loss of one micro-batch. `preview_fn(ema_model, step)`
    returns a PIL image saved as `samples/step_XXXXXXXX.png` (main process only). `averages`: more EMAs of
    the weights that the loss may read (a distillation's target network), updated after every step like
    the exported one and kept in the checkpoints. `adversary`: a critic trained against the model (`Adversary`).
    """
    out = Path(cfg.output_dir)
    # --- optimizer (its learning rate is set before every step: `warmup_factor`)
    optimizer = make_optimizer(model.parameters(), cfg)
    ema = EMA(model, cfg.ema_decay, cfg.ema_warmup)
    streamed = isinstance(dataloader, StreamLoader)  # each process reads its own partitions: not sharded by Accelerate
    if streamed:
        model, optimizer = accelerator.prepare(model, optimizer)
    else:
        model, optimizer, dataloader = accelerator.prepare(model, optimizer, dataloader)
    if adversary is not None:  # prepared after the model: Accelerate's second model and optimizer in a checkpoint
        adversary.model, adversary.optimizer = accelerator.prepare(adversary.model, adversary.optimizer)
    ema.model.to(accelerator.device)

    # --- resume
    per_step = cfg.batch_size * cfg.grad_accum * accelerator.num_processes  # samples an optimizer step consumes
    averages = averages or {}
    for average in averages.values():
        average.model.to(accelerator.device)
    progress = (_resume(accelerator, ema, out, dataloader, cfg, averages, adversary is not None) if resume
                else Progress())
    if progress.warmup_samples is None:  # the warmup is fixed in samples by the run's first start
        progress.warmup_samples = cfg.warmup_steps * per_step
    if progress.step >= cfg.max_steps:
        accelerator.print(f"already at step {progress.step} >= train.max_steps={cfg.max_steps}; nothing to train")
        return ema

    # --- loop; the bar is closed before any error propagates, so the error is the last line on the terminal
    with tqdm(total=cfg.max_steps, initial=progress.step, desc="training",
              disable=not accelerator.is_local_main_process, dynamic_ncols=True) as bar:
        model.train()
        for batch in _batches(accelerator, dataloader, progress):
            progress.batches_seen += 1
            loss = _micro_step(accelerator, cfg, model, optimizer, loss_fn, batch, progress, adversary)
            if not accelerator.sync_gradients:
                continue
            # --- one optimizer step done (or skipped: it still counts, so the data order is unchanged)
            progress.samples += per_step
            _after_step(accelerator, cfg, model, [ema, *averages.values()], loss, optimizer, progress, bar, adversary)
            last = progress.step == cfg.max_steps
            if (cfg.sample_every and progress.step % cfg.sample_every == 0) or last:
                _preview(accelerator, preview_fn, ema, out, progress.step)
            if (cfg.save_every and progress.step % cfg.save_every == 0) or last:
                save_checkpoint(accelerator, ema, out, progress.step, progress.batches_seen, cfg.keep_last,
                                skipped_steps=progress.skipped, samples=progress.samples,
                                warmup_samples=progress.warmup_samples, averages=averages,
                                data_state=dataloader.state_dict() if streamed else None,
                                adversary=adversary is not None)
            if last:
                break
    if progress.skipped:
        accelerator.print(f"{progress.skipped} of {cfg.max_steps} steps were skipped for non-finite losses")
    for tracker in accelerator.trackers:  # not end_training(): it ends the process group, which a script's next fit
        tracker.finish()                   # still needs (the next one-shot stage, distilled stage, progressive round)
    return ema


def _batches(accelerator: Accelerator, dataloader, progress: Progress):
    """The micro-batches of the run from where `progress` is, forever: a stream as it comes, or
    map-style epochs (each with its own shuffle and augmentation), skipping what was already seen."""
    if isinstance(dataloader, StreamLoader):
        for batch in dataloader:
            yield send_to_device(batch, accelerator.device)
        return
    while True:
        epoch, skip = divmod(progress.batches_seen, len(dataloader))
        dataloader.set_epoch(epoch)
        if hasattr(dataloader.dataset, "set_epoch"):  # per-epoch augmentation (cascade.data.crops.CropDataset)
            dataloader.dataset.set_epoch(epoch)
        yield from accelerator.skip_first_batches(dataloader, skip) if skip else dataloader


def _resume(accelerator: Accelerator, ema: EMA, out: Path, dataloader, cfg: TrainConfig, averages: dict,
            adversary: bool = False) -> Progress:
    """The progress of the newest complete checkpoint, restored (or a fresh start if there is none)."""
    path = latest_checkpoint(out)
    if path is None:
        accelerator.print(f"--resume: no complete checkpoint in {out / 'checkpoints'}; starting from scratch")
        return Progress()
    state = load_checkpoint(accelerator, ema, path, averages, adversary)
    accelerator.print(f"resumed from {path} (step {state['step']})")
    batches_seen = state["batches_seen"]
    before, now = state.get("processes_before"), accelerator.num_processes
    if isinstance(dataloader, StreamLoader):
        if not state["data_states"]:
            raise CheckpointError(f"{path}: holds no stream positions (written by a run with data.streaming=false); "
                                  "resume it map-style, or start the streamed run afresh")
        warning = dataloader.load_state_dict(state["data_states"])
        if warning:
            accelerator.print(f"warning: {warning}")
    elif before:
        batches_seen, repeated = resized_position(batches_seen, len(dataloader.dataset), cfg.batch_size, before, now)
        accelerator.print(f"warning: data: resumed with {now} processes where the checkpoint had {before}: the "
                          f"epoch continues from the same example ({repeated} examples of the last global batch seen "
                          "again), but batches are grouped differently, so this run is not the uninterrupted one")
    if before:
        accelerator.print(f"warning: the checkpoint's RNG states are per process ({before}); dropout draws anew")
    written = before or now  # checkpoints from before samples were counted: every step had this run's batch
    per_step = cfg.batch_size * cfg.grad_accum * written
    return Progress(state["step"], batches_seen, state.get("skipped_steps", 0),
                    samples=state.get("samples") or state["step"] * per_step,
                    warmup_samples=state.get("warmup_samples") or cfg.warmup_steps * per_step, resized=bool(before))


def resized_position(batches_seen: int, examples: int, batch_size: int, before: int, now: int) -> tuple[int, int]:
    """A map-style position (micro-batches per process) written by `before` processes, for `now`
    processes, and how many examples of the epoch the new position sees again.

    Every process count walks the same permutation of the epoch (Accelerate's seedable sampler), in
    global batches of processes x batch_size examples; each epoch has (examples // batch_size) //
    processes micro-batches per process."""
    per_epoch = lambda n: (examples // batch_size) // n  # noqa: E731
    epoch, into = divmod(batches_seen, per_epoch(before))
    consumed = into * before * batch_size  # examples of the epoch already seen
    batches = consumed // (now * batch_size)
    return epoch * per_epoch(now) + batches, consumed - batches * now * batch_size


def _micro_step(accelerator, cfg: TrainConfig, model, optimizer, loss_fn, batch,
                progress: Progress, adversary: Adversary | None = None) -> torch.Tensor:
    """Forward and backward of one micro-batch; the optimizer steps when the accumulation window ends.
    A non-finite loss stops the run ("stop") or marks the window to be skipped ("skip"). An adversary then
    takes its own step on the same micro-batch, skipped with the model's."""
    with accelerator.accumulate(model, *([adversary.model] if adversary is not None else [])):
        loss = loss_fn(model, batch)
        if _any_nonfinite(accelerator, loss):
            if cfg.on_nonfinite_loss == "stop":
                raise TrainingError(f"step {progress.step + 1}: loss is {loss.item()} (not finite); the last good "
                                    f"checkpoint in {Path(cfg.output_dir) / 'checkpoints'} is untouched; lower "
                                    f"train.lr, check the data, or set train.on_nonfinite_loss=skip")
            progress.bad_window = True
        else:
            accelerator.backward(loss)
        skip_update = accelerator.sync_gradients and progress.bad_window  # weights and AdamW moments stay
        if accelerator.sync_gradients and cfg.grad_clip > 0 and not progress.bad_window:
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        if not skip_update:
            if accelerator.sync_gradients:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * warmup_factor(progress.samples, progress.warmup_samples)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if adversary is not None:
            _adversary_step(accelerator, adversary, progress)
    return loss


def _adversary_step(accelerator, adversary: Adversary, progress: Progress) -> None:
    """The adversary's backward and step on what the model's last loss call saw. Its window is skipped where the
    model's is, or where its own loss was not finite in any micro-batch (every process alike)."""
    loss = adversary.loss(adversary.model)
    if _any_nonfinite(accelerator, loss):
        adversary.bad_window = True
    elif not progress.bad_window:
        accelerator.backward(loss)
        adversary.last = loss.detach()
    if accelerator.sync_gradients:
        if not (progress.bad_window or adversary.bad_window):
            adversary.optimizer.step()
        adversary.bad_window = False
    adversary.optimizer.zero_grad(set_to_none=True)


def _after_step(accelerator, cfg: TrainConfig, model, emas: list[EMA], loss, optimizer, progress: Progress,
                bar, adversary: Adversary | None = None) -> None:
    """Count the optimizer step, update the EMAs (unless the step was skipped), log and advance the bar."""
    progress.step += 1
    if progress.bad_window:
        progress.skipped += 1
        progress.bad_window = False
        accelerator.print(f"step {progress.step}: non-finite loss, step skipped ({progress.skipped} skipped so far)")
        if progress.skipped >= cfg.max_skipped_steps:
            raise TrainingError(f"step {progress.step}: {progress.skipped} steps skipped for non-finite losses "
                                f"(train.max_skipped_steps={cfg.max_skipped_steps}); the run diverged")
    else:
        for ema in emas:
            ema.update(accelerator.unwrap_model(model))
    bar.update(1)
    if progress.step % cfg.log_every == 0 or progress.step == cfg.max_steps:
        loss_value = accelerator.reduce(loss.detach(), reduction="mean").item()
        lr = optimizer.param_groups[0]["lr"]
        scalars = {"loss": loss_value, "lr": lr, "skipped_steps": progress.skipped}
        shown = {}
        if adversary is not None and adversary.last is not None:
            scalars["critic_loss"] = accelerator.reduce(adversary.last, reduction="mean").item()
            shown["critic"] = f"{scalars['critic_loss']:.3f}"
        if adversary is not None and adversary.terms is not None:  # the total is not the model's own term alone
            for name, value in adversary.terms().items():
                scalars[name] = accelerator.reduce(value.detach().float(), reduction="mean").item()
                shown[name.removesuffix("_loss")] = f"{scalars[name]:.4f}"
        accelerator.log(scalars, step=progress.step)
        bar.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", **shown)


def _any_nonfinite(accelerator: Accelerator, loss: torch.Tensor) -> bool:
    """Whether the loss is NaN/inf on any process: every process must take the same branch, or the
    others would wait forever in the gradient all-reduce."""
    bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return bool(bad.item() > 0)


def _preview(accelerator: Accelerator, preview_fn, ema: EMA, out: Path, step: int) -> None:
    if preview_fn is not None and accelerator.is_main_process:
        folder = out / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        preview_fn(ema.model, step).save(folder / f"step_{step:08d}.png")
    accelerator.wait_for_everyone()
