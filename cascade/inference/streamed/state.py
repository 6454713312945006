"""The state folder of a streamed upscale (cascade.inference.streamed.engine): full-size float32 arrays in files,
read and written by regions, each band's scheduler history as safetensors, and a progress record
replaced atomically. `storage="memory"` keeps the same in host memory (the reference of the tests).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

PROGRESS = "progress.json"


class DiskArray:
    """A float32 [C x H x W] array in a file, read and written by regions. The file is mapped only
    while a region is copied in or out, so the process holds no more than the region."""

    def __init__(self, path: Path, shape: tuple[int, int, int], create: bool = False):
        self.path, self.shape = Path(path), tuple(shape)
        if create:
            with open(self.path, "wb") as f:
                f.truncate(4 * math.prod(self.shape))  # sparse: disk is used as rows are written

    def _map(self, mode: str) -> np.memmap:
        return np.memmap(self.path, np.float32, mode, shape=self.shape)

    def read(self, rows: slice, cols: slice = slice(None)) -> torch.Tensor:
        mapped = self._map("r")
        out = torch.from_numpy(np.array(mapped[:, rows, cols]))
        del mapped
        return out

    def write(self, rows: slice, value: torch.Tensor, cols: slice = slice(None)) -> None:
        mapped = self._map("r+")
        mapped[:, rows, cols] = value.to(torch.float32).numpy()
        del mapped


class MemoryArray:
    """The same interface in host memory: the reference the disk path is tested against."""

    def __init__(self, shape):
        self.shape, self.data = tuple(shape), torch.zeros(shape)

    def read(self, rows: slice, cols: slice = slice(None)) -> torch.Tensor:
        return self.data[:, rows, cols].clone()

    def write(self, rows: slice, value: torch.Tensor, cols: slice = slice(None)) -> None:
        self.data[:, rows, cols] = value.to(torch.float32)


class StateFolder:
    """The arrays, band histories and progress record of one upscale (`storage="memory"`: the same
    in host memory, for tests)."""

    def __init__(self, root: Path, storage: str = "disk"):
        self.root, self.storage, self.memory = Path(root), storage, {}

    def array(self, name: str, shape, create: bool = False):
        if self.storage == "memory":
            if create or name not in self.memory:
                self.memory[name] = MemoryArray(shape)
            return self.memory[name]
        return DiskArray(self.root / f"{name}.f32", shape, create)

    def save_band(self, name: str, tensors: dict) -> None:
        if self.storage == "memory":
            self.memory[name] = {k: v.clone() for k, v in tensors.items()}
        else:
            save_file({k: v.contiguous() for k, v in tensors.items()}, self.root / f"{name}.safetensors")

    def load_band(self, name: str) -> dict:
        if self.storage == "memory":
            return dict(self.memory.get(name, {}))
        path = self.root / f"{name}.safetensors"
        return load_file(path) if path.is_file() else {}

    def remove(self, prefix: str) -> None:
        if self.storage == "memory":
            self.memory = {k: v for k, v in self.memory.items() if not k.startswith(prefix)}
        else:
            for path in self.root.glob(f"{prefix}*"):
                path.unlink()

    def progress(self) -> dict | None:
        path = self.root / PROGRESS
        return json.loads(path.read_text()) if path.is_file() else None

    def set_progress(self, record: dict) -> None:
        path = self.root / PROGRESS
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        os.replace(tmp, path)  # atomic: a crash leaves the previous record
