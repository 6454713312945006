"""The benchmark's measuring tools (cascade.profiling) on cases whose answer is known."""

import torch

from cascade.profiling import count_flops, peak_memory


def test_peak_memory_counts_live_tensors_not_the_allocator_cache():
    def work():
        a = torch.ones(1000)          # 4000 bytes alive
        b = a * 2                     # 8000
        del a                         # 4000
        c = b + 1                     # 8000
        c.add_(1)                     # in place: no new storage
        view = c[:10]                 # a view: no new storage
        del b                         # 4000
        return torch.cat([c, view])   # 4000 + 1010 floats = 8040: the peak

    assert peak_memory(work) == 8040
    assert peak_memory(lambda: torch.zeros(10, 10, dtype=torch.float64)) == 800


def test_flop_counts_match_the_analytic_counts():
    a, b = torch.randn(64, 32), torch.randn(32, 16)
    assert count_flops(lambda: a @ b) == 2 * 64 * 32 * 16
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 10, 10)
    assert count_flops(lambda: conv(x)) == 2 * (2 * 10 * 10) * 8 * (3 * 3 * 3)
