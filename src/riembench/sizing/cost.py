"""What a compressed model costs: stored numbers, bytes at their bit-widths, the saved file,
FLOPs and BOPs, and the paper's own size convention beside them.

Four sizes, because the paper's tables and an honest measurement differ:

* ``stored_bytes``: every persistent tensor (parameters and persistent buffers such as BN
  running statistics; non-persistent buffers, e.g. a materialized RieM weight, never count) at
  the bit-width it is stored at: ``bits_by_param`` names the quantized ones (tensor names, module
  names of layers that report :meth:`stored_numel`, or fnmatch patterns), the rest count at
  their dtype's width. A module with a ``stored_numel() -> int`` method (RieM/Lp-norm layers)
  reports its own count, and its tensors are not counted again; one that also has
  ``stored_bits() -> float`` reports its own bits (an 8-bit embedding with a 32-bit bias).
* ``file_bytes``: the size of ``torch.save(model.state_dict())`` written to a temporary file
  (a fake-quantized model is still a float file there).
* the packed artifact (:mod:`riembench.sizing.artifact`): what the model stores, at its bit-widths, on
  disk. A run records *that* as its stored size (``cost.stored_bytes`` / ``stored_mb``) and
  keeps ``stored_bytes`` of this module beside it as ``formula_bytes`` / ``formula_mb``: the
  difference is what a formula leaves out (scales, zero points, ranges, the file header).
* the paper's convention (``paper_tables/README.md``): an "original" row is the size of the
  torchvision checkpoint file in decimal MB (:func:`paper_original_mb`), a b-bit row is that
  size in MiB times b / 32 (:func:`paper_quantized_mb`).

Why the torchvision files cannot be reproduced byte for byte by a fresh ``torch.save`` (measured
on random-weight models; torchvision's weight metadata records each file's size in MiB to three
decimals, i.e. to +- 524 bytes):

* the V1 ResNet files (``resnet18-f37072fd.pth`` ...) were re-saved in 2021 from the 2017
  checkpoints: zip format, *without* ``num_batches_tracked`` (added to BatchNorm in PyTorch 0.4.1,
  after the models were trained), with the zip records named after the file (``resnet18-f37072fd/
  data/0``, not ``archive/data/0``). :func:`torchvision_checkpoint_bytes` writes a state dict that
  way and lands within 0.4 / 0.6 / 1.9 / 2.9 kB of the resnet18 / 34 / 50 / 101 files, i.e. on
  46.83 / 87.32 / 102.53 / 178.79 MB;
* the paper's ResNet-101 figure, 178.81 MB, is not the V1 file (178.79 MB) but the V2 file
  ``resnet101-cd907fc2.pth`` (170.53 MiB), although its top-1 (77.31) is a V1-level accuracy;
* ``densenet121-a639ec97.pth`` is the original 2017 file: the pre-zip "legacy" pickle stream,
  with the old key names (``norm.1``), no ``_metadata`` and no ``num_batches_tracked``, written
  by a 2017 PyTorch under Python 2. Modern PyTorch cannot write that format exactly (a fresh
  zip save is 32.48 MB, a fresh legacy save 32.36 MB; emulating the 2017 tensor records and
  Python-2 byte strings gets within 1.4 kB of the 32.34 MB file).

So :func:`paper_original_mb` reads the sizes from torchvision's own weight metadata (never from a
hand-typed table), with the one documented exception of ResNet-101 (V2).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on the model as it runs, in
the convention of torchvision's "GFLOPS" column and the paper: one *multiply-add* of a conv,
linear or matmul is one flop (the counter's own figure, 2 per multiply-add, is halved), so
ResNet-18 at 224 x 224 is 1.814 G (fvcore, used before, said 1.819 G: it also counted one per
element of batch norm, ReLU and pooling). Elementwise ops and the rounding of fake quantization
are not counted. BOPs = sum over Linear/Conv2d layers (and layers with
``stored_numel``) of their FLOPs x weight bits x input bits: the cost measure of mixed-precision
papers; the ops outside those layers are not included.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, TypedDict

import torch
from torch import nn

from riembench.compression.fake_quant import INPUT_QUANT, bits_for
from riembench.compression.network import COMPRESSIBLE
from riembench.compression.packing import SelfCountingLayer
from riembench.core.errors import RiembenchError

log = logging.getLogger("riembench")

#: which torchvision weights each paper "original" size is the file of (see module docstring)
PAPER_ORIGINAL_WEIGHTS = {"resnet18": "IMAGENET1K_V1", "resnet34": "IMAGENET1K_V1",
                          "resnet50": "IMAGENET1K_V1", "resnet101": "IMAGENET1K_V2",
                          "densenet121": "IMAGENET1K_V1"}


# --------------------------------------------------------------------------------------------
# stored numbers and bytes


class _Totals(TypedDict):
    params: int
    stored: int
    bits: float


def stored_tensors(model: nn.Module, bits_by_param: dict[str, int] | None = None
                   ) -> tuple[int, int, float]:
    """(parameters, stored numbers, stored bits) of ``model``; see the module docstring.

    Shared tensors (tied weights) count once, as ``torch.save`` writes them once.
    """
    seen: set[int] = set()
    totals: _Totals = {"params": 0, "stored": 0, "bits": 0.0}

    def visit(prefix: str, module: nn.Module) -> None:
        if isinstance(module, SelfCountingLayer):
            n = int(module.stored_numel())
            totals["params"] += n
            totals["stored"] += n
            totals["bits"] += float(module.stored_bits())
            return
        for name, p in module._parameters.items():
            if p is None or id(p) in seen:
                continue
            seen.add(id(p))
            full = f"{prefix}.{name}" if prefix else name
            totals["params"] += p.numel()
            totals["stored"] += p.numel()
            totals["bits"] += p.numel() * bits_for(full, bits_by_param, p.element_size() * 8)
        for name, b in module._buffers.items():
            if b is None or name in module._non_persistent_buffers_set or id(b) in seen:
                continue
            seen.add(id(b))
            full = f"{prefix}.{name}" if prefix else name
            totals["stored"] += b.numel()
            totals["bits"] += b.numel() * bits_for(full, bits_by_param, b.element_size() * 8)
        for name, child in module._modules.items():
            if child is not None:
                visit(f"{prefix}.{name}" if prefix else name, child)

    visit("", model)
    return totals["params"], totals["stored"], totals["bits"]


def saved_file_bytes(model: nn.Module) -> int:
    """Size of ``torch.save(model.state_dict())`` in a temporary file (what this project saves)."""
    return _file_size(model.state_dict(), "model")


def torchvision_checkpoint_bytes(model: nn.Module, stem: str = "archive") -> int:
    """Size of ``model``'s weights saved the way torchvision's V1 ResNet files were: zip format,
    state dict (with its ``_metadata``) without ``num_batches_tracked``, records named after the
    file ``<stem>.pth`` (e.g. ``resnet18-f37072fd``)."""
    state = model.state_dict()
    kept: OrderedDict[str, torch.Tensor] = OrderedDict(
        (k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    kept._metadata = getattr(state, "_metadata", None)  # type: ignore[attr-defined]
    return _file_size(kept, stem)


def _file_size(obj: Any, stem: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{stem}.pth"
        torch.save(obj, path)
        return os.path.getsize(path)


# --------------------------------------------------------------------------------------------
# the paper's convention


def torchvision_file_mb(arch: str, variant: str = "IMAGENET1K_V1") -> float:
    """Decimal MB of torchvision's checkpoint file for ``arch``/``variant`` (from the weights'
    metadata, which records the size in MiB to three decimals)."""
    import torchvision.models as tvm

    try:
        weights = tvm.get_model_weights(arch)[variant]
    except (KeyError, ValueError) as exc:
        raise RiembenchError(f"torchvision has no weights {arch}/{variant}: {exc}") from None
    size_mib = weights.meta.get("_file_size")
    if size_mib is None:
        raise RiembenchError(f"torchvision's metadata of {arch}/{variant} has no file size")
    return float(size_mib) * 2 ** 20 / 1e6


def paper_original_mb(arch: str) -> float:
    """The paper's "original" size of ``arch`` (decimal MB, see the module docstring)."""
    if arch not in PAPER_ORIGINAL_WEIGHTS:
        raise RiembenchError(f"no paper size convention for '{arch}'; known: "
                             f"{', '.join(PAPER_ORIGINAL_WEIGHTS)}")
    return torchvision_file_mb(arch, PAPER_ORIGINAL_WEIGHTS[arch])


