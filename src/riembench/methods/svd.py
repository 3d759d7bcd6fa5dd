"""Truncated SVD at equal stored size: the linear baseline every other table-5 row must beat.

Storage is ``left = U_r S_r`` (m x r) and ``right = V_r^T`` (r x n): folding the singular values
into one factor costs nothing extra, so a rank-r approximation stores exactly ``r (m + n)``
numbers and the rank is the largest with ``r (m + n) <= budget``. By Eckart-Young this is the
best rank-r approximation in Frobenius norm, which is why it is the reference the nonlinear
methods are compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from riembench.errors import ImpossibleBudget, RiembenchError
from riembench.methods.base import METHODS, MatrixApprox, MethodConfig, PerSeedMatrixMethod

SOLVERS = ("auto", "exact", "lowrank")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: seed of the randomized solver: fixed (not the run's seed) so the method stays deterministic
_LOWRANK_SEED = 0


@dataclass
class SvdConfig(MethodConfig):
    name: str = "svd"
    #: fixed rank; None solves the largest rank that fits the budget
    rank: int | None = None
    #: "exact" (torch.linalg.svd), "lowrank" (randomized torch.svd_lowrank), or "auto": lowrank
    #: only when the matrix is large and the rank small, where the exact SVD wastes most work
    solver: str = "auto"
    #: auto picks lowrank when min(m, n) >= lowrank_min_size and rank <= lowrank_max_ratio * min(m, n)
    lowrank_min_size: int = 4000
    lowrank_max_ratio: float = 0.1
    #: power iterations and oversampling of the randomized solver
    niter: int = 4
    oversample: int = 10
    #: float64 keeps an exactly low-rank matrix exact to ~1e-12; float32 is faster on a GPU
    dtype: str = "float64"

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise RiembenchError(f"svd solver must be one of {', '.join(SOLVERS)}, got '{self.solver}'")
        if self.dtype not in DTYPES:
            raise RiembenchError(f"svd dtype must be one of {', '.join(DTYPES)}, got '{self.dtype}'")
        if self.rank is not None and self.rank < 1:
            raise RiembenchError(f"svd rank must be >= 1 or null, got {self.rank}")


def svd_params(m: int, n: int, rank: int) -> int:
    """Stored numbers of a rank-``rank`` factorization: U S (m x r) and V^T (r x n)."""
    return rank * (m + n)


def solve_svd_rank(m: int, n: int, budget: int) -> int:
    """Largest rank whose factors fit ``budget`` (capped at full rank, where SVD is exact)."""
    rank = min(budget // (m + n), m, n)
    if rank < 1:
        raise ImpossibleBudget(f"svd: a {m}x{n} matrix needs at least {svd_params(m, n, 1)} "
                               f"parameters (rank 1); budget is {budget}")
    return rank


def truncated_svd(target: torch.Tensor, rank: int, solver: str = "exact", niter: int = 4,
                  oversample: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` factors ``(left, right)`` of ``target`` with ``left @ right`` its best
    rank-``rank`` approximation; ``left = U S`` (m x r), ``right = V^T`` (r x n).

    The singular values go into ``left`` so the pair is exactly what is stored (no separate
    vector of r values). Works in ``target``'s dtype and device: cast before calling for float64.
    ``solver="lowrank"`` uses torch's randomized SVD under a fixed seed, so repeated calls agree.
    """
    m, n = target.shape
    rank = min(rank, m, n)
    if solver == "lowrank":
        q = min(rank + oversample, m, n)
        devices = [target.device] if target.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_LOWRANK_SEED)
            u, s, v = torch.svd_lowrank(target, q=q, niter=niter)
        return u[:, :rank] * s[:rank], v[:, :rank].T.contiguous()
    if solver != "exact":
        raise ValueError(f"truncated_svd solver must be 'exact' or 'lowrank', got '{solver}'")
    u, s, vh = torch.linalg.svd(target, full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank].contiguous()


@METHODS.register("svd", SvdConfig)
class SvdMethod(PerSeedMatrixMethod):
    """Truncated SVD; the seed has no effect (the randomized solver runs under a fixed seed)."""

    cfg: SvdConfig
    deterministic = True

    def resolve_solver(self, m: int, n: int, rank: int) -> str:
        if self.cfg.solver != "auto":
            return self.cfg.solver
        small = min(m, n)
        large_and_thin = small >= self.cfg.lowrank_min_size and rank <= self.cfg.lowrank_max_ratio * small
        return "lowrank" if large_and_thin else "exact"

    def approximate_one(self, target: torch.Tensor, budget: int, seed: int,
                        device: torch.device) -> MatrixApprox:
        m, n = target.shape
        rank = self.cfg.rank if self.cfg.rank is not None else solve_svd_rank(m, n, budget)
        rank = min(rank, m, n)
        if svd_params(m, n, rank) > budget:
            raise ImpossibleBudget(f"svd: rank {rank} needs {svd_params(m, n, rank)} parameters, "
                                   f"budget is {budget}")
        solver = self.resolve_solver(m, n, rank)
        work = target.to(device=device, dtype=DTYPES[self.cfg.dtype])
        left, right = truncated_svd(work, rank, solver, self.cfg.niter, self.cfg.oversample)
        a_hat = left @ right
        info: dict[str, Any] = {"rank": rank, "solver": solver, "dtype": self.cfg.dtype,
                                "rel_mse": _rel_mse(work, a_hat)}
        return MatrixApprox(a_hat.to(device="cpu", dtype=target.dtype), svd_params(m, n, rank), info)


def _rel_mse(target: torch.Tensor, approx: torch.Tensor) -> float:
    """Training-side fit quality (mse / variance of the entries), recorded for diagnosis."""
    return float((approx - target).square().mean() / target.var().clamp_min(1e-30))
