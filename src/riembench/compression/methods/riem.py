"""RieM: neuron embeddings with a learned Riemannian metric (Pei et al., ICML 2024).

Defaults follow the authors' released code (sum of positions, cyclic shifts c_s = s d // 6,
sigmoid); the poster's variant is ``combine=difference wrap=false shifts=[0,1,2]``. Note that
with an affine U_s, "sum" and "difference" are the same function family (R -> -R); they differ
only through the initialisation of R. See docs/riem.md for the measured effect of each option.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from riembench.compression.methods.embedding import EmbeddingMethod
from riembench.config.methods import RiemConfig
from riembench.engine.embeddings import BatchedEmbedding, RiemEmbedding, default_shifts


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

    def start_name(self) -> str:
        return self.cfg.init

    def describe(self, model: BatchedEmbedding) -> dict[str, Any]:
        assert isinstance(model, RiemEmbedding)  # what make builds
        return {"d": model.d, "d_mu": model.d_mu, "shifts": model.shifts,
                "activation": model.activation, "wrap": model.wrap, "combine": model.combine}
