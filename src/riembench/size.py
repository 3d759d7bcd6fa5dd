"""Size settings: what a run may store, and how each setting becomes a budget.

One registry entry per way a paper states a size, each resolved the same way for every method,
so that "equal size" means the same thing in every row of a table:

* ``ratio``: a fraction of the dense weights of the selected layers (table 5's T_comp/T_naive,
  or "compress the FC layers to 10%").
* ``params``: an absolute count of stored numbers for the selected layers, biases included
  (table 1 states FC sizes this way: "6.3K"); the weights' budget is what is left after the
  biases, which every method keeps as they are.
* ``dims``: explicit dimensions (d, d_mu, shifts, heads); checked, not solved.
* ``mb``: a whole-model size in (decimal) megabytes at a bit-width (tables 2-4 state sizes
  this way); everything the method does not compress (biases, other layers, BatchNorm
  statistics) is counted at the same bit-width.

An impossible setting raises :class:`~riembench.errors.ImpossibleBudget` before any fitting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from riembench.cost import stored_tensors
from riembench.errors import ImpossibleBudget, RiembenchError
from riembench.methods.base import SizeTarget
from riembench.network import bias_count, dense_weight_count
from riembench.registry import Registry
from riembench.validate import check_number

SIZES: Registry[type] = Registry("size")


@dataclass
class RatioSizeConfig:
    """Budget as a fraction of the dense weights (matrix: of its m * n entries)."""

    name: str = "ratio"
    ratio: float = 0.1

    def __post_init__(self) -> None:
        # a ratio of 1 or more stores at least the dense size: nothing is compressed
        check_number(self.ratio, "size.ratio (a fraction of the dense size)", low=0, high=1,
                     low_open=True, high_open=True)


@dataclass
class ParamsSizeConfig:
    """At most ``params`` stored numbers for the selected layers, their biases included."""

    name: str = "params"
    params: int = 10_000

    def __post_init__(self) -> None:
        check_number(self.params, "size.params", low=1)


@dataclass
class DimsSizeConfig:
    """Explicit embedding dimensions; ``null`` fields fall back to the method's config."""

    name: str = "dims"
    d: int | None = None
    d_mu: int | None = None
    n_shifts: int | None = None
    shifts: list[int] | None = None
    heads: int | None = None

    def __post_init__(self) -> None:
        for key in ("d", "d_mu", "n_shifts", "heads"):
            if getattr(self, key) is not None:
                check_number(getattr(self, key), f"size.{key}", low=1)
        for shift in self.shifts or []:
            check_number(shift, "size.shifts entry", low=0)


@dataclass
class MbSizeConfig:
    """A whole-model size: ``mb`` decimal megabytes with every stored number at ``bits``."""

    name: str = "mb"
    mb: float = 5.0
    bits: int = 8

    def __post_init__(self) -> None:
        check_number(self.mb, "size.mb", low=0, low_open=True)
        check_number(self.bits, "size.bits", low=1, high=32)


for _name, _schema in (("ratio", RatioSizeConfig), ("params", ParamsSizeConfig),
                       ("dims", DimsSizeConfig), ("mb", MbSizeConfig)):
    SIZES.register(_name, _schema)(_schema)


def matrix_budget(size_cfg: Any, shape: tuple[int, int], check: bool = True) -> int:
    """Stored-parameter budget of a single matrix task (table 5)."""
    m, n = shape
    if size_cfg.name == "ratio":
        budget = int(size_cfg.ratio * m * n)
    elif size_cfg.name == "params":
        budget = int(size_cfg.params)
    else:
        raise RiembenchError(f"size '{size_cfg.name}' does not apply to a matrix task; use "
                             "size=ratio or size=params")
    if check and budget < 1:
        raise ImpossibleBudget(f"size {describe(size_cfg)} gives a budget of {budget} parameters "
                               f"for a {m}x{n} matrix")
    if check and budget >= m * n:
        raise ImpossibleBudget(f"size {describe(size_cfg)} allows {budget} parameters for a "
                               f"{m}x{n} matrix of {m * n} entries: that is no compression")
    return budget


def network_target(size_cfg: Any, model: nn.Module, layers: list[str]) -> SizeTarget:
    """The budget for the selected layers' weights of ``model`` under ``size_cfg``."""
    weights = dense_weight_count(model, layers)
    biases = bias_count(model, layers)
    desc = describe(size_cfg)
    if size_cfg.name == "ratio":
        budget = int(size_cfg.ratio * weights)
        target = SizeTarget(budget, note=f"{desc} of {weights} weights")
    elif size_cfg.name == "params":
        budget = int(size_cfg.params) - biases
        target = SizeTarget(budget, note=f"{desc} incl. {biases} biases")
    elif size_cfg.name == "dims":
        dims = {k: v for k, v in vars(size_cfg).items() if k != "name" and v is not None}
        return SizeTarget(None, dims=dims, note=desc)
    elif size_cfg.name == "mb":
        # everything stored but the compressed weights: biases, the uncompressed layers, and
        # persistent buffers (BatchNorm statistics), as riembench.cost counts the stored size
        total = stored_tensors(model)[1]
        numbers = int(size_cfg.mb * 1e6 * 8 / size_cfg.bits)
        budget = numbers - (total - weights)
        target = SizeTarget(budget, bits=int(size_cfg.bits),
                            note=f"{desc}: {numbers} numbers, {total - weights} outside the "
                                 "compressed weights (buffers included)")
    else:
        raise RiembenchError(f"unknown size '{size_cfg.name}'; known: {', '.join(SIZES.names())}")
    if target.budget is not None and size_cfg.name != "mb" and target.budget >= weights:
        raise ImpossibleBudget(f"size {desc} allows {target.budget} numbers for {weights} dense "
                               f"weights of {len(layers)} layer(s): that is no compression (the "
                               "target is at least the original size)")
    if target.budget is not None and target.budget < 1:
        raise ImpossibleBudget(f"size {desc} leaves {target.budget} parameters for the weights of "
                               f"{len(layers)} layer(s) ({weights} dense weights, {biases} biases)")
    return target


def describe(size_cfg: Any) -> str:
    """Short human label of a size setting, used in table cells (``params=6300``)."""
    fields = {k: v for k, v in vars(size_cfg).items() if k != "name" and v is not None}
    return f"{size_cfg.name}(" + ",".join(f"{k}={v}" for k, v in fields.items()) + ")"
