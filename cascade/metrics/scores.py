"""Metric maths on Inception features, kept apart from where the features come from.

- `FeatureStats`: running mean and covariance (float64, unbiased, as the reference's `np.cov`) of
  features, saved to / loaded from `.npz` with the metadata that makes a cache entry valid.
- `frechet_distance`: FID (Heusel et al. 2017, eq. 6),
  ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).
  The reference takes `scipy.linalg.sqrtm(S1 @ S2)`, which on near-singular covariances (fewer
  samples than dimensions) returns small imaginary parts or non-finite values that it then patches
  with an eps * I offset. Only the trace is needed, and S1 S2 is similar to the symmetric PSD
  matrix S1^(1/2) S2 S1^(1/2), so Tr (S1 S2)^(1/2) = sum of the square roots of that matrix's
  eigenvalues: real by construction, with round-off negatives clamped to 0 (equal to scipy's
  answer to ~1e-10 relative where scipy's is well defined; tests/test_fid.py checks it).
- `inception_score`: IS (Salimans et al. 2016) as the reference code computes it: softmax of the
  logits, `splits` consecutive chunks, exp(mean KL(p(y|x) || p(y))) per chunk, mean and std
  (population std, as `np.std`) over chunks. No shuffling.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError


class FeatureStats:
    """Accumulates features [N x D] in float64; `mean`, `cov` and `count` when done."""

    def __init__(self, dim: int | None = None):
        self.count = 0
        self.total = None if dim is None else np.zeros(dim)
        self.outer = None if dim is None else np.zeros((dim, dim))
        self.meta: dict = {}
        self._mean = self._cov = None

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        f = np.asarray(features.cpu() if isinstance(features, torch.Tensor) else features, dtype=np.float64)
        if self.total is None:
            self.total, self.outer = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        self.count += f.shape[0]
        self.total += f.sum(axis=0)
        self.outer += f.T @ f

    @property
    def mean(self) -> np.ndarray:
        return self._mean if self._mean is not None else self.total / self.count

    @property
    def cov(self) -> np.ndarray:
        if self._cov is not None:
            return self._cov
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 samples, got {self.count}")
        mean = self.mean
        return (self.outer - self.count * np.outer(mean, mean)) / (self.count - 1)

    def save(self, path: str | Path, **meta) -> None:
        """Write mu, sigma, count and string metadata to `path` (.npz), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, mu=self.mean, sigma=self.cov, count=self.count,
                 **{f"meta_{k}": np.array(str(v)) for k, v in meta.items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        """Statistics from an .npz with `mu` and `sigma` (ours, or pytorch-fid's / a TTUR reference file)."""
        try:
            with np.load(path, allow_pickle=False) as data:
                stats = cls()
                stats._mean, stats._cov = data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
                stats.count = int(data["count"]) if "count" in data else 0
                stats.meta = {k[5:]: str(data[k]) for k in data.files if k.startswith("meta_")}
        except (OSError, ValueError, KeyError) as e:
            raise CheckpointError(f"{path}: not a statistics file with 'mu' and 'sigma' ({e})") from None
        return stats


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr (sigma1 sigma2)^(1/2) for symmetric PSD matrices, via eigenvalues (see module docstring).

    With sigma1 = V W V^T, S1^(1/2) S2 S1^(1/2) = V W^(1/2) (V^T S2 V) W^(1/2) V^T has the eigenvalues of
    W^(1/2) (V^T S2 V) W^(1/2), and the eigenvectors whose eigenvalue is numerically zero (below the rank
    tolerance of numpy's matrix_rank) contribute nothing: only the rank-r part is decomposed, so the
    covariance of a few samples (r < n) costs one eigendecomposition of d x d, not two (where its round-off
    stays below that tolerance: a covariance of features whose mean is far above their spread keeps more).
    The eigenvalues of the product below the same tolerance are dropped too: their square roots would add
    round-off, not signal."""
    w, v = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    keep = w > max(w.max(initial=0.0), 0.0) * len(w) * np.finfo(np.float64).eps
    root = v[:, keep] * np.sqrt(w[keep])  # V W^(1/2) on the numerical range of sigma1
    m = root.T @ sigma2 @ root
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    eig = eig[eig > max(eig.max(initial=0.0), 0.0) * len(eig) * np.finfo(np.float64).eps]  # the same cut
    return float(np.sqrt(eig).sum())


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different feature sizes: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def inception_score(logits: torch.Tensor | np.ndarray, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the IS over `splits` consecutive chunks of `logits` [N x K]."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    n = logits.shape[0]
    if n < splits:
        raise ValueError(f"inception score with {splits} splits needs at least {splits} images, got {n}")
    log_p = torch.log_softmax(logits, dim=1)
    scores = []
    for i in range(splits):
        part = log_p[i * n // splits:(i + 1) * n // splits]
        log_marginal = torch.logsumexp(part, dim=0) - np.log(part.shape[0])
        kl = (part.exp() * (part - log_marginal)).sum(dim=1)
        scores.append(kl.mean().exp().item())
    return float(np.mean(scores)), float(np.std(scores))
