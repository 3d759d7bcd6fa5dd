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

from riembench.embeddings import ACTIVATIONS, RiemEmbedding, default_shifts
from riembench.errors import RiembenchError
from riembench.methods.base import METHODS
from riembench.methods.embedding import EmbeddingMethod, EmbeddingMethodConfig
from riembench.starts import check_init


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
    #: rows and columns as positions (starts/spectral.py; lowest final error on every
    #: target measured); "svd", the warm start that builds a truncated SVD at step 0
    #: (starts/svd_warm.py; best for short fits); "random", the authors' uniform init
    init: str = "spectral"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.activation not in ACTIVATIONS:
            raise RiembenchError(f"unknown riem activation '{self.activation}'; known: {', '.join(ACTIVATIONS)}")
        if self.combine not in ("sum", "difference"):
            raise RiembenchError(f"riem combine must be 'sum' or 'difference', got '{self.combine}'")
        check_init(RiemEmbedding, self.init, "riem")


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

    def describe(self, model: RiemEmbedding) -> dict[str, Any]:
        return {"d": model.d, "d_mu": model.d_mu, "shifts": model.shifts,
                "activation": model.activation, "wrap": model.wrap, "combine": model.combine}
