"""The fitting engine's settings (``method.fit`` of RieM and Lp-norm)."""

from __future__ import annotations

from dataclasses import dataclass, field

from riembench.config.choices import FitSolver, Schedule, coerce_choices
from riembench.core.errors import RiembenchError


@dataclass
class FitConfig:
    #: upper bound on steps; the convergence test (``patience``) usually stops earlier
    steps: int = 2000
    #: "varpro": variable projection, the read-out (RieM's w, c; Lp-norm's lambda, c) solved
    #: exactly by least squares before every step and Adam on the rest; "adam": Adam on every
    #: parameter (the authors' procedure). benchmarks/convergence.py measures the difference
    solver: FitSolver = FitSolver.varpro
    #: Adam's learning rate (positions live in [0, 1), targets are standardised)
    lr: float = 0.1
    #: "constant" keeps lr after the warm-up; "cosine" decays to lr * min_lr_ratio at ``steps``
    schedule: Schedule = Schedule.constant
    min_lr_ratio: float = 0.01
    warmup: int = 20
    #: every ``eval_every`` steps the best state per element is kept
    eval_every: int = 25
    #: convergence test: an element stops when its best loss has not improved by ``min_delta``
    #: (relative) for this many evaluations (0: run all ``steps``); the fit ends when every
    #: element has stopped. Per element, so a seed's fit does not depend on its batch
    patience: int = 4
    min_delta: float = 1e-3
    #: bound on elements of the per-chunk intermediate (B * rows * n * K); sets memory use
    chunk_elems: int = field(default=2**24, metadata={"identity": False})
    #: a loss this many times the initial one counts as divergence
    diverge_factor: float = 1e6
    #: fraction of rows per step (stochastic steps are cheaper); evaluation steps use all rows
    row_fraction: float = 1.0

    def __post_init__(self) -> None:
        coerce_choices(self)
        if self.steps < 1 or self.lr <= 0 or self.eval_every < 1:
            raise RiembenchError("fit.steps and fit.eval_every must be >= 1 and fit.lr > 0")
        if not 0 < self.row_fraction <= 1:
            raise RiembenchError(f"fit.row_fraction must be in (0, 1], got {self.row_fraction}")
        if self.patience < 0 or self.min_delta < 0:
            raise RiembenchError("fit.patience and fit.min_delta must be >= 0")
