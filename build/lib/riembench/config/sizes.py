"""Size settings: what a run may store. One registry entry per way a paper states a size, each
resolved into a budget the same way for every method (riembench.sizing.budgets), so that "equal
size" means the same thing in every row of a table:

* ``ratio``: a fraction of the dense weights of the selected layers (table 5's T_comp/T_naive,
  or "compress the FC layers to 10%").
* ``params``: an absolute count of stored numbers for the selected layers, biases included
  (table 1 states FC sizes this way: "6.3K"); the weights' budget is what is left after the
  biases, which every method keeps as they are.
* ``dims``: explicit dimensions (d, d_mu, shifts, heads); checked, not solved.
* ``mb``: a whole-model size at a bit-width (tables 2-4 state sizes this way), in the unit
  ``size.unit`` names: ``mb`` decimal megabytes (1e6 bytes, the default) or ``mib`` (2**20
  bytes: the paper's table 2 and 4 sizes, whose quantized rows are the fp32 size in MiB x
  bits / 32). ``size.bits`` follows the method's storage bits.
* ``bytes``: the whole packed artifact on disk (equal-bytes tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from omegaconf import MISSING

from riembench.config.choices import ByteOverhead, SizeUnit, coerce_choices
from riembench.config.methods import MethodConfig
from riembench.core.errors import RiembenchError
from riembench.core.registry import Registry
from riembench.core.validate import check_number


@dataclass
class SizeConfig:
    name: str = MISSING

    #: True for a size that applies to a bare matrix (table 5) as well as to a network
    applies_to_matrix: ClassVar[bool] = False
    #: True for a size in bytes, whose ``bits`` follow the method's storage bits
    in_bytes: ClassVar[bool] = False

    def describe(self) -> str:
        """Short human label of the setting, used in table cells (``params(params=6300)``)."""
        fields = {k: v for k, v in vars(self).items() if k != "name" and v is not None}
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in fields.items()) + ")"

    def matrix_label(self) -> Any:
        """The size of a matrix cell (table 5's ``ratio`` column)."""
        return self.describe()

    def __post_init__(self) -> None:
        coerce_choices(self)


@dataclass
class RatioSizeConfig(SizeConfig):
    """Budget as a fraction of the dense weights (matrix: of its m * n entries)."""

    name: str = "ratio"
    ratio: float = 0.1

    applies_to_matrix: ClassVar[bool] = True

    def matrix_label(self) -> Any:
        return self.ratio

    def __post_init__(self) -> None:
        super().__post_init__()
        # a ratio of 1 or more stores at least the dense size: nothing is compressed
        check_number(self.ratio, "size.ratio (a fraction of the dense size)", low=0, high=1,
                     low_open=True, high_open=True)


@dataclass
class ParamsSizeConfig(SizeConfig):
    """At most ``params`` stored numbers for the selected layers, their biases included."""

    name: str = "params"
    params: int = 10_000

    applies_to_matrix: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.params, "size.params", low=1)


@dataclass
class DimsSizeConfig(SizeConfig):
    """Explicit embedding dimensions; ``null`` fields fall back to the method's config."""

    name: str = "dims"
    d: int | None = None
    d_mu: int | None = None
    n_shifts: int | None = None
    shifts: list[int] | None = None
    heads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("d", "d_mu", "n_shifts", "heads"):
            if getattr(self, key) is not None:
                check_number(getattr(self, key), f"size.{key}", low=1)
        for shift in self.shifts or []:
            check_number(shift, "size.shifts entry", low=0)


#: bytes per unit of a whole-model size (``size.unit``)
UNIT_BYTES = {SizeUnit.mb: 1e6, SizeUnit.mib: float(2 ** 20)}


@dataclass
class MbSizeConfig(SizeConfig):
    """A whole-model size: ``mb`` units (``unit``: decimal MB or MiB) with every stored number
    at ``bits`` (null: the method's storage bits)."""

    name: str = "mb"
    mb: float = 5.0
    unit: SizeUnit = SizeUnit.mb
    bits: int | None = None

    in_bytes: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.mb, "size.mb", low=0, low_open=True)
        if self.bits is not None:
            check_number(self.bits, "size.bits", low=1, high=32)

    @property
    def bytes(self) -> float:
        return self.mb * UNIT_BYTES[self.unit]


@dataclass
class BytesSizeConfig(SizeConfig):
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
    overhead: ByteOverhead = ByteOverhead.measured

    in_bytes: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self.bytes, "size.bytes", low=1)
        if self.bits is not None:
            check_number(self.bits, "size.bits", low=1, high=32)


#: name -> schema (budgets: riembench.sizing.budgets)
SIZES: Registry[Any] = Registry("size")

for _name, _schema in (("ratio", RatioSizeConfig), ("params", ParamsSizeConfig),
                       ("dims", DimsSizeConfig), ("mb", MbSizeConfig),
                       ("bytes", BytesSizeConfig)):
    SIZES.declare(_name, _schema)


def resolve_bits(size_cfg: SizeConfig, method_cfg: MethodConfig) -> None:
    """Make ``size.bits`` agree with the method's storage bits, in place, before any work.

    The method's storage bits are the one source of truth (:meth:`MethodConfig.storage_bits`,
    32 for float32 numbers): an unset ``size.bits`` takes them, a different one is an error,
    since the budget in numbers would silently be wrong (svd under ``size.bits=8`` would get
    four times the numbers its float32 factors can store in the bytes). Unsized methods and
    sizes that are not in bytes ignore it.
    """
    if not (size_cfg.in_bytes and method_cfg.needs_size):
        return
    assert isinstance(size_cfg, MbSizeConfig | BytesSizeConfig)
    method_bits = method_cfg.storage_bits()
    if size_cfg.bits is None:
        size_cfg.bits = method_bits
    elif int(size_cfg.bits) != method_bits:
        what = "float32" if method_bits == 32 else f"method.w_bits={method_bits}"
        raise RiembenchError(
            f"size.bits={size_cfg.bits} but method '{method_cfg.name}' stores its numbers at "
            f"{method_bits} bits ({what}): leave size.bits unset (it follows the method), or set "
            f"size.bits={method_bits}, or method.w_bits={size_cfg.bits} where the method has it")
