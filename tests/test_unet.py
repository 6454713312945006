import itertools
import json

import pytest
import torch

from cascade.bench.profiling import count_flops
from cascade.models.unet import LAYOUTS, ResBlock, UNet
from cascade.models.weights import misaligned
from conftest import randomize, tiny_unet


@pytest.mark.parametrize("num_classes, use_aug, cond_channels, layout",
                         itertools.product([0, 3], [False, True], [0, 3], LAYOUTS))
def test_shapes_for_every_conditioning(num_classes, use_aug, cond_channels, layout):
    model = tiny_unet(num_classes=num_classes, use_aug_level=use_aug, cond_channels=cond_channels, out_channels=3,
                      layout=layout)
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


@pytest.mark.parametrize("layout", LAYOUTS)
def test_non_square_and_other_sizes(layout):
    model = tiny_unet(layout=layout)
    assert model(torch.randn(1, 3, 16, 24), 5).shape == (1, 3, 16, 24)


def _block_input_sizes(model, size):
    sizes = []
    hooks = [m.register_forward_pre_hook(lambda _, args: sizes.append(args[0].shape[-1]))
             for m in model.modules() if isinstance(m, ResBlock)]
    with torch.no_grad():
        model(torch.randn(1, 3, size, size), 5)
    for h in hooks:
        h.remove()
    return sizes


def test_efficient_layout_moves_the_blocks_to_half_resolution():
    kwargs = dict(sample_size=32, base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=2, attention_resolutions=(8,),
                  head_channels=16, num_classes=0)
    standard, efficient = tiny_unet(**kwargs), tiny_unet(**kwargs, layout="efficient")
    # standard: 2 encoder + 3 decoder blocks at 32 px; efficient: only the block that joins the input
    # convolution's skip, every other block at 16 px or less.
    assert sorted(_block_input_sizes(standard, 32), reverse=True)[:6] == [32] * 5 + [16]
    assert sorted(_block_input_sizes(efficient, 32), reverse=True)[:2] == [32, 16]
    assert (standard.size_multiple, efficient.size_multiple) == (4, 8)
    params = [sum(p.numel() for p in m.parameters()) for m in (standard, efficient)]
    assert abs(params[1] / params[0] - 1) < 0.05
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        flops = [count_flops(lambda m=m: m(x, 5)) for m in (standard, efficient)]
    assert flops[1] < 0.5 * flops[0]


def test_unknown_layout_is_an_error():
    with pytest.raises(ValueError, match="layout='fancy'.*standard, efficient"):
        tiny_unet(layout="fancy")


def test_model_saved_before_layouts_existed_loads_as_standard(tmp_path):
    model = randomize(tiny_unet()).eval()
    model.save_pretrained(tmp_path / "unet")
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    del config["layout"]
    (tmp_path / "unet" / "config.json").write_text(json.dumps(config))
    loaded = UNet.from_pretrained(tmp_path / "unet").eval()
    assert loaded.config.layout == "standard"
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(loaded(x, 7), model(x, 7), rtol=0, atol=0)  # exact: see tests/test_weights.py


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


@pytest.mark.parametrize("layout", LAYOUTS)
def test_save_load_round_trip_is_exact(tmp_path, layout):
    model = randomize(tiny_unet(use_aug_level=True, cond_channels=3, layout=layout)).eval()
    model.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = UNet.from_pretrained(tmp_path / "unet").eval()
    x, c = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    kwargs = dict(class_labels=torch.tensor([1, 2]), aug_level=0.3, cond_image=c)
    assert misaligned(loaded) == []  # the storage properties that make the next line exact on every CPU
    torch.testing.assert_close(loaded(x, 7, **kwargs), model(x, 7, **kwargs), rtol=0, atol=0)
    assert list(loaded.config.channel_mult) == list(model.config.channel_mult)
    assert loaded.config.layout == layout
