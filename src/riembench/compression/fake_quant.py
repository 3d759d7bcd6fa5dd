"""Uniform fake quantization: the one place that defines how this project rounds numbers to
``b`` bits, and the activation quantizer module that layers carry.

Every method that stores something at a bit-width uses :func:`quantize_tensor` (``quant``,
``dfq``, RieM's 8-bit positions), so "8 bits" means the same grid in every row of a table.

Range convention (documented once, used everywhere):

* **asymmetric** (min/max): the range ``[lo, hi]`` is widened to contain 0 (``exact_zero``, the
  default), ``scale = (hi - lo) / (2^b - 1)``, the zero point ``z = round(-lo / scale)`` is an
  integer, ``q = clamp(round(x / scale) + z, 0, 2^b - 1)`` and ``x_hat = (q - z) * scale``.
  Zero is then exactly representable, which integer kernels need (zero padding, ReLU outputs).
  With ``exact_zero=False`` the grid is ``lo + k * scale`` (no zero point): end points are
  exact instead, which suits values that never meet zero, such as neuron positions in [0, 1).
  The authors' RieM notebook uses a step of ``(max - min) / 2^b``, which needs ``2^b + 1``
  levels and so is not a ``b``-bit code; ours is strictly ``2^b`` levels.
* **symmetric** (abs-max): ``scale = max|x| / (2^(b-1) - 1)``, ``q`` in
  ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (the "narrow" range: one code is left unused so that the
  grid is symmetric about zero, as TensorFlow Lite and PyTorch's symmetric weight observers do).
* rounding is round-to-nearest (``torch.round``, ties to even; ties have probability zero for
  float weights), with no stochastic or learned rounding. When ``x`` requires grad the result
  passes gradients straight through (identity), so a fit can run through the quantizer.
"""
from __future__ import annotations

import fnmatch
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from riembench.core.errors import RiembenchError

if TYPE_CHECKING:  # act_ranges reads the graph, which knows this module's quantizer
    from riembench.compression.act_ranges import ActStats


def _check_bits(bits: int, symmetric: bool) -> None:
    if not isinstance(bits, int) or bits < 1 or bits > 31:
        raise RiembenchError(f"quantization bits must be an integer in 1..31, got {bits!r}")
    if symmetric and bits < 2:
        raise RiembenchError("symmetric quantization needs at least 2 bits (1 bit has no sign)")


