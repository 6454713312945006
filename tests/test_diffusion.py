import math

import numpy as np
import pytest
import torch

from cascade.config.sections import DiffusionConfig
from cascade.diffusion import schedule as diffusion
from conftest import tiny_unet


def reference_alpha_bar(cfg: DiffusionConfig) -> np.ndarray:
    """alpha-bar from the papers' definitions, computed independently of diffusers."""
    T = cfg.num_train_timesteps
    if cfg.schedule == "linear":  # Ho et al. 2020: betas linear in [beta_1, beta_T]
        betas = np.linspace(cfg.beta_start, cfg.beta_end, T, dtype=np.float64)
    else:  # Nichol & Dhariwal 2021, eq. 17, betas clipped at 0.999
        f = lambda t: math.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = np.array([min(1 - f(i + 1) / f(i), 0.999) for i in range(T)])
    return np.cumprod(1 - betas)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_noising_matches_diffusers_and_the_closed_form(schedule):
    cfg = DiffusionConfig(schedule=schedule)
    scheduler = diffusion.make_noise_scheduler(cfg)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(6, 3, 4, 4, generator=g) * 2 - 1, torch.randn(6, 3, 4, 4, generator=g)
    t = torch.tensor([0, 1, 250, 500, 998, 999])
    ours = diffusion.add_noise(scheduler, x0, noise, t)
    torch.testing.assert_close(ours, scheduler.add_noise(x0, noise, t))
    abar = torch.from_numpy(reference_alpha_bar(cfg)[t.numpy()]).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(ours, abar.sqrt() * x0 + (1 - abar).sqrt() * noise, rtol=1e-5, atol=1e-5)


def test_v_target_matches_the_closed_form():
    cfg = DiffusionConfig(prediction_type="v_prediction")
    scheduler = diffusion.make_noise_scheduler(cfg)
    x0, noise = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4)
    t = torch.tensor([5, 400, 990])
    abar = torch.from_numpy(reference_alpha_bar(cfg)[t.numpy()]).float().view(-1, 1, 1, 1)
    torch.testing.assert_close(diffusion.target(scheduler, x0, noise, t),
                               abar.sqrt() * noise - (1 - abar).sqrt() * x0, rtol=1e-5, atol=1e-5)
    eps_sched = diffusion.make_noise_scheduler(DiffusionConfig())
    assert diffusion.target(eps_sched, x0, noise, t) is noise


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_goes_down_when_overfitting_one_batch(prediction_type):
    scheduler = diffusion.make_noise_scheduler(DiffusionConfig(prediction_type=prediction_type))
    model = tiny_unet()
    x0 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.tensor([0, 1, 2, 0])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_loss():  # the same timesteps and noise every time, so values are comparable
        return diffusion.training_loss(model, scheduler, x0, generator=torch.Generator().manual_seed(1),
                                       class_labels=labels)

    with torch.no_grad():
        before = fixed_loss().item()
    for step in range(60):
        loss = diffusion.training_loss(model, scheduler, x0, generator=torch.Generator().manual_seed(step % 4),
                                       class_labels=labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = fixed_loss().item()
    assert after < 0.5 * before, (before, after)


def test_drop_labels_rate():
    labels = torch.zeros(20000, dtype=torch.long)
    dropped = diffusion.drop_labels(labels, null_class=7, p=0.25, generator=torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 7}
    assert abs((dropped == 7).float().mean().item() - 0.25) < 0.015
    assert diffusion.drop_labels(labels, 7, 0.0) is labels
