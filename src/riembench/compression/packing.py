"""How one layer is written into a packed artifact: integer codes at their bit-width, packed
below a byte where the width allows, with the scales and zero points that decode them.

Two interfaces, both declared here so that :mod:`riembench.sizing.artifact` never probes a module:

* :class:`PackedLayer`: a compressed layer class of this project (an embedded RieM/Lp-norm
  layer, an SVD factor pair) says itself how it packs (``pack``) and how it is rebuilt
  (``unpack``), since only it knows what it stores;
* :class:`LayerFormat`: a storage format for a *plain* torch layer whose weight a method changed
  in place (a fake-quantized or a pruned ``Linear``/``Conv2d``), which cannot declare anything.

The codes reproduce :mod:`riembench.compression.quantize`'s grids exactly (see :func:`encode_uniform`): a
fake-quantized tensor is re-encoded from its own values, and the encoding refuses a tensor that
is not on the grid it claims (an artifact must decode to what was evaluated).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch
from torch import nn

from riembench.compression.network import module_weight
from riembench.core.errors import RiembenchError


class ArtifactError(RiembenchError):
    """An artifact cannot be written or read as it claims (off-grid tensor, bad file)."""


@dataclass
class Packed:
    """What one layer stores: named tensors (as written to the file) and JSON-able metadata."""

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def add(self, prefix: str, other: Packed) -> None:
        """Nest ``other`` under ``prefix`` (a factor of a pair, a tensor of an embedding)."""
        for k, v in other.tensors.items():
            self.tensors[f"{prefix}.{k}"] = v
        self.meta[prefix] = other.meta

    def sub(self, prefix: str) -> Packed:
        head = f"{prefix}."
        return Packed({k[len(head):]: v for k, v in self.tensors.items() if k.startswith(head)},
                      dict(self.meta.get(prefix, {})))


class PackedLayer(ABC):
    """A compressed layer that writes itself into an artifact (mix into an ``nn.Module``).

    ``unpack`` gets the original layer of the architecture the artifact is loaded onto (its
    shape and conv arguments), or None to rebuild it from what ``pack`` wrote, and returns the
    rebuilt compressed layer.
    """

    #: the layer kind named in the artifact's layer map
    pack_kind: ClassVar[str]

    @abstractmethod
    def pack(self) -> Packed: ...

    @classmethod
    @abstractmethod
    def unpack(cls, packed: Packed, original: nn.Module | None = None) -> nn.Module: ...


@runtime_checkable
class SelfCountingLayer(Protocol):
    """A compressed layer that counts what it stores itself (the RieM / Lp-norm embedded
    layers): its numbers and their bits, instead of its parameters at their dtype's width."""

    def stored_numel(self) -> int: ...

    def stored_bits(self) -> float: ...


class LayerFormat(ABC):
    """A storage format for a plain layer's weight (see the module docstring)."""

    pack_kind: ClassVar[str]

    @abstractmethod
    def pack(self, module: nn.Module) -> Packed: ...

    @abstractmethod
    def unpack(self, packed: Packed, module: nn.Module) -> None:
        """Write the stored weight into ``module`` (a layer of the right shape), in place."""


# --------------------------------------------------------------------------------------------
# sub-byte bit packing


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Non-negative integer ``codes`` (< 2**bits) as a little-endian bit stream in uint8:
    ``ceil(numel * bits / 8)`` bytes (4-bit codes: two per byte, 6-bit: four in three)."""
    if not 1 <= bits <= 32:
        raise ArtifactError(f"cannot pack {bits}-bit codes")
    flat = codes.detach().flatten().to(torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 2 ** bits):
        raise ArtifactError(f"codes out of range for {bits} bits")
    if bits == 8:
        return flat.to(torch.uint8)
    shifts = torch.arange(bits, dtype=torch.int64)
    stream = ((flat.unsqueeze(1) >> shifts) & 1).to(torch.uint8).flatten()
    pad = (-stream.numel()) % 8
    if pad:
        stream = torch.cat([stream, stream.new_zeros(pad)])
    weights = (2 ** torch.arange(8, dtype=torch.int64)).to(torch.uint8)
    return (stream.reshape(-1, 8) * weights).sum(dim=1, dtype=torch.int64).to(torch.uint8)


def unpack_bits(data: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: ``numel`` codes as int64."""
    if bits == 8:
        return data[:numel].to(torch.int64)
    stream = ((data.to(torch.int64).unsqueeze(1) >> torch.arange(8)) & 1).flatten()
    stream = stream[:numel * bits].reshape(numel, bits)
    return (stream << torch.arange(bits, dtype=torch.int64)).sum(dim=1)


