"""Lp-norm neuron embedding (Pei & Wang, ICML 2023), the Euclidean predecessor of RieM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from riembench.errors import RiembenchError
from riembench.fit import LpNormEmbedding
from riembench.init_mds import init_lpnorm_farfield, init_lpnorm_mds
from riembench.methods.base import METHODS
from riembench.methods.embedding import EmbeddingMethod, EmbeddingMethodConfig


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
        if self.init not in LPNORM_INITS:
            raise RiembenchError(f"lpnorm init must be one of {', '.join(LPNORM_INITS)}, "
                                 f"got '{self.init}'")


LPNORM_INITS = ("mds", "farfield", "random")


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

    def initialize(self, parts: Sequence[LpNormEmbedding], targets: Sequence[torch.Tensor],
                   seeds: Sequence[int]) -> dict[str, Any]:
        if self.cfg.init == "random":
            return {"init": "random"}
        if len(parts) > 1:
            return {"init": "random", "init_note": f"init {self.cfg.init} is for single layers: "
                    "a chain of shared neurons keeps the random init"}
        start = init_lpnorm_mds if self.cfg.init == "mds" else init_lpnorm_farfield
        return start(parts[0], targets[0], seeds=seeds)

    def describe(self, model: LpNormEmbedding) -> dict[str, Any]:
        return {"d": model.d, "heads": model.heads, "p": model.p}

