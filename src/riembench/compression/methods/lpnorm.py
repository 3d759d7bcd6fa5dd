"""Lp-norm neuron embedding (Pei & Wang, ICML 2023), the Euclidean predecessor of RieM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from riembench.compression.methods.embedding import EmbeddingMethod
from riembench.config.methods import LpNormConfig
from riembench.engine.embeddings import BatchedEmbedding, LpNormEmbedding


class LpNormMethod(EmbeddingMethod):
    cfg: LpNormConfig

    def dims_for_d(self, d: int, overrides: dict[str, Any]) -> dict[str, Any] | None:
        heads = int(overrides.get("heads") or self.cfg.heads)
        return None if d % heads else {"d": d, "heads": heads}

    def count(self, m: int, n: int, dims: dict[str, Any]) -> int:
        return LpNormEmbedding.count(m, n, dims["d"], dims["heads"], self.cfg.offset)

    def make(self, seeds: Sequence[int], m: int, n: int, dims: dict[str, Any]) -> LpNormEmbedding:
        return LpNormEmbedding(seeds, m, n, dims["d"], dims["heads"], self.cfg.p, self.cfg.offset)

    def start_name(self) -> str:
        return self.cfg.init

    def describe(self, model: BatchedEmbedding) -> dict[str, Any]:
        assert isinstance(model, LpNormEmbedding)  # what make builds
        return {"d": model.d, "heads": model.heads, "p": model.p}

