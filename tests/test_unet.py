import itertools

import pytest
import torch

from cascade.unet import UNet
from conftest import randomize, tiny_unet


@pytest.mark.parametrize("num_classes, use_aug, cond_channels", itertools.product([0, 3], [False, True], [0, 3]))
def test_shapes_for_every_conditioning(num_classes, use_aug, cond_channels):
    model = tiny_unet(num_classes=num_classes, use_aug_level=use_aug, cond_channels=cond_channels, out_channels=3)
    x = torch.randn(2, 3, 8, 8)
    kwargs = {}
    if num_classes:
        kwargs["class_labels"] = torch.tensor([0, 3])  # 3 = the null class
    if use_aug:
        kwargs["aug_level"] = torch.tensor([0.0, 0.5])
    if cond_channels:
        kwargs["cond_image"] = torch.randn(2, cond_channels, 8, 8)
    for t in (torch.tensor([10, 900]), 500, torch.tensor(3)):
        assert model(x, t, **kwargs).shape == (2, 3, 8, 8)


def test_non_square_and_other_sizes():
    model = tiny_unet()
    assert model(torch.randn(1, 3, 16, 24), 5).shape == (1, 3, 16, 24)


def test_aug_level_embedding_starts_as_noop():
    model = tiny_unet(use_aug_level=True)
    randomize(model)
    with torch.no_grad():  # zero the aug embedding's last layer again, as at construction
        model.aug_embed[-1].weight.zero_()
        model.aug_embed[-1].bias.zero_()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x, 10, aug_level=0.0), model(x, 10, aug_level=0.8), rtol=0, atol=0)
    randomize(model, seed=3)
    assert not torch.allclose(model(x, 10, aug_level=0.0), model(x, 10, aug_level=0.8))


def test_class_labels_change_the_output():
    model = randomize(tiny_unet())
    x = torch.randn(2, 3, 8, 8)
    a = model(x, 100, class_labels=torch.tensor([0, 0]))
    b = model(x, 100, class_labels=torch.tensor([1, 1]))
    null = model(x, 100, class_labels=None)
    assert not torch.allclose(a, b) and not torch.allclose(a, null)
    torch.testing.assert_close(null, model(x, 100, class_labels=torch.tensor([3, 3])))


def test_missing_or_unexpected_conditioning_is_an_error():
    with pytest.raises(ValueError, match="needs cond_image"):
        tiny_unet(cond_channels=3)(torch.randn(1, 3, 8, 8), 1)
    with pytest.raises(ValueError, match="num_classes=0"):
        tiny_unet(num_classes=0)(torch.randn(1, 3, 8, 8), 1, class_labels=torch.tensor([0]))


def test_save_load_round_trip_is_exact(tmp_path):
    model = randomize(tiny_unet(use_aug_level=True, cond_channels=3)).eval()
    model.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = UNet.from_pretrained(tmp_path / "unet").eval()
    x, c = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    kwargs = dict(class_labels=torch.tensor([1, 2]), aug_level=0.3, cond_image=c)
    torch.testing.assert_close(loaded(x, 7, **kwargs), model(x, 7, **kwargs), rtol=0, atol=0)
    assert list(loaded.config.channel_mult) == list(model.config.channel_mult)
