"""Pipeline folders saved by release 0.1.0 (before cascade/ was split into subpackages) load, and sample
what that release sampled from them (tests/data/release_0_1/README.md says how they were made)."""

import json

import torch
from safetensors.torch import load_file

from cascade import Pipeline
from cascade.inference import one_shot
from conftest import ROOT

DATA = ROOT / "tests" / "data" / "release_0_1"
# Same weights, same code path: the numbers agree to float round-off; another CPU's kernels may round
# differently in the last bits, so the comparison allows that much and no more.
TOLERANCE = 1e-5


def test_a_base_and_sr3_cascade_of_release_0_1_samples_as_it_did():
    expected = load_file(DATA / "expected.safetensors")
    pipe = Pipeline.from_pretrained(DATA / "cascade")
    assert [s.kind.name for s in pipe.stages] == ["base", "sr3"] and pipe.stages[1].kind.residual
    samples = pipe([0, 2], seed=0, output_type="pt", progress=False)
    assert (samples - expected["samples"]).abs().max() < TOLERANCE
    x = torch.linspace(0, 1, 3 * 8 * 12).reshape(1, 3, 8, 12)
    assert (pipe.upscale(x, seed=3, output_type="pt", progress=False) - expected["upscaled"]).abs().max() < TOLERANCE


def test_a_one_shot_cascade_of_release_0_1_loads_plans_and_samples_as_it_did():
    expected = load_file(DATA / "expected.safetensors")
    pipe = Pipeline.from_pretrained(DATA / "one_shot")
    assert [s.kind.name for s in pipe.stages] == ["scene", "one_shot_sr3"] and pipe.stages[0].kind.positional
    assert json.loads((DATA / "one_shot" / "one_shot.json").read_text())["trained_on"] == [24, 16]
    scene = pipe.stages[0].sample(num_images=2, seed=1, size=(8, 16), progress=False)
    assert (scene - expected["scene"]).abs().max() < TOLERANCE
    up = Pipeline(pipe.stages[1:]).upscale((scene.clamp(-1, 1) + 1) / 2, seed=1, output_type="pt", progress=False)
    assert (up - expected["generated"]).abs().max() < TOLERANCE
    assert one_shot.generate(pipe, (40, 20), seed=0, progress=False).size == (40, 20)
