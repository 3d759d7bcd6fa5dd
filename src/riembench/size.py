"""Size settings: what a run may store, and how each setting becomes a budget.

One registry entry per way a paper states a size, each resolved the same way for every method,
so that "equal size" means the same thing in every row of a table:

* ``ratio``: a fraction of the dense weights of the selected layers (table 5's T_comp/T_naive,
  or "compress the FC layers to 10%").
* ``params``: an absolute count of stored numbers for the selected layers, biases included
  (table 1 states FC sizes this way: "6.3K"); the weights' budget is what is left after the
  biases, which every method keeps as they are.
* ``dims``: explicit dimensions (d, d_mu, shifts, heads); checked, not solved.
* ``mb``: a whole-model size at a bit-width (tables 2-4 state sizes this way), in the unit
  ``size.unit`` names: ``mb`` decimal megabytes (1e6 bytes, the default) or ``mib`` (2**20
  bytes: the paper's table 2 and 4 sizes, whose quantized rows are the fp32 size in MiB x
  bits / 32). Everything the method does not compress (biases, other layers, BatchNorm
  statistics) is counted at the same bit-width. ``size.bits`` has one source of truth, the
  method's storage bits (its ``w_bits``; 32 when unset, i.e. float32 numbers):
  :func:`resolve_bits` fills an unset ``size.bits`` from it and refuses a different one.

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
from riembench.validate import check_choice, check_number

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


#: bytes per unit of a whole-model size (``size.unit``)
UNIT_BYTES = {"mb": 1e6, "mib": float(2 ** 20)}


@dataclass
class MbSizeConfig:
    """A whole-model size: ``mb`` units (``unit``: decimal MB or MiB) with every stored number
    at ``bits`` (null: the method's storage bits, see :func:`resolve_bits`)."""

    name: str = "mb"
    mb: float = 5.0
    unit: str = "mb"
    bits: int | None = None

    def __post_init__(self) -> None:
        check_number(self.mb, "size.mb", low=0, low_open=True)
        if self.bits is not None:
            check_number(self.bits, "size.bits", low=1, high=32)
        if self.unit not in UNIT_BYTES:
            raise RiembenchError(f"size.unit must be one of {', '.join(UNIT_BYTES)} (decimal MB "
                                 f"or MiB), got '{self.unit}'")

    @property
    def bytes(self) -> float:
        return self.mb * UNIT_BYTES[self.unit]


#: how a byte budget treats what no count of numbers covers (``size.overhead``)
OVERHEADS = ("measured", "unbudgeted")


@dataclass
class BytesSizeConfig:
    """An artifact size: ``bytes`` bytes on disk for the whole packed model (equal-bytes
    tables). The compressed weights get what the rest takes as it is actually stored (biases,
    BatchNorm statistics and uncompressed layers at their own dtype) leaves, at ``bits`` each
    (null: the method's storage bits). ``overhead``: ``measured`` (default) also leaves room
    for the container's own bytes (scales, zero points, ranges, the file header), measured by
    packing a cheap probe of the same cell before the real run, so that the file is the budget;
    ``unbudgeted`` counts the numbers only, and the file sits above the budget by that much."""

    name: str = "bytes"
    bytes: int = 100_000
    bits: int | None = None
    overhead: str = "measured"

    def __post_init__(self) -> None:
        check_number(self.bytes, "size.bytes", low=1)
        if self.bits is not None:
            check_number(self.bits, "size.bits", low=1, high=32)
        check_choice(self.overhead, "size.overhead", OVERHEADS)


for _name, _schema in (("ratio", RatioSizeConfig), ("params", ParamsSizeConfig),
                       ("dims", DimsSizeConfig), ("mb", MbSizeConfig),
                       ("bytes", BytesSizeConfig)):
    SIZES.register(_name, _schema)(_schema)


def resolve_bits(size_cfg: Any, method_cfg: Any, needs_size: bool = True) -> None:
    """Make ``size.bits`` agree with the method's storage bits, in place, before any work.

    The method's ``w_bits`` is the one source of truth (unset: the method stores float32, 32
    bits): an unset ``size.bits`` takes it, a different one is an error, since the budget in
    numbers would silently be wrong (svd under ``size.bits=8`` would get four times the
    numbers its float32 factors can store in the bytes). Unsized methods ignore the size.
    """
    if getattr(size_cfg, "name", None) not in ("mb", "bytes") or not needs_size:
        return
    w_bits = getattr(method_cfg, "w_bits", None)  # only the methods that store below 32 bits have it
    method_bits = 32 if w_bits is None else int(w_bits)
    if size_cfg.bits is None:
        size_cfg.bits = method_bits
    elif int(size_cfg.bits) != method_bits:
        what = f"method.w_bits={w_bits}" if w_bits is not None else "float32 (method.w_bits unset)"
        raise RiembenchError(
            f"size.bits={size_cfg.bits} but method '{method_cfg.name}' stores its numbers at "
            f"{method_bits} bits ({what}): leave size.bits unset (it follows the method), or set "
            f"size.bits={method_bits}, or method.w_bits={size_cfg.bits} where the method has it")


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


def network_target(size_cfg: Any, model: nn.Module, layers: list[str],
                   overhead_bytes: int = 0) -> SizeTarget:
    """The budget for the selected layers' weights of ``model`` under ``size_cfg``.

    ``overhead_bytes`` (``size=bytes`` only): container bytes no count covers, measured by the
    caller (:func:`riembench.runner` packs a probe), taken off the budget before it becomes
    numbers."""
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
        if size_cfg.bits is None:
            raise RiembenchError("size.bits is unset: call resolve_bits(size, method) first")
        numbers = int(size_cfg.bytes * 8 / size_cfg.bits)
        budget = numbers - (total - weights)
        target = SizeTarget(budget, bits=int(size_cfg.bits),
                            note=f"{desc}: {numbers} numbers, {total - weights} outside the "
                                 "compressed weights (buffers included)")
    elif size_cfg.name == "bytes":
        if size_cfg.bits is None:
            raise RiembenchError("size.bits is unset: call resolve_bits(size, method) first")
        # the rest as the artifact stores it: every persistent tensor at its dtype's width
        rest_bytes = (stored_tensors(model)[2] - 32 * weights) / 8
        budget = int((size_cfg.bytes - rest_bytes - overhead_bytes) * 8 / size_cfg.bits)
        container = (f"{overhead_bytes} bytes of scales, ranges and header (measured)"
                     if overhead_bytes else "scales and header not budgeted")
        target = SizeTarget(budget, bits=int(size_cfg.bits),
                            note=f"{desc}: {rest_bytes:.0f} bytes outside the compressed weights, "
                                 f"{container}, {budget} numbers at {size_cfg.bits} bits for "
                                 "the weights")
    else:
        raise RiembenchError(f"unknown size '{size_cfg.name}'; known: {', '.join(SIZES.names())}")
    if target.budget is not None and size_cfg.name not in ("mb", "bytes") and target.budget >= weights:
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
