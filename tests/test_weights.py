"""Loaded models compute what the saved model computed: the storage of loaded weights
(cascade.models.weights), and checkpoints' own RNG states (cascade.training.checkpoints, cascade.diffusion.rng).

Why exact equality holds below: a loaded model has the same parameter values (safetensors stores
float32 bit for bit) in storage with the same properties as the saved model's (64-byte aligned,
contiguous), so the same kernels run on the same data in the same process, and oneDNN's CPU
kernels are deterministic for a given input, weight layout and thread count.
"""

import pickle

import pytest
import torch
from accelerate import Accelerator

from cascade.diffusion import rng
from cascade.errors import CheckpointError
from cascade.inference.pipeline import Pipeline
from cascade.models.classifier import ResNetClassifier
from cascade.models.ema import EMA
from cascade.models.weights import ALIGNMENT, misaligned, own_storage
from cascade.training import checkpoints as checkpoint
from conftest import run, tiny_stage


def test_a_loaded_stage_has_aligned_storage_and_samples_exactly_like_the_saved_one(tmp_path):
    saved = Pipeline([tiny_stage(8, num_classes=3), tiny_stage(16, scale=2, aug_level=0.1)])
    saved.save_pretrained(tmp_path / "pipe")
    loaded = Pipeline.from_pretrained(tmp_path / "pipe")
    for stage in loaded.stages:
        assert misaligned(stage.unet) == [], "loaded weights must live in aligned, contiguous storage of their own"

    def draw(pipe):
        return pipe(class_labels=[0, 2], generator=torch.Generator().manual_seed(0), output_type="pt", progress=False)

    torch.testing.assert_close(draw(loaded), draw(saved), rtol=0, atol=0)


def test_own_storage_copies_out_of_an_unaligned_buffer():
    conv = torch.nn.Conv2d(4, 4, 3)
    buffer = torch.zeros(conv.weight.numel() + 1)
    buffer[1:] = conv.weight.detach().flatten()
    parameter = conv.weight
    conv.weight.data = buffer[1:].view_as(conv.weight)  # 4 bytes into its buffer, as safetensors may hand it out
    assert conv.weight.data_ptr() % ALIGNMENT and misaligned(conv) == ["weight"]
    values = conv.weight.detach().clone()
    own_storage(conv)
    assert misaligned(conv) == [] and conv.weight is parameter  # the same Parameter object, new storage
    assert torch.equal(conv.weight, values) and conv.weight.untyped_storage().data_ptr() != buffer.data_ptr()


def test_a_loaded_classifier_is_aligned_and_exact(tmp_path):
    torch.manual_seed(0)
    model = ResNetClassifier(num_classes=3, width=8, stages=2, blocks=1, resolution=16).eval()
    model.save_pretrained(tmp_path / "clf")
    loaded = ResNetClassifier.from_pretrained(tmp_path / "clf").eval()
    assert misaligned(loaded) == []
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


@pytest.fixture
def saved_checkpoint(tmp_path):
    """A checkpoint written by save_checkpoint in this process, and what a resume needs to compare."""
    accelerator = Accelerator(cpu=True)
    model = accelerator.prepare(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Dropout(0.5)))
    ema = EMA(model)
    torch.manual_seed(123)
    path = checkpoint.save_checkpoint(accelerator, ema, tmp_path, step=1, batches_seen=1, keep_last=2)
    after_save = torch.rand(4)  # what the global RNG draws next: dropout masks, in training
    return accelerator, model, ema, path, after_save


def test_a_checkpoint_restores_aligned_weights_and_the_rng_from_its_own_file(saved_checkpoint):
    accelerator, model, ema, path, after_save = saved_checkpoint
    assert (path / "rng_state_0.safetensors").is_file() and not list(path.glob("*.pkl"))
    torch.manual_seed(999)
    checkpoint.load_checkpoint(accelerator, ema, path)
    assert torch.equal(torch.rand(4), after_save)
    assert misaligned(accelerator.unwrap_model(model)) == [] and misaligned(ema.model) == []


def test_a_planted_pickle_is_never_run_and_the_rng_comes_from_our_file(saved_checkpoint, tmp_path):
    accelerator, model, ema, path, after_save = saved_checkpoint
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (path / "random_states_0.pkl").write_bytes(pickle.dumps({"random_state": Payload()}))
    torch.manual_seed(999)
    checkpoint.load_checkpoint(accelerator, ema, path)
    assert not marker.exists()
    assert torch.equal(torch.rand(4), after_save)


def test_a_missing_or_broken_rng_file_is_an_error_naming_it(saved_checkpoint):
    accelerator, model, ema, path, _ = saved_checkpoint
    rng_file = path / "rng_state_0.safetensors"
    rng_file.write_bytes(rng_file.read_bytes()[:40])
    with pytest.raises(CheckpointError, match=r"rng_state_0\.safetensors: unreadable RNG state"):
        checkpoint.load_checkpoint(accelerator, ema, path)
    rng_file.unlink()
    with pytest.raises(CheckpointError, match=r"rng_state_0\.safetensors: missing \(deleted or never written\)"):
        checkpoint.load_checkpoint(accelerator, ema, path)


def test_rng_state_round_trip_covers_torch_numpy_and_python():
    import random

    import numpy as np

    np.random.randn()
    random.gauss(0, 1)  # both cache a second normal: that cached value is state too
    state = rng.global_state()
    expected = (torch.rand(3).tolist(), np.random.randn(3).tolist(), random.random(), random.gauss(0, 1))
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    rng.set_global_state(state)
    assert (torch.rand(3).tolist(), np.random.randn(3).tolist(), random.random(), random.gauss(0, 1)) == expected


def test_resume_without_the_rng_file_stops_with_one_line_naming_it(tmp_path):
    common = ["train/base.py", "--config", "configs/base_tiny.yaml", f"train.output_dir={tmp_path}",
              "train.save_every=2", "train.sample_every=0"]
    run(*common, "train.max_steps=2")
    (tmp_path / "checkpoints" / "step_00000002" / "rng_state_0.safetensors").unlink()
    proc = run(*common, "train.max_steps=4", "--resume", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "step_00000002/rng_state_0.safetensors: missing" in last, proc.stderr[-2000:]
    assert not (tmp_path / "checkpoints" / "step_00000004").exists()
