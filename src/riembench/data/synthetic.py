"""Synthetic N x N matrices for table 5, in several named families, plus probe vectors.

The paper does not say how its matrix was generated, so every family is named in the table:
- ``lp_field``: a field of latent points, A[i, j] = sum_h lam_h ||u_i^h - v_j^h||_p (the form the
  Lp-norm embedding assumes; structured, so large compression is possible).
- ``kernel_field``: latent points with a Gaussian kernel, A[i, j] = exp(-||u_i - v_j||^2 / 2l^2).
- ``lowrank``: rank-r product plus iid noise.
- ``randn``: iid standard normal (nearly incompressible: the honest worst case).
- ``file``: a real matrix (e.g. a pretrained layer) from a ``.pt``/``.npy`` file, cropped to N x N.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from riembench.config.datasets import SyntheticConfig
from riembench.core.errors import RiembenchError
from riembench.core.validate import require_finite

FAMILIES = ("lp_field", "kernel_field", "lowrank", "randn", "file")
_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)




@dataclass
class MatrixTask:
    """One table-5 problem: the matrix and two disjoint sets of probe vectors (columns)."""

    family: str
    target: torch.Tensor
    dev_probes: torch.Tensor
    test_probes: torch.Tensor


def make_matrix(cfg: SyntheticConfig) -> torch.Tensor:
    if cfg.family not in FAMILIES:
        raise RiembenchError(f"unknown matrix family '{cfg.family}'; known: {', '.join(FAMILIES)}")
    if cfg.n < 2:
        raise RiembenchError(f"matrix size n must be >= 2, got {cfg.n}")
    g = torch.Generator().manual_seed(cfg.matrix_seed)
    n = cfg.n
    if cfg.family == "randn":
        return torch.randn(n, n, generator=g)
    if cfg.family == "lowrank":
        r = min(cfg.rank, n)
        a = torch.randn(n, r, generator=g) @ torch.randn(r, n, generator=g) / r**0.5
        return a + cfg.noise * a.std() * torch.randn(n, n, generator=g)
    if cfg.family == "lp_field":
        if cfg.latent_dim % cfg.heads:
            raise RiembenchError(f"latent_dim {cfg.latent_dim} not divisible by heads {cfg.heads}")
        u = torch.rand(cfg.heads, n, cfg.latent_dim // cfg.heads, generator=g, dtype=torch.float64)
        v = torch.rand(cfg.heads, n, cfg.latent_dim // cfg.heads, generator=g, dtype=torch.float64)
        lam = torch.randn(cfg.heads, 1, 1, generator=g, dtype=torch.float64)
        return (lam * torch.cdist(u, v, p=cfg.p)).sum(0).float()
    if cfg.family == "kernel_field":
        u = torch.rand(n, cfg.latent_dim, generator=g, dtype=torch.float64)
        v = torch.rand(n, cfg.latent_dim, generator=g, dtype=torch.float64)
        return torch.exp(-torch.cdist(u, v).square() / (2 * cfg.length_scale**2)).float()
    return _load_file_matrix(cfg)


def _load_file_matrix(cfg: SyntheticConfig) -> torch.Tensor:
    if not cfg.path:
        raise RiembenchError("family=file needs dataset.path=/path/to/weights.pt (and dataset.key=... "
                             "for a state dict), e.g. a pretrained layer saved with torch.save")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise RiembenchError(f"matrix file not found: {path} (family=file expects a .pt/.pth "
                             "tensor or state dict, or a .npy array)")
    try:
        if path.suffix == ".npy":
            obj = torch.from_numpy(np.load(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file: say which
        raise RiembenchError(f"could not read matrix file {path}: {exc}") from exc
    if isinstance(obj, dict):
        if cfg.key is None or cfg.key not in obj:
            keys = [k for k, v in obj.items() if torch.is_tensor(v) and v.ndim == 2]
            raise RiembenchError(f"{path} is a state dict: set dataset.key to one of its 2-D "
                                 f"tensors: {', '.join(keys[:20])}")
        obj = obj[cfg.key]
    mat = torch.as_tensor(obj)
    if mat.ndim == 0 or not (mat.is_floating_point() or mat.dtype in _INT_DTYPES):
        raise RiembenchError(f"{path} holds a {mat.dtype} tensor of shape {tuple(mat.shape)}; "
                             "family=file needs a 2-D (or higher) numeric matrix")
    require_finite(mat, f"matrix '{cfg.key}'" if cfg.key else "matrix", path)
    mat = mat.float()
    mat = mat.reshape(mat.shape[0], -1)
    if min(mat.shape) < cfg.n:
        raise RiembenchError(f"matrix in {path} has shape {tuple(mat.shape)}, smaller than n={cfg.n}")
    return mat[: cfg.n, : cfg.n].contiguous()


def make_probes(n: int, count: int, seed: int, dist: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dist == "uniform":
        return torch.rand(n, count, generator=g)
    if dist == "normal":
        return torch.randn(n, count, generator=g)
    raise RiembenchError(f"unknown probe_dist '{dist}'; use uniform or normal")


def build_synthetic(cfg: SyntheticConfig, root: Path | None = None) -> MatrixTask:
    """``root`` (the data root every builder receives) is unused: the matrices are generated."""
    target = require_finite(make_matrix(cfg), f"generated {cfg.family} matrix")
    n = target.shape[1]
    # probe seeds are offset from the matrix seed so dev and test vectors never coincide
    dev = make_probes(n, cfg.dev_probes, 1_000_003 + cfg.matrix_seed, cfg.probe_dist)
    test = make_probes(n, cfg.test_probes, 2_000_003 + cfg.matrix_seed, cfg.probe_dist)
    return MatrixTask(cfg.family, target, dev, test)


