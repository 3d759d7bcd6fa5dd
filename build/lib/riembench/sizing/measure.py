"""What a compressed network costs, measured once for its record: the stored numbers of the
compressed layers and of the whole model, the stored size at the method's bit-widths, the FLOPs
and BOPs, and the packed artifact written to disk with its size (one call for the runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from riembench.compression.packing import SelfCountingLayer
from riembench.core.errors import RiembenchError
from riembench.sizing.artifact import artifact_cost
from riembench.sizing.cost import model_cost


def layer_numel(model: nn.Module, layers: list[str]) -> int:
    """Stored numbers of the named layers: a compressed layer reports what it stores, any
    other module its parameters (e.g. an SVD pair of factors)."""
    total = 0
    for name in layers:
        module = model.get_submodule(name)
        total += (int(module.stored_numel()) if isinstance(module, SelfCountingLayer)
                  else sum(p.numel() for p in module.parameters()))
    return total


def original_counts(model: nn.Module, layers: list[str]) -> dict[str, int]:
    """The pretrained model's numbers, recorded beside every row of a cell."""
    return {"original_layer_params": layer_numel(model, layers),
            "original_model_params": sum(p.numel() for p in model.parameters())}


def network_numel(model: nn.Module, layers: list[str]) -> dict[str, Any]:
    """Stored numbers of a compressed model: its compressed layers, and the whole model
    (compressed layers as they store themselves, everything else as is)."""
    selected = layer_numel(model, layers)
    inside = {id(p) for n in layers for p in model.get_submodule(n).parameters()}
    rest = sum(p.numel() for p in model.parameters() if id(p) not in inside)
    return {"params": selected, "model_params": selected + rest}


def model_size_and_flops(model: nn.Module, example: torch.Tensor,
                         info: dict[str, Any]) -> dict[str, Any]:
    """The stored size at the method's bit-widths, the saved file and the FLOPs/BOPs of a
    compressed model (riembench.sizing.cost), under names that do not clash with the layer
    counts.

    A model that does not run on the example input still gets its sizes; the reason the FLOPs
    could not be counted is recorded as ``flops_error`` rather than failing a finished seed.
    """
    bits = info.get("bits_by_param")
    try:
        full = model_cost(model, example, bits)
    except RiembenchError as exc:  # raised by cost.count_flops only
        full = model_cost(model, example, bits, flops=False)
        full["flops_error"] = str(exc)
    full["total_params"] = full.pop("params")
    return full


def compressed_cost(model: nn.Module, layers: list[str], example: torch.Tensor,
                    info: dict[str, Any], artifact: Path, original: nn.Module,
                    cell: dict[str, Any]) -> dict[str, Any]:
    """Every cost figure of one compressed seed; writes its artifact to ``artifact``."""
    cost = network_numel(model, layers)
    cost.update(model_size_and_flops(model, example, info))
    cost.update(artifact_cost(model, artifact, info, layers, original, cell,
                              cost.get("stored_bytes")))
    return cost
