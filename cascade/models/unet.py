"""The denoising UNet shared by every stage of the cascade (SR3 / ADM family).

Architecture (Ho et al. 2020; Saharia et al. 2021 "SR3"; Dhariwal & Nichol 2021 "ADM"): residual
blocks whose GroupNorm is modulated by the conditioning embedding (scale-shift, ADM's "AdaGN"),
multi-head self-attention at chosen resolutions (and in the middle block unless `mid_attention=False`),
strided-conv downsampling, nearest+conv upsampling, skip connections from every encoder block to the
decoder. `norm_groups=0` replaces every GroupNorm by a per-pixel LayerNorm over channels: with no
attention either, nothing then depends on the image's extent, so a denoiser trained on crops sees the
same statistics when it samples a whole picture (an option for the one-shot scene stage, measured worse than
GroupNorm there: docs/one_shot.md).

Two layouts (`layout`):
- "standard" (SR3 / ADM): each level's residual blocks run at that level's resolution, the first
  level at the full resolution; the encoder downsamples after a level, the decoder upsamples after.
- "efficient" (after Imagen's Efficient U-Net, Saharia et al. 2022, appendix B.1): every level
  downsamples *before* its blocks and the decoder upsamples after them, so the levels run at half
  the resolutions of "standard". One residual block at the full resolution joins the decoder's output
  with the input convolution's (without it, the demo SR stage kept visible noise:
  docs/performance.md). Same widths and, within 5%, parameters; 35-55% of the FLOPs (less with more levels).

The denoiser contract, the same for the base model and every SR3 upsampler:

    unet(x, t, class_labels=None, aug_level=None, cond_image=None, label_map=None, boundary=None)
        -> prediction [N x C x H x W]

- `x` [N x in_channels x H x W]: the noisy image x_t.
- `t` [N] or scalar: the diffusion timestep in [0, T).
- `class_labels` [N] long: a class in [0, num_classes), or `num_classes` (= `null_class`) for "no
  label"; None means all null. Classifier-free guidance contrasts a label with the null class.
- `aug_level` [N] or scalar float in [0, 1]: the conditioning-augmentation level, as a fraction of T
  (CDM section 3). Its embedding's last layer is zero-initialised, so it starts as a no-op.
- `cond_image` [N x cond_channels x H x W]: extra channels concatenated to x (SR3: the low-res
  image already upsampled to H x W).
- `label_map` [N x 1 x H x W] long (UNets with `num_labels`): a semantic label per pixel in
  [0, num_labels), or `num_labels` (= `null_label`) for "no label"; None means all null. Each pixel's
  label is looked up in a learned embedding of `label_embed_dim` channels, concatenated to x (a
  one-hot map through the first convolution, factored; cascade.data.label_maps).
- `boundary` [N x 1 x H x W] float in {0, 1} (UNets with `use_instances`): pix2pixHD's instance
  boundary map, one more input channel; None means no boundaries.

Each conditioning signal has its own embedding; they are summed into one vector per example.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from einops import rearrange
from torch import nn

from .weights import Model

LAYOUTS = ("standard", "efficient")
AUG_LEVEL_SPAN = 1000.0  # aug_level in [0, 1] is multiplied by this before its sinusoidal embedding


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N x dim] of (possibly fractional) timesteps [N] (Vaswani et al. 2017)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _per_example(value, n: int, device) -> torch.Tensor:
    """A scalar or [N] tensor/number as a float tensor [N]."""
    value = torch.as_tensor(value, device=device).float()
    return value.expand(n) if value.ndim == 0 else value


def size_multiple(channel_mult, layout: str) -> int:
    """2 ** (number of downsamplings): "standard" halves between levels, "efficient" before each."""
    return 2 ** (len(channel_mult) - (layout == "standard"))


def _groups(channels: int, wanted: int) -> int:
    groups = min(wanted, channels)
    while channels % groups:
        groups -= 1
    return groups


class PixelNorm(nn.Module):
    """LayerNorm over the channels of each position (ConvNeXt's), with a scale and shift per channel: no
    statistic crosses positions, so a crop and the whole picture are normalised alike (`norm_groups=0`)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, eps=1e-6).permute(0, 3, 1, 2)


