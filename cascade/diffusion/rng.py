"""Random draws for a batch from one generator, or from one generator per example.

Training draws its randomness (timesteps, noise, label dropout, conditioning augmentation) per
example, from a generator seeded by the example's own seed (cascade.data gives every item one,
from the run seed, the epoch and the item's index). An example then gets the same draws however
the batch is split across processes or micro-batches, and wherever a run is resumed: 2 processes
with batch B/2 each train like 1 process with batch B. Only dropout draws from torch's global
generator (per process); `global_state` / `set_global_state` carry it, with numpy's and Python's,
through a checkpoint as plain tensors.

`generator` below is a `torch.Generator` (one stream for the batch), a sequence of them (one per
example: shape[0] must equal its length), or None (torch's global RNG). Draws are on the CPU.
"""

from __future__ import annotations

import math
import random
from typing import Sequence, Union

import numpy as np
import torch

Generators = Union[torch.Generator, Sequence[torch.Generator], None]


def _per_example(generator: Generators) -> bool:
    return generator is not None and not isinstance(generator, torch.Generator)


def _check(generator: Sequence[torch.Generator], n: int) -> None:
    if len(generator) != n:
        raise ValueError(f"{len(generator)} generators for a batch of {n}")


def randn(shape: Sequence[int], generator: Generators = None) -> torch.Tensor:
    if _per_example(generator):
        _check(generator, shape[0])
        return torch.stack([torch.randn(tuple(shape[1:]), generator=g) for g in generator])
    return torch.randn(tuple(shape), generator=generator)


def rand(n: int, generator: Generators = None) -> torch.Tensor:
    """[n] uniform in [0, 1)."""
    if _per_example(generator):
        _check(generator, n)
        return torch.cat([torch.rand(1, generator=g) for g in generator])
    return torch.rand(n, generator=generator)


def randint(high: int, n: int, generator: Generators = None) -> torch.Tensor:
    """[n] integers in [0, high)."""
    if _per_example(generator):
        _check(generator, n)
        return torch.cat([torch.randint(0, high, (1,), generator=g) for g in generator])
    return torch.randint(0, high, (n,), generator=generator)


def per_image(seed, n: int, first: int = 0) -> list[torch.Generator]:
    """One generator for each of images first .. first + n - 1: `seed` an int (image i gets seed + i)
    or a sequence with one seed per image."""
    if isinstance(seed, int):
        seeds = [seed + first + i for i in range(n)]
    else:
        seeds = [int(s) for s in seed][first:first + n]
    if len(seeds) != n:
        raise ValueError(f"{len(list(seed))} seeds for {first + n} images")
    return [torch.Generator().manual_seed(s) for s in seeds]


def example_generators(seeds: torch.Tensor) -> list[torch.Generator]:
    """One generator per example from a batch's `seed` column [N] (int64)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]


# --- the process-wide RNGs, saved in checkpoints as tensors (safetensors) instead of a pickle
# Dropout draws from torch's global generator, so a resumed run continues exactly only if it is restored.

def global_state() -> dict[str, torch.Tensor]:
    """This process's torch (CPU and every CUDA device), numpy and Python RNG states as tensors."""
    keys, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, internal, gauss_next = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy.keys": torch.from_numpy(keys.astype(np.int64)),
             "numpy.rest": torch.tensor([pos, has_gauss], dtype=torch.int64),
             "numpy.gauss": torch.tensor([gauss], dtype=torch.float64),
             "python.state": torch.tensor([version, *internal], dtype=torch.int64),
             "python.gauss": torch.tensor([math.nan if gauss_next is None else gauss_next], dtype=torch.float64)}
    if torch.cuda.is_available():
        state.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return state


def set_global_state(state: dict[str, torch.Tensor]) -> None:
    """Restore what `global_state` returned (KeyError names a missing entry)."""
    torch.set_rng_state(state["torch"])
    pos, has_gauss = state["numpy.rest"].tolist()
    np.random.set_state(("MT19937", state["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss,
                         state["numpy.gauss"].item()))
    version, *internal = state["python.state"].tolist()
    gauss = state["python.gauss"].item()
    random.setstate((version, tuple(internal), None if math.isnan(gauss) else gauss))
    cuda = sorted((k for k in state if k.startswith("cuda.")), key=lambda k: int(k.split(".")[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([state[k] for k in cuda])