def packed_nbytes(numel: int, bits: int) -> int:
    return math.ceil(numel * bits / 8)


# --------------------------------------------------------------------------------------------
# uniform codes (the grids of riembench.compression.quantize)


def _index_dtype(max_value: int) -> torch.dtype:
    return torch.uint8 if max_value < 2 ** 8 else torch.int16 if max_value < 2 ** 15 else torch.int32


def _ranges(x: torch.Tensor, per_channel: bool, axis: int) -> tuple[torch.Tensor, torch.Tensor]:
    if per_channel and x.dim() > 0:
        moved = x.movedim(axis, 0).reshape(x.shape[axis], -1)
        return moved.amin(dim=1), moved.amax(dim=1)
    return x.amin().reshape(1), x.amax().reshape(1)


def _expand(stat: torch.Tensor, x: torch.Tensor, per_channel: bool, axis: int) -> torch.Tensor:
    if not per_channel or x.dim() == 0:
        return stat.reshape([1] * x.dim()) if x.dim() else stat.reshape(())
    shape = [1] * x.dim()
    shape[axis] = -1
    return stat.reshape(shape)


def _spanned_scale(x: torch.Tensor, width: torch.Tensor, scale: torch.Tensor, levels: int,
                   per_channel: bool, axis: int) -> torch.Tensor:
    """The step of an exact-zero grid read back from its values. Usually ``width / levels``;
    but when the zero point rounded up (``-lo / step`` a half-integer) the top code clips, and
    the values span one level less, so ``width / (levels - 1)`` is the step (per channel)."""
    if levels < 2:
        return scale
    alt = torch.where(width > 0, width / (levels - 1), torch.ones_like(width))

    def residual(step: torch.Tensor) -> torch.Tensor:
        units = x / _expand(step, x, per_channel, axis)
        off = (units - torch.round(units)).abs()
        if per_channel and x.dim() > 0:
            return off.movedim(axis, 0).reshape(x.shape[axis], -1).amax(dim=1)
        return off.amax().reshape(1)

    return torch.where(residual(scale) <= 1e-3, scale, torch.where(residual(alt) <= 1e-3, alt, scale))


