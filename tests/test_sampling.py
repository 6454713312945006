import pytest
import torch

from cascade.config.sections import DiffusionConfig
from cascade.diffusion import schedule as diffusion
from cascade.diffusion.sampling import guided, make_sampler, sample
from conftest import randomize, tiny_unet

MU, SIGMA = 0.1, 0.3  # a 1-D Gaussian "data set" that fits inside [-1, 1]


def exact_denoiser(scheduler, prediction_type):
    """The optimal network for x0 ~ N(MU, SIGMA^2): E[eps | x_t] (or E[v | x_t]) in closed form."""
    abar = scheduler.alphas_cumprod.double()

    def denoise(x, t):
        a = abar[int(t)]
        eps = (1 - a).sqrt() * (x.double() - a.sqrt() * MU) / (a * SIGMA**2 + 1 - a)
        if prediction_type == "epsilon":
            return eps.float()
        x0 = (x.double() - (1 - a).sqrt() * eps) / a.sqrt()
        return (a.sqrt() * eps - (1 - a).sqrt() * x0).float()

    return denoise


@pytest.mark.parametrize("sampler, steps, prediction_type, schedule", [
    ("ddpm", 1000, "epsilon", "linear"),
    ("ddpm", 1000, "v_prediction", "cosine"),
    ("ddim", 500, "epsilon", "cosine"),
    ("dpm++", 200, "epsilon", "linear"),
    ("dpm++", 200, "v_prediction", "cosine"),
    ("unipc", 200, "epsilon", "cosine"),
    ("dpm++sde", 20, "v_prediction", "cosine"),  # the SR presets' default
    ("heun", 200, "v_prediction", "cosine"),  # converges, slowly on this schedule (see docs/performance.md)
])
@pytest.mark.filterwarnings("ignore:.*numerically unstable")  # the exact denoiser has no eps error to amplify
def test_samplers_recover_an_analytic_gaussian(sampler, steps, prediction_type, schedule):
    train = diffusion.make_noise_scheduler(DiffusionConfig(schedule=schedule, prediction_type=prediction_type))
    scheduler = make_sampler(sampler, train.config)
    x = sample(exact_denoiser(train, prediction_type), scheduler, (20000, 1), steps,
               generator=torch.Generator().manual_seed(0), progress=False)
    # 20000 samples: the standard error of the mean is 0.002 and of the std 0.0015.
    assert abs(x.mean().item() - MU) < 0.01
    assert abs(x.std().item() - SIGMA) / SIGMA < 0.03


def test_unknown_sampler():
    with pytest.raises(ValueError, match="unknown sampler 'heunn'"):
        make_sampler("heunn", diffusion.make_noise_scheduler(DiffusionConfig()).config)


def test_guidance_formula():
    model = randomize(tiny_unet()).eval()
    x, labels = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    cond = model(x, 50, class_labels=labels)
    uncond = model(x, 50, class_labels=torch.tensor([3, 3]))
    assert guided(model, 1.0, 3) is model
    torch.testing.assert_close(guided(model, 0.0, 3)(x, 50, class_labels=labels), uncond, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(guided(model, 3.0, 3)(x, 50, class_labels=labels), uncond + 3 * (cond - uncond),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpm++", "dpm++sde", "unipc", "euler", "heun"])
def test_seeded_sampling_is_reproducible(sampler):
    model = randomize(tiny_unet(), scale=0.05).eval()
    train = diffusion.make_noise_scheduler(DiffusionConfig())

    def run(seed):
        return sample(guided(model, 2.0, 3), make_sampler(sampler, train.config), (2, 3, 8, 8), 4,
                      generator=torch.Generator().manual_seed(seed), progress=False,
                      class_labels=torch.tensor([0, 1]))

    a, b, c = run(0), run(0), run(1)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_cosine_epsilon_with_an_ode_sampler_warns():
    cosine_eps = diffusion.make_noise_scheduler(DiffusionConfig(schedule="cosine")).config
    with pytest.warns(UserWarning, match="numerically unstable"):
        make_sampler("dpm++", cosine_eps)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_sampler("ddim", cosine_eps)
        make_sampler("dpm++", diffusion.make_noise_scheduler(DiffusionConfig(schedule="cosine",
                                                                             prediction_type="v_prediction")).config)


def test_sampler_is_the_same_for_a_reloaded_schedule(tmp_path):
    from diffusers import DDPMScheduler

    train = diffusion.make_noise_scheduler(DiffusionConfig(schedule="cosine", prediction_type="v_prediction"))
    train.save_config(tmp_path)
    reloaded = DDPMScheduler.from_pretrained(tmp_path)
    for name in ("ddpm", "ddim", "dpm++", "unipc", "euler"):
        a, b = make_sampler(name, train.config), make_sampler(name, reloaded.config)
        a.set_timesteps(10)
        b.set_timesteps(10)
        torch.testing.assert_close(a.timesteps, b.timesteps)
        assert a.timesteps[0] == 999  # trailing spacing starts at the last training timestep
        assert a.config.prediction_type == "v_prediction"
