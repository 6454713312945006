"""Random draws for a batch from one generator, or from one generator per example.

Training draws its randomness (timesteps, noise, label dropout, conditioning augmentation) per
example, from a generator seeded by the example's own seed (cascade.data gives every item one,
from the run seed, the epoch and the item's index). An example then gets the same draws however
the batch is split across processes or micro-batches, and wherever a run is resumed: 2 processes
with batch B/2 each train like 1 process with batch B, and nothing depends on the global RNG.

`generator` below is a `torch.Generator` (one stream for the batch), a sequence of them (one per
example: shape[0] must equal its length), or None (torch's global RNG). Draws are on the CPU.
"""

from __future__ import annotations

from typing import Sequence, Union

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


def example_generators(seeds: torch.Tensor) -> list[torch.Generator]:
    """One generator per example from a batch's `seed` column [N] (int64)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
