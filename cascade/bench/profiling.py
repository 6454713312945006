"""Measuring tools for the benchmarks (eval/bench_*.py): time, FLOPs, peak memory.

- `timed(fn)`: median wall time over repeats after warm-up, synchronising CUDA.
- `count_flops(fn)`: FLOPs of one call, from torch.utils.flop_counter (matmuls, convolutions,
  attention; a multiply-add counts 2), so "achieved GFLOP/s" = FLOPs / time. torch 2.13 has no
  formula for the CPU's fused attention kernel (what scaled_dot_product_attention runs on the CPU
  for contiguous heads): it is counted here with torch's own attention formulas.
- `matmul_gflops(device)`: the float32 matrix-multiply rate of this machine, the practical ceiling.
- `LiveTensorBytes` / `peak_memory(fn)`: the peak of tensor memory alive during `fn` beyond what was
  alive before it. On CUDA that is torch.cuda.max_memory_allocated; on the CPU the same count is
  kept by a dispatch mode that sees every tensor an op returns (resident-memory readings mostly
  show the allocator's cache, which keeps freed memory).
- `CallPeak(module)`: hooks keeping the peak memory of a module's calls; `status_kib("VmHWM")`:
  the process's peak resident memory.
- `time_by_kind(fn)`: where one call's time goes (convolutions, normalisation, attention, other
  matmuls, optimizer, elementwise and copies), from torch.profiler's per-operator self time.
"""

from __future__ import annotations

import re
import statistics
import time
import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable, device: torch.device | str = "cpu", warmup: int = 2, repeats: int = 5,
          min_seconds: float = 0.0) -> float:
    """Median seconds per call of `fn()` over `repeats` calls (at least `min_seconds` in all)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    while len(times) < repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_attention_formulas() -> dict:
    """Formulas for the CPU flash-attention kernels, which torch.utils.flop_counter counts as 0:
    the same counts as torch's for its CUDA kernels (the backward recomputes the scores)."""
    aten = torch.ops.aten
    if not hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        return {}
    return {aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
            aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v)}


def count_flops(fn: Callable) -> int:
    """FLOPs of one call of `fn()` (forward and, if `fn` calls it, backward)."""
    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas()) as counter:
        fn()
    return counter.get_total_flops()


def matmul_gflops(device: torch.device | str = "cpu", n: int = 2048, dtype: torch.dtype = torch.float32,
                  repeats: int = 10) -> float:
    """GFLOP/s of an n x n x n matrix product (2 n^3 FLOPs) in `dtype` on `device`."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / timed(lambda: a @ b, device, warmup=3, repeats=repeats) / 1e9


class LiveTensorBytes(TorchDispatchMode):
    """Counts the bytes of CPU tensor storage created inside the mode and still alive, and their peak."""

    def __init__(self):
        super().__init__()
        self.live, self.peak, self.refs = 0, 0, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if key not in self.refs:  # a new storage (views and in-place results reuse one)
                    self.refs[key] = 0
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                self.refs[key] += 1
                weakref.finalize(t, self._release, key, nbytes)
        return out

    def _release(self, key: int, nbytes: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.live -= nbytes


def peak_memory(fn: Callable, device: torch.device | str = "cpu") -> int:
    """Peak bytes of tensor memory allocated during `fn()` beyond what was allocated when it started."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    with LiveTensorBytes() as mode:
        fn()
    return mode.peak


def status_kib(key: str) -> int:
    """A field of /proc/self/status in KiB (VmHWM: the process's peak resident memory)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


class CallPeak:
    """Hooks recording the peak memory of each network call above what was alive when it started
    (the first `limit` calls, when given: on the CPU the count slows every operation)."""

    def __init__(self, module: torch.nn.Module, cuda: bool, limit: int | None = None):
        self.cuda, self.call_peak, self.calls, self.limit = cuda, 0, 0, limit
        self.params = sum(p.numel() * p.element_size() for p in module.parameters())
        module.register_forward_pre_hook(self.before)
        module.register_forward_hook(self.after)

    def before(self, module, args):
        self.measuring = self.limit is None or self.calls < self.limit
        if not self.measuring:
            return
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated()
        else:
            self.mode = LiveTensorBytes().__enter__()

    def after(self, module, args, output):
        self.calls += 1
        if not self.measuring:
            return
        if self.cuda:
            peak = torch.cuda.max_memory_allocated() - self.start
        else:
            self.mode.__exit__(None, None, None)
            peak = self.mode.peak
        self.call_peak = max(self.call_peak, peak)


# Operator kinds by name (torch.profiler's aten:: names), checked in this order.
OP_KINDS = {
    "convolution": r"conv",
    "normalisation": r"(group|layer|batch)_norm",
    "attention": r"attention|softmax|^bmm$|^baddbmm$",
    "other matmul": r"^(mm|addmm|matmul|linear|addmv|mv)$",
    "optimizer": r"adam|^_foreach",
}


def time_by_kind(fn: Callable, device: torch.device | str = "cpu") -> dict[str, float]:
    """Share of one call of `fn()`'s operator time spent in each of OP_KINDS, plus "elementwise and
    other" (activations, additions, concatenations, copies, ...). Shares sum to 1."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.device(device).type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    fn()  # warm-up
    _sync(device)
    with profile(activities=activities) as prof:
        fn()
        _sync(device)
    totals = dict.fromkeys([*OP_KINDS, "elementwise and other"], 0.0)
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue  # autograd nodes and record_function ranges: their aten ops carry the self time
        kind, node = "elementwise and other", event
        while node is not None:  # an op's time belongs to the outermost op of a kind that called it
            if node.name.startswith("aten::"):  # (the softmax, masks and copies inside attention are attention)
                kind = next((k for k, pattern in OP_KINDS.items() if re.search(pattern, node.name[6:])), kind)
            node = node.cpu_parent
        totals[kind] += event.self_device_time_total if cuda else event.self_cpu_time_total
    whole = sum(totals.values()) or 1.0
    return {k: v / whole for k, v in totals.items()}
