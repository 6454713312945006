"""The benchmark's measuring tools (cascade.bench.profiling) on cases whose answer is known."""

import pytest
import torch

from cascade.bench.profiling import count_flops, peak_memory, time_by_kind


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


def test_attention_flops_are_counted_on_the_cpu_kernel_as_on_the_math_path():
    """torch counts the CPU's fused attention kernel as 0 FLOPs; the forward must count as the
    math path's two matrix products (QK^T and PV: 4 B H L^2 D), the backward as torch's formula."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import sdpa_backward_flop_count

    b, h, length, d = 2, 3, 40, 16
    q, k, v = (torch.randn(b, h, length, d, requires_grad=True) for _ in range(3))

    def attention(backend, backward=False):
        with sdpa_kernel(backend):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
            if backward:
                out.sum().backward()

    forward = count_flops(lambda: attention(SDPBackend.FLASH_ATTENTION))
    assert forward == count_flops(lambda: attention(SDPBackend.MATH)) == 4 * b * h * length ** 2 * d
    shape = (b, h, length, d)
    assert (count_flops(lambda: attention(SDPBackend.FLASH_ATTENTION, backward=True))
            == forward + sdpa_backward_flop_count(shape, shape, shape, shape))


X = torch.randn(8, 16, 64, 64)
WEIGHT, MATRIX, TOKENS = torch.randn(32, 16, 3, 3), torch.randn(16 * 64 * 64, 64), X.flatten(2).transpose(1, 2).contiguous()


@pytest.mark.parametrize("work, kind", [
    (lambda: torch.nn.functional.conv2d(X, WEIGHT), "convolution"),
    (lambda: torch.nn.functional.group_norm(X, 4), "normalisation"),
    (lambda: torch.nn.functional.scaled_dot_product_attention(TOKENS, TOKENS, TOKENS), "attention"),
    (lambda: X.flatten(1) @ MATRIX, "other matmul"),
    (lambda: torch.sigmoid(X) * X + 1, "elementwise and other"),
])
def test_time_by_kind_puts_an_operators_time_in_its_kind(work, kind):
    shares = time_by_kind(work)
    assert abs(sum(shares.values()) - 1) < 1e-9
    assert shares[kind] > 0.8, shares


def test_time_by_kind_counts_the_fused_optimizer_step():
    model = torch.nn.Linear(2048, 2048)
    optimizer = torch.optim.AdamW(model.parameters(), fused=True)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    assert time_by_kind(optimizer.step)["optimizer"] > 0.8
