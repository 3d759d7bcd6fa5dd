"""The interface every compression method implements, and what it returns.

Matrix methods (table 5) approximate one target matrix under a budget of stored parameters.
``approximate`` takes all seeds at once so that methods with a batched engine (riem, lpnorm)
fit the seeds together; per-seed methods subclass :class:`PerSeedMatrixMethod`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from omegaconf import MISSING

from riembench.registry import Registry


@dataclass
class MethodConfig:
    """Fields common to every method; each method's schema subclasses this."""

    name: str = MISSING
    #: shown beside the method's name in tables (e.g. "fast" for a CPU-budget fit); part of the
    #: run's identity, so differently-labelled settings never share records
    label: str = ""


@dataclass
class MatrixApprox:
    """One seed's approximation of a target matrix.

    ``a_hat`` is the dense reconstruction (what the stored parameters decode to), ``n_params``
    the number of stored parameters it took, ``info`` method-specific facts worth recording
    (solved dimensions, final loss, steps). ``failed`` holds a reason when the seed failed
    (e.g. non-finite loss); ``a_hat`` is then ``None``.
    """

    a_hat: torch.Tensor | None
    n_params: int
    info: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None


class MatrixMethod(ABC):
    """A method that compresses a single matrix to at most ``budget`` stored parameters."""

    #: True when the seed does not change the result (the runner still records each seed).
    deterministic: ClassVar[bool] = False

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @abstractmethod
    def approximate(
        self, target: torch.Tensor, budget: int, seeds: Sequence[int], device: torch.device
    ) -> list[MatrixApprox]:
        """Return one approximation per seed, in the order of ``seeds``.

        Must raise :class:`riembench.errors.ImpossibleBudget` before any work when no setting
        fits in ``budget``, and must never return an approximation with ``n_params > budget``.
        """


class PerSeedMatrixMethod(MatrixMethod):
    """For methods with no batched engine: one independent call per seed."""

    @abstractmethod
    def approximate_one(
        self, target: torch.Tensor, budget: int, seed: int, device: torch.device
    ) -> MatrixApprox: ...

    def approximate(
        self, target: torch.Tensor, budget: int, seeds: Sequence[int], device: torch.device
    ) -> list[MatrixApprox]:
        return [self.approximate_one(target, budget, s, device) for s in seeds]


METHODS: Registry[type[MatrixMethod]] = Registry("method")
