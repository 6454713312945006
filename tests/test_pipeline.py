import pytest
import torch
from PIL import Image

from cascade import Pipeline
from cascade.config.sections import DiffusionConfig, SampleConfig
from cascade.diffusion.schedule import make_noise_scheduler
from cascade.errors import CheckpointError
from cascade.inference.stage import Stage
from conftest import randomize, tiny_unet


def tiny_pipeline():
    unet = randomize(tiny_unet(), scale=0.05).eval()
    defaults = SampleConfig(sampler="ddim", steps=3, guidance_scale=2.0)
    return Pipeline([Stage(unet, make_noise_scheduler(DiffusionConfig()), defaults=defaults, class_names=["a", "b", "c"])])


def test_call_returns_pil_and_tensors():
    pipe = tiny_pipeline()
    images = pipe([0, "c"], generator=torch.Generator().manual_seed(0), progress=False)
    assert len(images) == 2 and all(isinstance(i, Image.Image) and i.size == (8, 8) for i in images)
    tensor = pipe([0, 2], generator=torch.Generator().manual_seed(0), output_type="pt", progress=False)
    assert tensor.shape == (2, 3, 8, 8) and 0 <= tensor.min() and tensor.max() <= 1
    import numpy as np
    assert np.array_equal(np.asarray(images[1]), (tensor[1].permute(1, 2, 0) * 255).round().byte().numpy())


def test_labels_steps_and_guidance_change_the_output():
    pipe = tiny_pipeline()

    def run(**kwargs):
        kwargs.setdefault("class_labels", [0, 0])
        return pipe(generator=torch.Generator().manual_seed(0), output_type="pt", progress=False, **kwargs)

    base = run()
    assert not torch.allclose(base, run(class_labels=[1, 1]))
    assert not torch.allclose(base, run(steps=5))
    assert not torch.allclose(base, run(guidance_scale=1.0))
    torch.testing.assert_close(base, run(), rtol=0, atol=0)


def test_a_setting_of_none_clears_a_nullable_default_and_keeps_the_others():
    """`settings={"final_timestep": None}` returns a stage to its sampler's own end (None is that setting's value);
    None for any other field leaves the stored value, as `Pipeline.__call__(steps=None)` does."""
    stored = SampleConfig(sampler="lcm", steps=4, final_timestep=99)
    cleared = stored.replace({"final_timestep": None, "steps": None, "sampler": None})
    assert (cleared.final_timestep, cleared.steps, cleared.sampler) == (None, 4, "lcm")
    assert stored.replace({"steps": 2}).final_timestep == 99  # a field not named keeps its value
    stage = tiny_pipeline().stages[0].with_defaults({"sampler": "lcm", "final_timestep": 99})
    assert stage.settings({"final_timestep": None}).final_timestep is None
    assert stage.settings().final_timestep == 99


def test_save_load_round_trip_reproduces_samples(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = Pipeline.from_pretrained(tmp_path / "pipe")
    assert loaded.class_names == ["a", "b", "c"] and loaded.base.defaults.steps == 3
    a = pipe([0, 1, 2], generator=torch.Generator().manual_seed(4), output_type="pt", progress=False)
    b = loaded([0, 1, 2], generator=torch.Generator().manual_seed(4), output_type="pt", progress=False)
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # exact: why, in tests/test_weights.py's docstring


def test_bad_labels_and_folders(tmp_path):
    pipe = tiny_pipeline()
    with pytest.raises(ValueError, match="out of range"):
        pipe([5], progress=False)
    with pytest.raises(ValueError, match="unknown class name 'dog'"):
        pipe(["dog"], progress=False)
    with pytest.raises(CheckpointError, match="missing cascade.json"):
        Pipeline.from_pretrained(tmp_path)
    pipe.save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "stage_0" / "unet" / "config.json").unlink()
    with pytest.raises(CheckpointError, match="not a cascade stage"):
        Pipeline.from_pretrained(tmp_path / "p")