def paper_quantized_mb(fp32_mb: float, bits: int, unit: str = "MiB") -> float:
    """The paper's size of a ``bits``-bit model whose fp32 file is ``fp32_mb`` decimal MB.

    ``unit="MiB"`` (table 2, as ``paper_tables/README.md`` reads it): ``fp32_mb`` in MiB x
    bits / 32 (ResNet-18: 44.66 MiB x 4 / 32 = 5.58; its 6-bit cell, 8.36, fits this only
    approximately: 8.37). ``unit="MB"`` (table 3): decimal MB x bits / 32 (a ResNet-34 with
    10% of its inner channels pruned saves 78.85 MB here, x 6 / 32 = 14.8, the table's value).
    """
    if unit not in ("MiB", "MB"):
        raise RiembenchError(f"unit must be MiB or MB, got '{unit}'")
    base = fp32_mb * 1e6 / 2 ** 20 if unit == "MiB" else fp32_mb
    return base * bits / 32


# --------------------------------------------------------------------------------------------
# FLOPs and BOPs


def count_flops(model: nn.Module, example_input: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Multiply-adds of one forward pass on ``example_input``, in total and per module name.

    Counted by ``torch.utils.flop_counter.FlopCounterMode`` (maintained with PyTorch; it
    intercepts the aten ops as they run, so any model that runs is counted, no trace needed).
    The counter counts 2 flops per multiply-add (matmul, conv, bmm, attention); this returns
    half of that, the multiply-add count that torchvision and the paper call "FLOPs". Elementwise
    ops (BN, ReLU, pooling, fake-quantization rounding) are not counted. A model that cannot run
    on the example input raises :class:`RiembenchError` naming the reason.
    """
    from torch.utils.flop_counter import FlopCounterMode

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter, torch.no_grad():
            model(example_input.to(device))
    except Exception as exc:  # the model's own forward: any error type
        raise RiembenchError(f"FLOPs not counted: {type(model).__name__} does not run on a "
                             f"{tuple(example_input.shape)} example input "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from exc
    finally:
        model.train(was_training)
    total = counter.get_total_flops() // 2
    by_module: dict[str, int] = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        # keys are "<RootClass>.<module path>" (the root alone: "<RootClass>")
        name = key.split(".", 1)[1] if "." in key else ""
        by_module[name] = by_module.get(name, 0) + sum(int(v) for v in ops.values()) // 2
    return int(total), by_module


def _weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Layers BOPs are counted over: Linear/Conv2d and layers that report stored_numel (not
    inside another such layer)."""
    found: dict[str, nn.Module] = {}
    owners: list[str] = []  # layers with stored_numel: their submodules are part of them
    for name, module in model.named_modules():
        if any(name.startswith(p + ".") for p in owners):
            continue
        counting = isinstance(module, SelfCountingLayer)
        if counting:
            owners.append(name)
        if counting or isinstance(module, COMPRESSIBLE):
            found[name] = module
    return found


def model_cost(model: nn.Module, example_input: torch.Tensor,
               bits_by_param: dict[str, int] | None = None, *, a_bits: int | None = None,
               fp32_mb: float | None = None, paper_bits: int | None = None,
               paper_unit: str = "MiB", flops: bool = True) -> dict[str, Any]:
    """Every cost figure of ``model`` (see the module docstring for their definitions).

    ``bits_by_param``: storage bits of quantized tensors/layers (a method's
    ``info["bits_by_param"]``). ``a_bits``: input bits of layers without an attached input
    quantizer (default 32). ``fp32_mb`` and ``paper_bits``: add ``paper_mb``, the paper's
    convention for this row (``fp32_mb`` is the fp32 size the paper starts from, e.g.
    :func:`paper_original_mb`; ``paper_unit`` see :func:`paper_quantized_mb`).
    """
    params, stored, bits = stored_tensors(model, bits_by_param)
    file_bytes = saved_file_bytes(model)
    cost: dict[str, Any] = {"params": params, "stored_numel": stored,
                            "stored_bytes": bits / 8, "stored_mb": bits / 8 / 1e6,
                            "file_bytes": file_bytes, "file_mb": file_bytes / 1e6}
    if fp32_mb is not None and paper_bits is not None:
        cost["paper_mb"] = paper_quantized_mb(fp32_mb, paper_bits, paper_unit)
    if flops:
        total, by_module = count_flops(model, example_input)
        bops = 0.0
        layer_flops = 0
        for name, layer in _weight_layers(model).items():
            f = by_module.get(name, 0)
            layer_flops += f
            w = bits_for(f"{name}.weight", bits_by_param, bits_for(name, bits_by_param, 32))
            quant = getattr(layer, INPUT_QUANT, None)
            a = quant.bits if quant is not None else (a_bits or 32)
            bops += f * w * a
        cost.update({"flops": total, "gflops": total / 1e9, "layer_flops": layer_flops,
                     "bops": bops,
                     "flops_counter": "torch.utils.flop_counter (1 multiply-add = 1 flop)"})
    return cost
