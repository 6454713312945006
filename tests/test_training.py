"""The optimisation loop's pieces that need no training run (full runs: tests/test_cli.py)."""

import copy

import torch

from cascade.config.sections import TrainConfig
from cascade.training.loop import make_optimizer


def test_training_optimizer_is_fused_and_makes_torchs_reference_adamw_updates():
    cfg = TrainConfig(lr=1e-2, weight_decay=0.05, adam_betas=[0.8, 0.95])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(4, 8), torch.nn.Conv2d(8, 2, 1))
    reference_model = copy.deepcopy(model)
    optimizer = make_optimizer(model.parameters(), cfg)
    reference = torch.optim.AdamW(reference_model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.05,
                                  foreach=False)  # the per-parameter loop: the definition of the update
    assert optimizer.defaults["fused"] is True  # torch 2.13 has the CPU kernel
    for _ in range(5):
        for p, q in zip(model.parameters(), reference_model.parameters()):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        optimizer.step()
        reference.step()
    for p, q in zip(model.parameters(), reference_model.parameters()):
        assert (p - q).abs().max() < 1e-6
    # A state saved by one loads into a fresh one (resume after an upgrade, or the other way round).
    fresh = make_optimizer(reference_model.parameters(), cfg)
    fresh.load_state_dict(reference.state_dict())
    assert int(fresh.state_dict()["state"][0]["step"]) == 5