def encode_uniform(x: torch.Tensor, bits: int, *, per_channel: bool, symmetric: bool,
                   axis: int = 0, exact_zero: bool = True) -> Packed:
    """Integer codes of ``x`` on the ``bits``-bit grid :func:`riembench.compression.quantize.quantize_tensor`
    uses for the same arguments, with the grid's parameters (float32 scales; integer zero
    points, or float32 low ends when ``exact_zero`` is off).

    ``x`` is normally already on that grid (a fake-quantized weight): its own min/max give the
    grid back, and every value must decode to itself within a thousandth of a step, else this
    raises :class:`ArtifactError` (the tensor is not what the artifact would claim it is).
    """
    x = x.detach().to(torch.float64)
    if x.numel() == 0:
        raise ArtifactError("cannot encode an empty tensor")
    axis = axis % x.dim() if x.dim() else 0
    lo, hi = _ranges(x, per_channel, axis)
    levels = 2 ** bits - 1
    meta: dict[str, Any] = {"format": "uniform", "bits": int(bits), "shape": list(x.shape),
                            "per_channel": bool(per_channel), "axis": int(axis),
                            "symmetric": bool(symmetric), "exact_zero": bool(exact_zero)}
    tensors: dict[str, torch.Tensor] = {}
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        bound = torch.maximum(lo.abs(), hi.abs())
        scale = torch.where(bound > 0, bound / qmax, torch.ones_like(bound))
        q = torch.round(x / _expand(scale, x, per_channel, axis)).clamp(-qmax, qmax)
        codes = q + qmax
        tensors["scale"] = scale.float()
    else:
        if exact_zero:
            lo, hi = lo.clamp(max=0), hi.clamp(min=0)
        width = hi - lo
        scale = torch.where(width > 0, width / levels, torch.ones_like(width))
        if exact_zero:
            scale = _spanned_scale(x, width, scale, levels, per_channel, axis)
            zero = torch.round(-lo / scale).clamp(0, levels)
            codes = torch.clamp(torch.round(x / _expand(scale, x, per_channel, axis))
                                + _expand(zero, x, per_channel, axis), 0, levels)
            tensors["zero"] = zero.to(_index_dtype(levels))
        else:
            codes = torch.clamp(torch.round((x - _expand(lo, x, per_channel, axis))
                                            / _expand(scale, x, per_channel, axis)), 0, levels)
            tensors["low"] = lo.float()
        tensors["scale"] = scale.float()
    tensors["codes"] = pack_bits(codes.to(torch.int64), bits)
    packed = Packed(tensors, meta)
    decoded = decode_uniform(packed).to(torch.float64)
    step = _expand(scale, x, per_channel, axis)
    off = ((decoded - x).abs() > 1e-3 * step + 1e-6 * x.abs().max() + 1e-12).sum()  # f32 ulps
    if int(off):
        raise ArtifactError(f"{int(off)} of {x.numel()} values are not on the {bits}-bit grid "
                            "they are stored as (was the tensor changed after quantization?)")
    return packed


def decode_uniform(packed: Packed) -> torch.Tensor:
    """The float32 tensor that :func:`encode_uniform`'s codes stand for."""
    m = packed.meta
    bits, shape = int(m["bits"]), tuple(m["shape"])
    numel = math.prod(shape)
    codes = unpack_bits(packed.tensors["codes"], bits, numel).to(torch.float64).reshape(shape)
    per_channel, axis = bool(m["per_channel"]), int(m["axis"])
    ref = codes
    scale = _expand(packed.tensors["scale"].to(torch.float64), ref, per_channel, axis)
    if m["symmetric"]:
        qmax = 2 ** (bits - 1) - 1
        out = (codes - qmax) * scale
    elif m["exact_zero"]:
        out = (codes - _expand(packed.tensors["zero"].to(torch.float64), ref, per_channel, axis)) * scale
    else:
        out = _expand(packed.tensors["low"].to(torch.float64), ref, per_channel, axis) + codes * scale
    return out.to(torch.float32)


def encode_float(x: torch.Tensor) -> Packed:
    """A tensor kept at full precision (float32), e.g. a bias or a read-out."""
    return Packed({"value": x.detach().to(torch.float32).contiguous()},
                  {"format": "float32", "shape": list(x.shape)})


def decode(packed: Packed) -> torch.Tensor:
    fmt = packed.meta.get("format")
    if fmt == "uniform":
        return decode_uniform(packed)
    if fmt == "float32":
        return packed.tensors["value"].reshape(packed.meta["shape"])
    if fmt == "bitmask":
        return decode_bitmask(packed)
    raise ArtifactError(f"unknown tensor format '{fmt}'")


# --------------------------------------------------------------------------------------------
# sparse (pruned) weights


def encode_bitmask(x: torch.Tensor) -> Packed:
    """A pruned tensor: a 1-bit occupancy mask of every position (packed, 8 per byte) and the
    kept values in float32, in row-major order. Cheaper than CSR with 16-bit column indices
    whenever more than 1/16 of the weights are kept, as in the pruning ratios used here."""
    flat = x.detach().flatten().to(torch.float32)
    mask = flat != 0
    return Packed({"mask": pack_bits(mask.to(torch.int64), 1), "values": flat[mask].contiguous()},
                  {"format": "bitmask", "shape": list(x.shape)})


def decode_bitmask(packed: Packed) -> torch.Tensor:
    shape = tuple(packed.meta["shape"])
    numel = math.prod(shape)
    mask = unpack_bits(packed.tensors["mask"], 1, numel).bool()
    out = torch.zeros(numel, dtype=torch.float32)
    out[mask] = packed.tensors["values"]
    return out.reshape(shape)


