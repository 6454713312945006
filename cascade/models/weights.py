"""Models loaded from safetensors compute exactly what the saved model computed.

safetensors (0.8) hands back CPU tensors in buffers it allocates itself, aligned to as little as
4 bytes, and diffusers' `ModelMixin.from_pretrained` *assigns* those tensors as the model's
parameters (`load_state_dict(assign=True)`, with or without `low_cpu_mem_usage`) instead of copying
them into the model's own. A freshly built model's tensors come from torch's allocator, 64-byte
aligned on the CPU. oneDNN can take another code path for unaligned weights, which rounds
differently: on some machines (an AVX-512 EPYC host with torch 2.13) a loaded UNet's forward pass
differed from the saved model's by up to 3e-7, and so did everything sampled from it.

`Model.from_pretrained` therefore copies every loaded parameter and buffer into storage of its own
(`own_storage`): allocated by torch, contiguous like a freshly built module's, and no longer tied to
the loader's buffer. The other loading paths copy already: `nn.Module.load_state_dict` (Accelerate's
`load_state`, the EMA in cascade.training.checkpoints, the Inception network) writes into existing parameters.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from torch import nn

ALIGNMENT = 64  # bytes: torch's CPU allocator (c10::gAlignment); CUDA's caching allocator gives 512


def own_storage(module: nn.Module) -> nn.Module:
    """Give every parameter and buffer of `module` a fresh, contiguous, allocator-aligned copy."""
    with torch.no_grad():
        for sub in module.modules():
            for table in (sub._parameters, sub._buffers):
                for name, tensor in table.items():
                    if tensor is not None:
                        fresh = tensor.detach().clone(memory_format=torch.contiguous_format)
                        if isinstance(tensor, nn.Parameter):
                            tensor.data = fresh  # keep the Parameter object (optimizers, hooks, requires_grad)
                        else:
                            table[name] = fresh
    return module


def weights_hash(module: nn.Module, length: int = 16) -> str:
    """A fingerprint of a module's weights: sha256 over every state-dict entry's name and bytes, hex, `length` digits."""
    import hashlib

    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return digest.hexdigest()[:length]


def misaligned(module: nn.Module) -> list[str]:
    """Names of parameters and buffers whose storage is not ALIGNMENT-aligned or not contiguous."""
    return [name for name, t in [*module.named_parameters(), *module.named_buffers()]
            if t.data_ptr() % ALIGNMENT or not t.is_contiguous()]


class Model(ModelMixin, ConfigMixin):
    """diffusers' ModelMixin whose `from_pretrained` returns a model with its own aligned storage."""

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        return own_storage(super().from_pretrained(*args, **kwargs))
