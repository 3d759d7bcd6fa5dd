"""The interface every compression method implements, and what it returns.

Matrix methods (table 5) approximate one target matrix under a budget of stored parameters.
``approximate`` takes all seeds at once so that methods with a batched engine (riem, lpnorm)
fit the seeds together; per-seed methods subclass :class:`PerSeedMatrixMethod`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from riembench.core.registry import Registry


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

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    @abstractmethod
    def approximate(
        self, target: torch.Tensor, budget: int, seeds: Sequence[int], device: torch.device
    ) -> list[MatrixApprox]:
        """Return one approximation per seed, in the order of ``seeds``.

        Must raise :class:`riembench.core.errors.ImpossibleBudget` before any work when no setting
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


# --------------------------------------------------------------------------------------------
# network methods (tables 1-4): compress a pretrained model, data-free


@dataclass
class SizeTarget:
    """What the size config asks of the selected layers, resolved by the runner per model.

    ``budget``: stored parameters allowed for the selected layers' *weights* (biases and the
    rest of the model are kept as they are and counted separately); ``None`` when the size
    config gives explicit dimensions instead (``dims``, e.g. ``{"d": 10, "d_mu": 3}``).
    ``bits``: the bit-width the method's own parameters are stored at (sizes in MB).
    """

    budget: int | None
    bits: int = 32
    dims: dict[str, Any] = field(default_factory=dict)
    #: how the budget was derived, for the record (e.g. "ratio 0.1 of 59134 weights")
    note: str = ""


@dataclass
class DevGuide:
    """What the ``dev_guided`` protocol hands a method with fitting checkpoints.

    ``score`` rebuilds nothing: it takes a converted model as it would be stored and returns
    its dev-split score (top-1 %, or AP; higher is better). The test split is never reachable
    from here. ``every``: fit steps between checkpoints; ``stop_at``: stop a seed once its dev
    score reaches this (the original's), or None.
    """

    score: Callable[[nn.Module], float]
    every: int
    stop_at: float | None = None


@dataclass
class NetworkJob:
    """One compression job: a pretrained model, which of its layers to touch, and the target.

    ``model`` is the pretrained network in eval mode on the CPU; methods must not modify it
    (they deep-copy), since the runner reuses it for the next method and for the original row.
    ``layers`` are module names (``dict(model.named_modules())`` keys) chosen by the method's
    ``layers`` setting. ``example_input`` is a zero tensor of the input shape (for tracing and
    FLOP counting; it is not data).
    """

    model: nn.Module
    layers: list[str]
    size: SizeTarget
    seeds: list[int]
    device: torch.device
    example_input: torch.Tensor
    #: the dev_guided protocol's evaluator (None: strict, the fit sees the weights only)
    dev: DevGuide | None = None
    #: range of the network input after normalization (NetworkTask.input_range); None: unknown
    input_range: tuple[float, float] | None = None


@dataclass
class CompressedNet:
    """One seed's compressed model (eval mode, CPU), facts worth recording, or a failure."""

    model: nn.Module | None
    info: dict[str, Any] = field(default_factory=dict)
    failed: str | None = None


class NetworkMethod(ABC):
    """A method that compresses a whole network (the layers named in the job), data-free.
    What the harness may ask of it is declared on its settings' schema
    (:class:`riembench.config.methods.MethodConfig`)."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg

    def prepare(self, model: nn.Module, layers: list[str]) -> tuple[nn.Module, dict[str, Any]]:
        """A data-free change of the pretrained model made *before* it is sized and compressed
        (default: none), and what was done, for the record.

        Why a step of its own: a size target must be solved on the model that is compressed.
        RieM with pruning (table 3) prunes first, so its budget is what the pruned model has
        left; solving it on the unpruned model would count the removed channels. Must not
        modify ``model``, and must keep the names in ``layers``.
        """
        return model, {}

    def layout_probe(self) -> NetworkMethod:
        """A cheap stand-in whose compressed model packs into an artifact of the same layout
        (tensors, shapes, bit-widths) as this method's, for measuring the container bytes a
        byte budget must leave room for (:mod:`riembench.sizing.byte_budget`). Default: the method
        itself (its compression is cheap); fitted methods return a shorter fit."""
        return self

    @abstractmethod
    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        """One compressed model per seed, in the order of ``job.seeds``.

        Raise :class:`riembench.core.errors.ImpossibleBudget` before any work when the size target
        cannot be met; a seed that fails for a reason the config determines (e.g. divergence)
        returns ``CompressedNet(None, info, failed=reason)``.
        """


def supports_networks(method: object) -> bool:
    return isinstance(method, NetworkMethod)
