"""Lp-norm neuron embedding (Pei & Wang, ICML 2023), the Euclidean predecessor of RieM."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from riembench.fit import LpNormEmbedding, solve_lpnorm_d
from riembench.methods.base import METHODS
from riembench.methods.embedding import EmbeddingMethod, EmbeddingMethodConfig, check_budget


@dataclass
class LpNormConfig(EmbeddingMethodConfig):
    name: str = "lpnorm"
    p: float = 2.0
    heads: int = 4
    #: fixed position dimension; None solves the largest that fits the budget
    d: int | None = None
    offset: bool = True


@METHODS.register("lpnorm", LpNormConfig)
class LpNormMethod(EmbeddingMethod):
    cfg: LpNormConfig

    def build(self, target_shape: tuple[int, int], budget: int, seeds: Sequence[int]) -> LpNormEmbedding:
        m, n = target_shape
        d = self.cfg.d or solve_lpnorm_d(m, n, budget, self.cfg.heads, self.cfg.offset)
        model = LpNormEmbedding(seeds, m, n, d, self.cfg.heads, self.cfg.p, self.cfg.offset)
        check_budget("lpnorm", model.params_per_matrix, budget)
        return model

    def describe(self, model: LpNormEmbedding) -> dict[str, Any]:
        return {"d": model.d, "heads": model.heads, "p": model.p}

