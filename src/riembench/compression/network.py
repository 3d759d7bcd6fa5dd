"""Which layers of a network a method touches, their weights seen as matrices, and which of them
share neurons.

Why a module of its own: every network method (riem, lpnorm, svd, prune, quant) needs the same
three answers, and getting them in one place keeps the methods' parameter accounting comparable.

* A Linear weight is already a matrix (out, in). A Conv2d weight (out, in/groups, kh, kw) is
  viewed as the matrix (out, in/groups * kh * kw): one row neuron per output channel and one
  column neuron per (input channel, kernel offset). This is the "one matrix" option of
  DESIGN.md; it keeps every conv a single fitting problem of the shared engine.
* Neurons are shared between two selected layers when the second one reads exactly the first
  one's outputs through elementwise ops only (ReLU, dropout, ...), found by the one graph
  analysis of the project (:mod:`riembench.compression.graph`). A flatten, pooling, a residual add or a
  conv's (channel, offset) columns break the chain: there the second layer's inputs are not the
  first one's output neurons.
"""

from __future__ import annotations

import fnmatch
import logging
from typing import Literal, TypedDict, cast

import torch
from torch import fx, nn

from riembench.compression.graph import COMPRESSIBLE, ELEMENTWISE, Layer, ModelGraph, Op
from riembench.core.errors import RiembenchError

log = logging.getLogger("riembench")


def select_layers(model: nn.Module, spec: str) -> list[str]:
    """Names of the compressible modules chosen by ``spec``, in module order.

    ``spec``: ``fc`` (every Linear), ``conv`` (every Conv2d), ``all`` (both), or comma-separated
    fnmatch patterns over module names (``layer4.*,fc``). An empty selection is an error: a
    method that compresses nothing would report the original model as its result.
    """
    spec = spec.strip()
    modules = [(n, m) for n, m in model.named_modules() if isinstance(m, COMPRESSIBLE)]
    if spec == "fc":
        names = [n for n, m in modules if isinstance(m, nn.Linear)]
    elif spec == "conv":
        names = [n for n, m in modules if isinstance(m, nn.Conv2d)]
    elif spec == "all":
        names = [n for n, _ in modules]
    else:
        patterns = [p.strip() for p in spec.split(",") if p.strip()]
        names = [n for n, _ in modules if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not names:
        known = ", ".join(n for n, _ in modules[:12]) + (" ..." if len(modules) > 12 else "")
        raise RiembenchError(f"method.layers='{spec}' selects no Linear/Conv2d layer of "
                             f"{type(model).__name__}; its layers: {known or '(none)'}")
    return names


def weight_matrix(module: nn.Module) -> torch.Tensor:
    """The layer's weight as an (out, in * kernel) matrix (a view where possible)."""
    if not isinstance(module, COMPRESSIBLE):
        raise TypeError(f"not a compressible layer: {type(module).__name__}")
    w = module.weight.detach()
    return w.reshape(w.shape[0], -1)


def matrix_shape(module: nn.Module) -> tuple[int, int]:
    m, n = weight_matrix(module).shape
    return int(m), int(n)


def weight_from_matrix(module: nn.Module, mat: torch.Tensor) -> torch.Tensor:
    """Reshape an (out, in * kernel) matrix back to the layer's weight shape."""
    return mat.reshape(module_weight(module).shape)


def module_weight(module: nn.Module) -> torch.Tensor:
    """``module.weight``, a tensor (torch types any module attribute as ``Tensor | Module``)."""
    weight = module.weight
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor")
    return weight


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


def get_layer(model: nn.Module, name: str) -> Layer:
    """The Linear/Conv2d ``name`` of ``model`` (a layer :func:`select_layers` chose)."""
    module = model.get_submodule(name)
    if not isinstance(module, COMPRESSIBLE):
        raise TypeError(f"'{name}' is not a compressible layer: {type(module).__name__}")
    return module


class ConvGeometry(TypedDict):
    """How a Conv2d slides over its input, as ``nn.Conv2d`` takes it."""

    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: str | tuple[int, int]
    dilation: tuple[int, int]
    padding_mode: Literal["zeros", "reflect", "replicate", "circular"]


def conv_geometry(conv: nn.Conv2d) -> ConvGeometry:
    """``conv``'s kernel, stride, padding, dilation and padding mode, to build a conv that slides
    the same way. Why a cast: torch declares these attributes as ``tuple[int, ...]`` and ``str``,
    though a Conv2d's are pairs and one of its padding modes."""
    return cast(ConvGeometry, {"kernel_size": conv.kernel_size, "stride": conv.stride,
                               "padding": conv.padding, "dilation": conv.dilation,
                               "padding_mode": conv.padding_mode})


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule ``name`` (dotted path) by ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def find_chains(model: nn.Module, names: list[str]) -> list[list[str]]:
    """Group the selected layers into chains of consecutive Linear layers that share neurons.

    Layer b follows layer a in a chain when b's only input is a's output passed through
    elementwise ops, a's output feeds nothing else, and a.out_features == b.in_features. Layers
    in no chain come back as one-element groups. If the model cannot be traced by torch.fx,
    every layer is its own group (logged): sharing is an optimisation of the parameter count,
    never a condition for correctness.
    """
    selected = set(names)
    traced = ModelGraph.trace(model)
    if not traced.traced:
        log.info("neuron sharing off for %s (%s)", type(model).__name__, traced.error)
        return [[n] for n in names]
    modules = traced.modules
    nodes = {n: node for n, node in traced.layer_nodes().items() if n in selected}
    follows: dict[str, str] = {}
    for name, node in nodes.items():
        if not isinstance(modules[name], nn.Linear):
            continue
        nxt = _next_linear(traced, node, selected)
        if nxt is not None and modules[nxt].in_features == modules[name].out_features:
            follows[name] = nxt
    heads = [n for n in names if n not in follows.values()]
    groups: list[list[str]] = []
    for head in heads:
        chain = [head]
        while chain[-1] in follows:
            chain.append(follows[chain[-1]])
        groups.append(chain)
    order = {n: i for i, n in enumerate(names)}
    return sorted(groups, key=lambda g: order[g[0]])


def _next_linear(traced: ModelGraph, node: fx.Node, selected: set[str]) -> str | None:
    """The selected Linear that consumes ``node``'s output through elementwise ops only."""
    current = node
    while True:
        users = list(current.users)
        if len(users) != 1:
            return None
        user = users[0]
        if len(traced.tensor_args(user)) != 1:
            return None  # e.g. a residual add: the next layer's inputs are not our neurons alone
        kind = traced.kind(user)
        if kind is Op.LINEAR:
            return str(user.target) if user.target in selected else None
        if kind in ELEMENTWISE:
            current = user
            continue
        return None


def dense_weight_count(model: nn.Module, names: list[str]) -> int:
    """Weights (not biases) of the named layers: what a size ratio is a ratio of."""
    return sum(module_weight(get_module(model, n)).numel() for n in names)


def bias_count(model: nn.Module, names: list[str]) -> int:
    total = 0
    for n in names:
        bias = getattr(get_module(model, n), "bias", None)
        total += bias.numel() if bias is not None else 0
    return total
