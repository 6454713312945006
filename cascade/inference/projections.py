"""What a stage's sampler can hold its x0 estimates to, as `Stage.sample` applies it (DDNM/ILVR-style: every
estimate replaced by the nearest one that satisfies the constraint, so any scheduler steps from it):

- `keeping`: an edit's kept pixels (outside its mask, the given image's);
- `consistent_with`: a low-res image the output must downsample to (generative-prior SR);
- `with_rows`: a row profile, each row's mean colour (a one-shot scene keeping its photo's horizons and bands).

Each takes the batch's `Conditioning` and returns it with its `project` composed after any earlier one.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..diffusion.resize import project_onto_lowres
from ..kinds.base import Conditioning, StageKind


def keeping(inputs: Conditioning, image: torch.Tensor, mask: torch.Tensor, n: int) -> Conditioning:
    """`inputs` whose x0 estimates take `image` outside `mask` (an edit, RePaint/DDNM-style: the
    sampler regenerates the masked pixels in agreement with the kept ones at every step)."""
    if image.shape[0] != n or mask.shape[0] != n or tuple(image.shape[-2:]) != tuple(inputs.size) or tuple(mask.shape[-2:]) != tuple(inputs.size):
        raise ValueError(f"the image to keep {tuple(image.shape)} and its mask {tuple(mask.shape)} must be "
                         f"[{n} x 3 x {inputs.size[0]} x {inputs.size[1]}]")
    known = inputs.start(image)  # in the space the model generates in
    before = inputs.project

    def project(x0):
        x0 = before(x0) if before is not None else x0
        return torch.where(mask.to(x0.device), x0, known.to(x0.device, x0.dtype))

    return replace(inputs, project=project)


def consistent_with(inputs: Conditioning, lowres: torch.Tensor, n: int, kind: StageKind) -> Conditioning:
    """`inputs` whose x0 estimates are projected onto the images that downsample to `lowres` (prior SR)."""
    if kind.takes_input:
        raise ValueError(f"lowres= (generative-prior SR) applies to stages without an input, not to a {kind.name} "
                         f"stage; its `consistent` setting does this for upsamplers")
    (h, w), (H, W) = lowres.shape[-2:], inputs.size
    if lowres.shape[0] != n or H % h or W % w or H // h != W // w:
        raise ValueError(f"lowres {tuple(lowres.shape)}: the output {W}x{H} must be an integer multiple of it, "
                         f"the same in both directions, for {n} images")
    factor, before = H // h, inputs.project

    def project(x0):
        x0 = before(x0) if before is not None else x0
        return inputs.start(project_onto_lowres(inputs.finish(x0), lowres.to(x0.device, x0.dtype), factor))

    return replace(inputs, project=project)


def with_rows(inputs: Conditioning, rows: torch.Tensor, n: int, kind: StageKind) -> Conditioning:
    """`inputs` whose x0 estimates, clamped to [-1, 1] as the image will be, have the row means `rows` (per colour
    channel): each row shifted by one offset (`row_offsets`)."""
    if kind.takes_input:
        raise ValueError(f"rows= (a row profile to keep) applies to stages without an input, not to a {kind.name} "
                         f"stage")
    if rows.dim() != 4 or rows.shape[0] not in (1, n) or tuple(rows.shape[1:]) != (3, inputs.size[0], 1):
        raise ValueError(f"rows {tuple(rows.shape)} must be [{n} or 1 x 3 x {inputs.size[0]} x 1] (a mean colour for "
                         f"each of the output's {inputs.size[0]} rows)")
    before = inputs.project

    def project(x0):
        x0 = before(x0) if before is not None else x0
        image = inputs.finish(x0)
        return inputs.start(image + row_offsets(image, rows.to(image.device, image.dtype)))

    return replace(inputs, project=project)


def row_offsets(image: torch.Tensor, rows: torch.Tensor, iterations: int = 48) -> torch.Tensor:
    """The offset d of each row and channel [N x C x H x 1] for which (image + d).clamp(-1, 1) has the row means
    `rows` (in [-1, 1]). Without the clamp d would be rows - the row means; with it, a dark row's texture
    clipped at -1 would lift its mean again, so d is found by bisection (the clamped mean rises monotonically
    with d, from -1 at d = -1 - max to 1 at d = 1 - min; 48 halvings leave 4 / 2^48)."""
    low = (-1 - image.amax(dim=-1, keepdim=True)).double()
    high = (1 - image.amin(dim=-1, keepdim=True)).double()
    x, target = image.double(), rows.double().expand_as(low)
    for _ in range(iterations):
        mid = (low + high) / 2
        above = (x + mid).clamp(-1, 1).mean(dim=-1, keepdim=True) > target
        high, low = torch.where(above, mid, high), torch.where(above, low, mid)
    return ((low + high) / 2).to(image.dtype)
