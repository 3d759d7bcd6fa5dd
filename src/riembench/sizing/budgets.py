"""How a size setting (riembench.config.sizes) becomes a budget for the selected layers, the same
way for every method, so that "equal size" means the same thing in every row of a table.

An impossible setting raises :class:`~riembench.core.errors.ImpossibleBudget` before any fitting.
"""

from __future__ import annotations

from typing import Any, cast

from torch import nn

from riembench.compression.methods.base import SizeTarget
from riembench.compression.network import bias_count, dense_weight_count
from riembench.config.sizes import SIZES, ParamsSizeConfig, RatioSizeConfig, SizeConfig
from riembench.core.errors import ImpossibleBudget, RiembenchError
from riembench.sizing.cost import stored_tensors


def matrix_budget(size_cfg: SizeConfig, shape: tuple[int, int], check: bool = True) -> int:
    """Stored-parameter budget of a single matrix task (table 5)."""
    m, n = shape
    # a size's name picks its schema (riembench.config.sizes.SIZES)
    if size_cfg.name == "ratio":
        budget = int(cast(RatioSizeConfig, size_cfg).ratio * m * n)
    elif size_cfg.name == "params":
        budget = int(cast(ParamsSizeConfig, size_cfg).params)
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
    caller (:func:`riembench.harness.runner` packs a probe), taken off the budget before it becomes
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
        # persistent buffers (BatchNorm statistics), as riembench.sizing.cost counts the stored size
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


def describe(size_cfg: SizeConfig) -> str:
    """Short human label of a size setting, used in table cells (``params(params=6300)``)."""
    return size_cfg.describe()
