"""Shared fixtures: tiny seeded models (CPU, a few thousand parameters) and paths."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


def tiny_unet(**overrides):
    from cascade.models.unet import UNet

    kwargs = dict(sample_size=8, base_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                  head_channels=8, dropout=0.0, num_classes=3)
    kwargs.update(overrides)
    torch.manual_seed(0)
    return UNet(**kwargs)


def randomize(model, scale=0.2, seed=1):
    """Give every parameter random values: the zero-initialised output layers otherwise hide the inputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return model


def tiny_stage(size, scale=1, num_classes=0, seed=1, aug_level=0.0, layout="standard"):
    """A Stage around a tiny random UNet: a base stage (scale 1) or an upsampler (scale > 1)."""
    from cascade.config.sections import DiffusionConfig, SampleConfig
    from cascade.diffusion.schedule import make_noise_scheduler
    from cascade.inference.stage import Stage
    from cascade.kinds.base import Base
    from cascade.kinds.sr3 import SR3

    unet = randomize(tiny_unet(sample_size=size, num_classes=num_classes, cond_channels=3 if scale > 1 else 0,
                               use_aug_level=scale > 1, layout=layout), scale=0.05, seed=seed).eval()
    defaults = SampleConfig(sampler="dpm++", steps=3, guidance_scale=1.5 if num_classes else 1.0, aug_level=aug_level)
    names = ["a", "b", "c", *map(str, range(3, num_classes))][:num_classes]
    schedule = DiffusionConfig(schedule="cosine", prediction_type="v_prediction")
    kind = SR3(scale=scale) if scale > 1 else Base()
    return Stage(unet, make_noise_scheduler(schedule, clip_sample=kind.clip_sample), kind, defaults, names)


@pytest.fixture
def root():
    return ROOT


def _env():
    return dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(ROOT))


def _checked(args, proc, check):
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc


def run(*args, check=True):
    """`python ARGS` as a user runs it: a subprocess in the repository, offline."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=600)
    return _checked(args, proc, check)


def run_together(*commands, check=True):
    """Several independent `run`s at once, one thread each (two-threaded processes side by side on two
    cores slow each other more than they gain). Compare results only with other `run_together`
    processes: torch's reductions can round differently with another thread count."""
    import subprocess
    import sys
    import tempfile

    started = []
    for args in commands:
        out, err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")  # pipes could fill and stall a process
        env = dict(_env(), OMP_NUM_THREADS="1")
        started.append((args, subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, env=env, stdout=out,
                                               stderr=err, text=True), out, err))
    results = []
    for args, process, out, err in started:
        code = process.wait(timeout=600)
        out.seek(0)
        err.seek(0)
        results.append(_checked(args, subprocess.CompletedProcess(args, code, out.read(), err.read()), check))
    return results


def free_port() -> int:
    """A TCP port nobody listens on (for `accelerate launch --main_process_port`)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_SCRIPTS = {}


def load_script(target: str):
    """A script's module, imported once: a path under the repository (`eval/fid.py`) or a
    package's `__main__` module (`cascade.__main__`)."""
    import importlib
    import importlib.util

    if target not in _SCRIPTS:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(f"_script_{Path(target).stem}", ROOT / target)
            _SCRIPTS[target] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(_SCRIPTS[target])
        else:
            _SCRIPTS[target] = importlib.import_module(target)
    return _SCRIPTS[target]


def run_in_process(*args, check=True):
    """`python ARGS` (a script's path, or `-m cascade`, then its arguments) without a new
    interpreter: the script's main(argv) behind run_cli (its one-line errors and exit status 2),
    stdout and stderr captured, returned as a CompletedProcess. Saves the ~4 s of importing torch
    and diffusers per call; every script still has tests that run it as a real subprocess."""
    import contextlib
    import io
    import subprocess

    from cascade.cli.common import run_cli

    args = [str(a) for a in args]
    target, argv = (args[1] + ".__main__", args[2:]) if args[0] == "-m" else (args[0], args[1:])
    script = load_script(target)
    out, err, code, cwd = io.StringIO(), io.StringIO(), 0, os.getcwd()
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_cli(lambda: script.main(argv))
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(cwd)
    proc = subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())
    if check and code != 0:
        raise AssertionError(f"{args} failed ({code}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc
