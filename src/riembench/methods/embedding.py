"""What riem and lpnorm share as matrix methods: seeds batched through the fitting engine.

Each subclass only says how to size its embedding for a budget and how to build it; fitting,
failure handling and bookkeeping live here once.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from riembench.errors import ImpossibleBudget
from riembench.fit import BatchedEmbedding, FitConfig, fit
from riembench.methods.base import MatrixApprox, MatrixMethod, MethodConfig


@dataclass
class EmbeddingMethodConfig(MethodConfig):
    fit: FitConfig = field(default_factory=FitConfig)
    #: show a progress bar over fitting steps
    progress: bool = True


class EmbeddingMethod(MatrixMethod):
    cfg: EmbeddingMethodConfig

    @abstractmethod
    def build(self, target_shape: tuple[int, int], budget: int, seeds: Sequence[int]) -> BatchedEmbedding:
        """An embedding of one element per seed, sized to fit ``budget`` (ImpossibleBudget if not)."""

    def initialize(self, model: BatchedEmbedding, targets: torch.Tensor, seeds: Sequence[int]) -> dict[str, Any]:
        """Data-free initialisation from the targets (default: keep the random init)."""
        return {"init": "random"}

    def describe(self, model: BatchedEmbedding) -> dict[str, Any]:
        """Solved dimensions etc. worth recording with each seed."""
        return {}

    def approximate(self, target: torch.Tensor, budget: int, seeds: Sequence[int],
                    device: torch.device) -> list[MatrixApprox]:
        model = self.build(tuple(target.shape), budget, seeds).to(device)
        targets = target.to(device).expand(len(seeds), *target.shape)
        init_info = self.initialize(model, targets, seeds)
        result = fit(model, targets, self.cfg.fit,
                     progress=self.cfg.progress, desc=f"{self.cfg.name} x{len(seeds)} seeds")
        recon = model.reconstruct(self.cfg.fit.chunk_elems).cpu()
        info_common = {**self.describe(model), **init_info, "steps_run": result.steps_run,
                       "fit_wall_time_s": result.wall_time_s, "batched_seeds": len(seeds),
                       "fit_config": asdict(self.cfg.fit)}
        out = []
        for b, _seed in enumerate(seeds):
            info = {**info_common, "rel_mse": float(result.rel_mse[b]), "best_step": result.best_step[b]}
            if result.failed[b]:
                out.append(MatrixApprox(None, model.params_per_matrix, info, failed=result.failed[b]))
            else:
                out.append(MatrixApprox(recon[b], model.params_per_matrix, info))
        return out


def check_budget(name: str, params: int, budget: int) -> None:
    """Refuse an explicitly configured size (e.g. ``d``) that exceeds the budget, before fitting."""
    if params > budget:
        raise ImpossibleBudget(f"{name}: the configured size needs {params} parameters, budget is {budget}")