# --------------------------------------------------------------------------------------------
# module skeletons: enough to rebuild a plain layer of the right shape


def module_spec(module: nn.Module) -> dict[str, Any]:
    """Constructor arguments of a plain Linear/Conv2d/BatchNorm/Identity (values come from the
    artifact's tensors); a layer whose shape a method changed (folded BN, pruned channels, SVD
    factors) is rebuilt from this, not from the architecture it is loaded onto."""
    if isinstance(module, nn.Linear):
        return {"type": "Linear", "in_features": module.in_features,
                "out_features": module.out_features, "bias": module.bias is not None}
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ArtifactError(f"conv padding_mode '{module.padding_mode}' not supported")
        return {"type": "Conv2d", "in_channels": module.in_channels,
                "out_channels": module.out_channels, "kernel_size": list(module.kernel_size),
                "stride": list(module.stride), "padding": list(module.padding)
                if not isinstance(module.padding, str) else module.padding,
                "dilation": list(module.dilation), "groups": module.groups,
                "bias": module.bias is not None}
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return {"type": type(module).__name__, "num_features": module.num_features,
                "eps": module.eps, "momentum": module.momentum, "affine": module.affine,
                "track_running_stats": module.track_running_stats}
    if isinstance(module, nn.Identity):
        return {"type": "Identity"}
    raise ArtifactError(f"no skeleton for {type(module).__name__}")


_SKELETONS: dict[str, type[nn.Module]] = {"Linear": nn.Linear, "Conv2d": nn.Conv2d,
                                          "BatchNorm1d": nn.BatchNorm1d,
                                          "BatchNorm2d": nn.BatchNorm2d, "Identity": nn.Identity}


def build_module(spec: dict[str, Any]) -> nn.Module:
    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "type"}
    try:
        cls = _SKELETONS[spec["type"]]
    except KeyError:
        raise ArtifactError(f"unknown module type '{spec.get('type')}' in artifact") from None
    return cls(**kwargs)


# --------------------------------------------------------------------------------------------
# plain-layer formats


class UniformWeight(LayerFormat):
    """A Linear/Conv2d whose weight was fake-quantized in place (quant, DFQ): the weight as
    codes on its grid, every other tensor of the layer in float32."""

    pack_kind = "uniform"

    def __init__(self, bits: int, per_channel: bool = False, symmetric: bool = False) -> None:
        self.bits, self.per_channel, self.symmetric = int(bits), bool(per_channel), bool(symmetric)

    def pack(self, module: nn.Module) -> Packed:
        packed = Packed(meta={"kind": self.pack_kind})
        packed.add("weight", encode_uniform(module_weight(module), self.bits,
                                            per_channel=self.per_channel, symmetric=self.symmetric,
                                            axis=0))
        bias = getattr(module, "bias", None)
        if bias is not None:
            packed.add("bias", encode_float(bias))
        return packed

    def unpack(self, packed: Packed, module: nn.Module) -> None:
        _write_params(module, packed)


class SparseWeight(LayerFormat):
    """A Linear/Conv2d with pruned (zeroed) weights: the weight as a bitmask + kept values."""

    pack_kind = "sparse"

    def pack(self, module: nn.Module) -> Packed:
        packed = Packed(meta={"kind": self.pack_kind})
        packed.add("weight", encode_bitmask(module_weight(module)))
        bias = getattr(module, "bias", None)
        if bias is not None:
            packed.add("bias", encode_float(bias))
        return packed

    def unpack(self, packed: Packed, module: nn.Module) -> None:
        _write_params(module, packed)


def _write_params(module: nn.Module, packed: Packed) -> None:
    with torch.no_grad():
        for name in ("weight", "bias"):
            if name in packed.meta:
                target = getattr(module, name)
                value = decode(packed.sub(name))
                if target is None or tuple(target.shape) != tuple(value.shape):
                    raise ArtifactError(f"stored {name} {tuple(value.shape)} does not fit "
                                        f"{type(module).__name__}")
                target.copy_(value)
