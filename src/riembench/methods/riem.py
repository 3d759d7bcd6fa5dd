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
    init_riem_chain,
    init_riem_from_svd,
)
from riembench.init_mds import init_riem_spectral, init_riem_spectral_chain
from riembench.methods.base import METHODS
from riembench.methods.embedding import EmbeddingMethod, EmbeddingMethodConfig

RIEM_INITS = ("spectral", "svd", "random")


@dataclass
class RiemConfig(EmbeddingMethodConfig):
    name: str = "riem"
    #: position dimension d and metric dimension d_mu; None solves them from the budget
    d: int | None = None
    d_mu: int | None = None
    #: with d_mu unset: d_mu = round(d_mu_ratio * d) (authors' ResNet-50 example: 14/52)
    d_mu_ratio: float = 0.25
    #: floor on the solved d_mu: the SVD warm start needs >= 3 metric rows (a +- pair and the
    #: linear slot), which a small d (e.g. 10 for LeNet-5's FC layers) would otherwise not give
    d_mu_min: int = 3
    #: explicit shift set S (e.g. [0, 1, 2]); None uses the authors' s * d // n_shifts
    shifts: list[int] | None = None
    n_shifts: int = 6
    activation: str = "sigmoid"
    wrap: bool = True
    combine: str = "sum"
    #: data-free start (docs/init.md measures them): "spectral", principal coordinates of W's
    #: rows and columns as positions (init_mds.init_riem_spectral; lowest final error on every
    #: target measured); "svd", the warm start that builds a truncated SVD at step 0
    #: (fit.init_riem_from_svd; best for short fits); "random", the authors' uniform init
    init: str = "spectral"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.activation not in ACTIVATIONS:
            raise RiembenchError(f"unknown riem activation '{self.activation}'; known: {', '.join(ACTIVATIONS)}")
        if self.combine not in ("sum", "difference"):
            raise RiembenchError(f"riem combine must be 'sum' or 'difference', got '{self.combine}'")
        if self.init not in RIEM_INITS:
            raise RiembenchError(f"riem init must be one of {', '.join(RIEM_INITS)}, got '{self.init}'")


@METHODS.register("riem", RiemConfig)
class RiemMethod(EmbeddingMethod):
    cfg: RiemConfig

    def dims_for_d(self, d: int, overrides: dict[str, Any]) -> dict[str, Any] | None:
        c = self.cfg
        d_mu = overrides.get("d_mu") or c.d_mu or max(c.d_mu_min, round(c.d_mu_ratio * d))
        shifts = overrides.get("shifts") or c.shifts
        n_shifts = len(shifts) if shifts is not None else int(overrides.get("n_shifts") or c.n_shifts)
        shifts = list(shifts) if shifts is not None else default_shifts(d, n_shifts)
        return {"d": d, "d_mu": int(d_mu), "shifts": shifts}

    def count(self, m: int, n: int, dims: dict[str, Any]) -> int:
        return RiemEmbedding.count(m, n, dims["d"], dims["d_mu"], len(dims["shifts"]))

    def make(self, seeds: Sequence[int], m: int, n: int, dims: dict[str, Any]) -> RiemEmbedding:
        c = self.cfg
        return RiemEmbedding(seeds, m, n, dims["d"], dims["d_mu"], dims["shifts"], c.activation,
                             c.wrap, c.combine)

    def initialize(self, parts: Sequence[RiemEmbedding], targets: Sequence[torch.Tensor],
                   seeds: Sequence[int]) -> dict[str, Any]:
        if self.cfg.init == "random":
            return {"init": "random"}
        if self.cfg.init == "spectral":
            if len(parts) == 1:
                return init_riem_spectral(parts[0], targets[0], seeds=seeds)
            return init_riem_spectral_chain(parts, targets, seeds=seeds)
        if len(parts) == 1:
            ranks = [init_riem_from_svd(parts[0], targets[0], seeds=seeds)]
        else:
            ranks = init_riem_chain(parts, targets, seeds=seeds)
        if not any(ranks):  # e.g. a piecewise-linear activation: the random init was kept
            return {"init": "random", "init_note": "svd warm start not applicable to this setting"}
        return {"init": "svd", "init_rank": ranks[0] if len(ranks) == 1 else ranks}

    def describe(self, model: RiemEmbedding) -> dict[str, Any]:
        return {"d": model.d, "d_mu": model.d_mu, "shifts": model.shifts,
                "activation": model.activation, "wrap": model.wrap, "combine": model.combine}
