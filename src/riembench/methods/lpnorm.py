"""Lp-norm neuron embedding (Pei & Wang, ICML 2023), the Euclidean predecessor of RieM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from riembench.embeddings import LpNormEmbedding
from riembench.methods.base import METHODS
from riembench.methods.embedding import EmbeddingMethod, EmbeddingMethodConfig
from riembench.starts import check_init


@dataclass
class LpNormConfig(EmbeddingMethodConfig):
    name: str = "lpnorm"
    p: float = 2.0
    heads: int = 4
    #: fixed position dimension; None solves the largest that fits the budget
    d: int | None = None
    offset: bool = True
    #: data-free start (docs/init.md): "mds", classical MDS unfolding of W (lowest final error
    #: on 5 of 7 measured targets, far fewer steps); "farfield", a truncated-SVD start (p = 2);
    #: "random", the authors' uniform init. Chains of shared neurons keep the random init (no
    #: chained MDS yet; the record says so)
    init: str = "mds"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_init(LpNormEmbedding, self.init, "lpnorm")


@METHODS.register("lpnorm", LpNormConfig)
class LpNormMethod(EmbeddingMethod):
    cfg: LpNormConfig

    def paper_name(self) -> str:
        """The paper's row name ("lpnorm-p2"): table 1 reports each p separately."""
        return f"lpnorm-p{self.cfg.p:g}"

    def dims_for_d(self, d: int, overrides: dict[str, Any]) -> dict[str, Any] | None:
        heads = int(overrides.get("heads") or self.cfg.heads)
        return None if d % heads else {"d": d, "heads": heads}

    def count(self, m: int, n: int, dims: dict[str, Any]) -> int:
        return LpNormEmbedding.count(m, n, dims["d"], dims["heads"], self.cfg.offset)

    def make(self, seeds: Sequence[int], m: int, n: int, dims: dict[str, Any]) -> LpNormEmbedding:
        return LpNormEmbedding(seeds, m, n, dims["d"], dims["heads"], self.cfg.p, self.cfg.offset)

    def describe(self, model: LpNormEmbedding) -> dict[str, Any]:
        return {"d": model.d, "heads": model.heads, "p": model.p}

