"""RieM: neuron embeddings with a learned Riemannian metric (Pei et al., ICML 2024).

Defaults follow the authors' released code (sum of positions, cyclic shifts c_s = s d // 6,
sigmoid); the poster's variant is ``combine=difference wrap=false shifts=[0,1,2]``. Note that
with an affine U_s, "sum" and "difference" are the same function family (R -> -R); they differ
only through the initialisation of R. See docs/riem.md for the measured effect of each option.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from riembench.errors import RiembenchError
from riembench.fit import (
    ACTIVATIONS,
    RiemEmbedding,
    default_shifts,
    init_riem_from_svd,
    solve_riem_dims,
)
from riembench.methods.base import METHODS
from riembench.methods.embedding import EmbeddingMethod, EmbeddingMethodConfig, check_budget


@dataclass
class RiemConfig(EmbeddingMethodConfig):
    name: str = "riem"
    #: position dimension d and metric dimension d_mu; None solves them from the budget
    d: int | None = None
    d_mu: int | None = None
    #: with d_mu unset: d_mu = round(d_mu_ratio * d) (authors' ResNet-50 example: 14/52)
    d_mu_ratio: float = 0.25
    #: explicit shift set S (e.g. [0, 1, 2]); None uses the authors' s * d // n_shifts
    shifts: list[int] | None = None
    n_shifts: int = 6
    activation: str = "sigmoid"
    wrap: bool = True
    combine: str = "sum"
    #: "svd": data-free warm start from a truncated SVD (see fit.init_riem_from_svd), seeds
    #: rotate the factors; "random": the authors' uniform init
    init: str = "svd"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise RiembenchError(f"unknown riem activation '{self.activation}'; known: {', '.join(ACTIVATIONS)}")
        if self.combine not in ("sum", "difference"):
            raise RiembenchError(f"riem combine must be 'sum' or 'difference', got '{self.combine}'")
        if self.init not in ("svd", "random"):
            raise RiembenchError(f"riem init must be 'svd' or 'random', got '{self.init}'")


@METHODS.register("riem", RiemConfig)
class RiemMethod(EmbeddingMethod):
    cfg: RiemConfig

    def build(self, target_shape: tuple[int, int], budget: int, seeds: Sequence[int]) -> RiemEmbedding:
        m, n = target_shape
        c = self.cfg
        n_shifts = len(c.shifts) if c.shifts is not None else c.n_shifts
        if c.d is not None:
            d, d_mu = c.d, c.d_mu or max(1, round(c.d_mu_ratio * c.d))
        else:
            d, d_mu = solve_riem_dims(m, n, budget, n_shifts, c.d_mu, c.d_mu_ratio)
        shifts = list(c.shifts) if c.shifts is not None else default_shifts(d, n_shifts)
        model = RiemEmbedding(seeds, m, n, d, d_mu, shifts, c.activation, c.wrap, c.combine)
        check_budget("riem", model.params_per_matrix, budget)
        return model

    def initialize(self, model: RiemEmbedding, targets: torch.Tensor, seeds: Sequence[int]) -> dict[str, Any]:
        if self.cfg.init == "random":
            return {"init": "random"}
        rank = init_riem_from_svd(model, targets, seeds=seeds)
        if rank == 0:  # e.g. a piecewise-linear activation: the random init was kept
            return {"init": "random", "init_note": "svd warm start not applicable to this setting"}
        return {"init": "svd", "init_rank": rank}

    def describe(self, model: RiemEmbedding) -> dict[str, Any]:
        return {"d": model.d, "d_mu": model.d_mu, "shifts": model.shifts,
                "activation": model.activation, "wrap": model.wrap, "combine": model.combine}