def norm(channels: int, groups: int) -> nn.Module:
    """GroupNorm with `groups` groups (clamped to divide the channels), or PixelNorm for `groups` 0."""
    return PixelNorm(channels) if groups == 0 else nn.GroupNorm(_groups(channels, groups), channels)


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, scale-shift by the embedding, GroupNorm-SiLU-dropout-conv(zero), + skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = norm(cout, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = rearrange(self.emb(F.silu(emb)), "n (two c) -> two n c 1 1", two=2)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head self-attention over the H*W positions, with a zero-initialised output projection."""

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = max(1, channels // head_channels)
        self.norm = norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = _zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        q, k, v = rearrange(self.qkv(self.norm(x)), "n (three heads d) h w -> three n heads (h w) d",
                            three=3, heads=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(rearrange(out, "n heads (h w) d -> n (heads d) h w", h=h, w=w))


class Level(nn.Module):
    """Residual blocks (each followed by attention where asked) at one resolution."""

    def __init__(self, channels_in: list[int], cout: int, emb_dim: int, dropout: float, attention: bool,
                 head_channels: int, groups: int):
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(c, cout, emb_dim, dropout, groups) for c in channels_in)
        self.attns = nn.ModuleList(
            Attention(cout, head_channels, groups) if attention else nn.Identity() for _ in channels_in)


class UNet(Model):
    """See the module docstring for the call contract. Saved as safetensors + config.json."""

    memory_format = torch.channels_last  # of the activations inside forward (a speed setting, not saved)

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        cond_channels: int = 0,
        out_channels: int = 3,
        base_channels: int = 64,
        channel_mult: tuple[int, ...] = (1, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: tuple[int, ...] = (16,),
        head_channels: int = 32,
        dropout: float = 0.1,
        num_classes: int = 0,
        use_aug_level: bool = False,
        norm_groups: int = 32,
        layout: str = "standard",
        num_labels: int = 0,
        label_embed_dim: int = 16,
        use_instances: bool = False,
        mid_attention: bool = True,
    ):
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout={layout!r}: must be one of {', '.join(LAYOUTS)}")
        efficient = layout == "efficient"
        ch = base_channels
        emb_dim = 4 * ch
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        # One extra row: the learned "null" class used for unconditional / guided sampling.
        self.class_embed = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.aug_embed = (nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), _zero(nn.Linear(emb_dim, emb_dim)))
                          if use_aug_level else None)

        # One extra row: the learned "null" label map (classifier-free guidance on label maps).
        self.label_embed = nn.Embedding(num_labels + 1, label_embed_dim) if num_labels else None
        extra = (label_embed_dim if num_labels else 0) + int(use_instances)
        self.conv_in = nn.Conv2d(in_channels + cond_channels + extra, ch, 3, padding=1)
        widths = [ch * m for m in channel_mult]
        self.down, self.downsample = nn.ModuleList(), nn.ModuleList()
        skips, cin, res = [ch], ch, sample_size
        for i, width in enumerate(widths):
            if efficient:  # downsample first: this level's blocks run at half the previous resolution
                self.downsample.append(nn.Conv2d(cin, cin, 3, stride=2, padding=1))
                skips.append(cin)
                res //= 2
            ins = [cin] + [width] * (num_res_blocks - 1)
            self.down.append(Level(ins, width, emb_dim, dropout, res in attention_resolutions, head_channels, norm_groups))
            skips += [width] * num_res_blocks
            cin = width
            if not efficient and i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
                skips.append(width)
                res //= 2

        self.mid1 = ResBlock(cin, cin, emb_dim, dropout, norm_groups)
        self.mid_attn = Attention(cin, head_channels, norm_groups) if mid_attention else nn.Identity()
        self.mid2 = ResBlock(cin, cin, emb_dim, dropout, norm_groups)

        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for i, width in reversed(list(enumerate(widths))):
            ins = []
            for _ in range(num_res_blocks + 1):
                ins.append(cin + skips.pop())
                cin = width
            self.up.append(Level(ins, width, emb_dim, dropout, res in attention_resolutions, head_channels, norm_groups))
            if efficient or i > 0:
                self.upsample.append(nn.Conv2d(width, width, 3, padding=1))
                res *= 2
        # "efficient": the input convolution's output joins the decoder's in one full-resolution block
        self.out_block = ResBlock(cin + skips.pop(), ch, emb_dim, dropout, norm_groups) if efficient else None
        cin = ch if efficient else cin
        self.norm_out = norm(cin, norm_groups)
        self.conv_out = _zero(nn.Conv2d(cin, out_channels, 3, padding=1))

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this: 2 to the number of downsamplings."""
        return size_multiple(self.config.channel_mult, self.config.layout)

    @property
    def null_class(self) -> int:
        """The label index meaning "no class" (classifier-free guidance's unconditional branch)."""
        return self.config.num_classes

    @property
    def null_label(self) -> int:
        """The label-map ID meaning "no label" (the unconditional branch of guidance on label maps)."""
        return self.config.num_labels

    def spatial_inputs(self, x: torch.Tensor, cond_image, label_map, boundary) -> torch.Tensor:
        """x with the conditioning images concatenated: cond_image, the label embedding, the boundary map."""
        config, parts = self.config, [x]
        if config.cond_channels:
            if cond_image is None:
                raise ValueError(f"this UNet needs cond_image with {config.cond_channels} channels")
            parts.append(cond_image.to(x.dtype))
        elif cond_image is not None:
            raise ValueError("cond_image given to a UNet built with cond_channels=0")
        if self.label_embed is not None:
            n, _, h, w = x.shape
            if label_map is None:
                label_map = torch.full((n, 1, h, w), self.null_label, dtype=torch.long, device=x.device)
            if label_map.shape != (n, 1, h, w):
                raise ValueError(f"label_map must be [{n} x 1 x {h} x {w}], got {tuple(label_map.shape)}")
            parts.append(rearrange(self.label_embed(label_map[:, 0].long()), "n h w c -> n c h w").to(x.dtype))
        elif label_map is not None:
            raise ValueError("label_map given to a UNet built with num_labels=0")
        if config.use_instances:
            parts.append(torch.zeros_like(x[:, :1]) if boundary is None else boundary.to(x.dtype))
        elif boundary is not None:
            raise ValueError("boundary given to a UNet built with use_instances=False")
        return torch.cat(parts, dim=1) if len(parts) > 1 else x

    def embed(self, t, class_labels, aug_level, n: int, device) -> torch.Tensor:
        """The summed conditioning embedding [N x emb_dim]."""
        ch = self.config.base_channels
        emb = self.time_embed(timestep_embedding(_per_example(t, n, device), ch))
        if self.class_embed is not None:
            if class_labels is None:
                class_labels = torch.full((n,), self.null_class, device=device, dtype=torch.long)
            emb = emb + self.class_embed(class_labels.to(device))
        elif class_labels is not None:
            raise ValueError("class_labels given to a UNet built with num_classes=0")
        if self.aug_embed is not None:
            level = _per_example(0.0 if aug_level is None else aug_level, n, device)
            # Stretch [0, 1] to the timestep span so both embeddings use the same frequencies.
            emb = emb + self.aug_embed(timestep_embedding(level * AUG_LEVEL_SPAN, ch))
        elif aug_level is not None:
            raise ValueError("aug_level given to a UNet built with use_aug_level=False")
        return emb

    def forward(self, x: torch.Tensor, t, class_labels: torch.Tensor | None = None, aug_level=None,
                cond_image: torch.Tensor | None = None, label_map: torch.Tensor | None = None,
                boundary: torch.Tensor | None = None) -> torch.Tensor:
        x = self.spatial_inputs(x, cond_image, label_map, boundary)
        emb = self.embed(t, class_labels, aug_level, x.shape[0], x.device).to(x.dtype)

        # Channels-last activations: on the CPU (oneDNN) and on tensor-core GPUs convolutions and
        # GroupNorm run faster in NHWC (measured in eval/bench_throughput.py); the weights may stay contiguous.
        h = self.conv_in(x.contiguous(memory_format=self.memory_format))
        skips = [h]
        efficient = self.config.layout == "efficient"
        for i, level in enumerate(self.down):
            if efficient:
                h = self.downsample[i](h)
                skips.append(h)
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, emb))
                skips.append(h)
            if not efficient and i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, emb)), emb)
        for i, level in enumerate(self.up):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), emb))
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        if efficient:  # the full-resolution block joins the input convolution's skip
            h = self.out_block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(F.silu(self.norm_out(h))).contiguous()
