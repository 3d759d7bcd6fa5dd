"""Metrics shared by the tables. Table 5: normalized matrix-vector product error."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def matvec_error(target: torch.Tensor, approx: torch.Tensor, probes: torch.Tensor) -> float:
    """Mean over probe vectors x (columns of ``probes``) of ||Â x - A x||_2 / (||A x||_2 sqrt(m)).

    The sqrt(m) (m = output size) makes a predictor that outputs zeros score exactly
    1/sqrt(m), which is the value the poster's Nystroem and LLE rows show; see docs/table5.md.
    Computed in float64 so the metric itself adds no error at the 1e-6 level.
    """
    a = target.to(torch.float64)
    a_hat = approx.to(device=a.device, dtype=torch.float64)
    x = probes.to(device=a.device, dtype=torch.float64)
    z = a @ x
    z_hat = a_hat @ x
    num = torch.linalg.vector_norm(z_hat - z, dim=0)
    den = torch.linalg.vector_norm(z, dim=0).clamp_min(torch.finfo(torch.float64).tiny)
    return float((num / den).mean()) / math.sqrt(a.shape[0])


@torch.no_grad()
def relative_fidelity(target: torch.Tensor, approx: torch.Tensor) -> float:
    """mean|W - Ŵ| / std(W): the weight-space fidelity the RieM authors report."""
    w = target.to(torch.float64)
    return float((w - approx.to(w)).abs().mean() / w.std())