def _broadcast(stat: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    shape = [1] * x.dim()
    shape[axis] = -1
    return stat.reshape(shape)


def fake_quant_range(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int,
                     exact_zero: bool = True) -> torch.Tensor:
    """Asymmetric quantize-dequantize of ``x`` on the range ``[lo, hi]`` (broadcastable to x).

    Values outside the range are clipped to its ends. A degenerate range (``hi == lo``) returns
    that single value, since one level represents it exactly.
    """
    _check_bits(bits, symmetric=False)
    levels = 2 ** bits - 1
    lo = lo.to(x.dtype)
    hi = hi.to(x.dtype)
    if exact_zero:
        lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    width = hi - lo
    degenerate = width <= 0
    scale = torch.where(degenerate, torch.ones_like(width), width / levels)
    if exact_zero:
        zero = torch.round(-lo / scale).clamp(0, levels)
        q = torch.clamp(torch.round(x / scale) + zero, 0, levels)
        out = (q - zero) * scale
    else:
        q = torch.clamp(torch.round((x - lo) / scale), 0, levels)
        out = lo + q * scale
    return torch.where(degenerate, lo, out)


def fake_quant_symmetric(x: torch.Tensor, bound: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric (narrow-range) quantize-dequantize of ``x`` with ``|x| <= bound``."""
    _check_bits(bits, symmetric=True)
    qmax = 2 ** (bits - 1) - 1
    bound = bound.to(x.dtype)
    zero = bound <= 0
    scale = torch.where(zero, torch.ones_like(bound), bound / qmax)
    out = torch.clamp(torch.round(x / scale), -qmax, qmax) * scale
    return torch.where(zero, torch.zeros_like(out), out)


def quantize_tensor(x: torch.Tensor, bits: int, per_channel: bool, symmetric: bool, axis: int = 0,
                    exact_zero: bool = True) -> torch.Tensor:
    """Quantize-dequantize ``x`` to ``bits`` bits with ranges taken from ``x`` itself.

    ``per_channel``: one range per index along ``axis`` (output channels of a weight by default;
    ``axis=1`` gives per-feature-column ranges of a position matrix), else one for the tensor.
    ``symmetric``: abs-max range and no zero point; else min/max range with a zero point (see the
    module docstring for the exact grid). Returns a tensor of ``x``'s shape and dtype holding
    values of the grid (a float "fake-quantized" tensor: what an integer kernel would compute
    with, so accuracy is measured exactly while the file stays float).
    """
    if x.numel() == 0:
        return x.clone()
    with torch.no_grad():
        if per_channel and x.dim() > 0:
            axis = axis % x.dim()
            moved = x.detach().movedim(axis, 0).reshape(x.shape[axis], -1)
            lo, hi = moved.amin(dim=1), moved.amax(dim=1)
            lo, hi = _broadcast(lo, x, axis), _broadcast(hi, x, axis)
        else:
            lo, hi = x.detach().amin(), x.detach().amax()
        if symmetric:
            out = fake_quant_symmetric(x.detach(), torch.maximum(lo.abs(), hi.abs()), bits)
        else:
            out = fake_quant_range(x.detach(), lo, hi, bits, exact_zero)
    if x.requires_grad:  # straight-through: forward is the grid, backward the identity
        return x + (out - x).detach()
    return out


class FakeQuantAct(nn.Module):
    """Quantize-dequantize an activation on a fixed per-tensor range ``[lo, hi]`` (asymmetric,
    exact zero), set once from data-free statistics (:meth:`from_stats`); it never observes
    the tensors that pass through it. ``lo``/``hi`` are persistent buffers: a deployed integer
    model stores them (as scale and zero point), so they count in its size.
    """

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, lo: float, hi: float, bits: int) -> None:
        super().__init__()
        _check_bits(bits, symmetric=False)
        if not hi >= lo:
            raise ValueError(f"FakeQuantAct range must have hi >= lo, got [{lo}, {hi}]")
        self.bits = int(bits)
        self.register_buffer("lo", torch.tensor(float(lo)))
        self.register_buffer("hi", torch.tensor(float(hi)))

    @classmethod
    def from_stats(cls, stats: ActStats, bits: int, k: float = 6.0) -> FakeQuantAct:
        """Range ``mean +- k std`` over all channels (``k = 6`` as in DFQ), 0-clipped after ReLU."""
        lo, hi = stats.bounds(k)
        return cls(float(lo.min()), float(hi.max()), bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quant_range(x, self.lo, self.hi, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, range=[{float(self.lo):.4g}, {float(self.hi):.4g}]"


#: attribute under which a layer holds the quantizer of its input
INPUT_QUANT = "input_quant"


def _quantize_input_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: quantize the layer's input. A module-level function (not a closure), so
    deep copies and pickles of the model keep working."""
    quant = getattr(module, INPUT_QUANT)
    return (quant(args[0]), *args[1:])


def attach_input_quant(layer: nn.Module, quant: FakeQuantAct) -> None:
    """Make ``layer`` quantize its input with ``quant`` (a child module plus a pre-hook).

    Why a hook rather than a wrapper module: the layer keeps its name, type and state-dict keys,
    so layer selection, parameter accounting and later methods see the same model structure.
    """
    if hasattr(layer, INPUT_QUANT):
        raise RiembenchError(f"{type(layer).__name__} already quantizes its input")
    layer.add_module(INPUT_QUANT, quant)
    layer.register_forward_pre_hook(_quantize_input_hook)


def bits_for(name: str, bits_by_param: dict[str, int] | None, default: int) -> int:
    """Bit-width of a tensor or module ``name``: an exact key, else the first matching fnmatch
    pattern among the keys, else ``default``."""
    if not bits_by_param:
        return default
    if name in bits_by_param:
        return int(bits_by_param[name])
    for pattern, bits in bits_by_param.items():
        if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(name, pattern):
            return int(bits)
    return default
