"""One graph analysis of a model: trace it once with torch.fx and say what every op is.

Why one module: network conversion (which layers share neurons), DFQ (BatchNorm folding,
equalization pairs, bias absorption), pruning (which channels can go) and quantization (where
activations are rounded, what their BatchNorm-implied statistics are) all walk the same graph.
With one op table they cannot disagree about what, say, a ReLU6 or a depthwise conv is.

Every node gets an :class:`Op` kind. The walkers ask questions about kinds, never about
module types, through three families:

* :data:`ELEMENTWISE`: acts on each neuron alone (activations, dropout, identity, a scale by a
  constant). A chain of Linear layers may pass through these (the next layer's inputs are still
  the previous layer's output neurons).
* :data:`PER_CHANNEL`: elementwise plus BatchNorm and local pooling: removing a channel before
  them removes the same channel after them (structured pruning).
* :data:`HOMOGENEOUS`: commute with a positive per-channel scale, ``f(s x) = s f(x)`` (ReLU,
  leaky ReLU, identity, dropout, pooling, flatten, a scale). Cross-layer equalization and Neuron
  Merging may rescale channels through these. ReLU6 and hardswish are *not* homogeneous
  (``relu6(2 x) != 2 relu6(x)`` above 3); DFQ's answer for ReLU6 is in ``methods/dfq.py``.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TypeAlias

import torch
from torch import fx, nn
from torch.nn import functional as F

from riembench.compression.fake_quant import FakeQuantAct

log = logging.getLogger("riembench")

#: modules whose weight a method can compress
COMPRESSIBLE = (nn.Linear, nn.Conv2d)
#: a module of :data:`COMPRESSIBLE` (what ``isinstance(m, COMPRESSIBLE)`` narrows to)
Layer: TypeAlias = nn.Linear | nn.Conv2d


class Op(str, Enum):
    """What a traced node does, as far as the walkers care."""

    INPUT = "input"
    OUTPUT = "output"
    CONSTANT = "constant"  # get_attr
    CONV = "conv"
    LINEAR = "linear"
    BATCHNORM = "batchnorm"
    RELU = "relu"
    RELU6 = "relu6"
    LEAKY_RELU = "leaky_relu"
    HARDSWISH = "hardswish"
    ACTIVATION = "activation"  # other per-neuron nonlinearities: GELU, SiLU, sigmoid, tanh, ELU
    IDENTITY = "identity"  # identity, dropout (eval), contiguous, clone, detach
    SCALE = "scale"  # multiplication or division by a number
    ADD = "add"  # two tensors (a residual add) or a tensor and a number (a shift)
    MUL = "mul"  # two tensors (a gate)
    CAT = "cat"
    POOL = "pool"  # local average or max pooling
    GLOBAL_POOL = "global_pool"  # adaptive pooling, mean over spatial dims
    FLATTEN = "flatten"  # flatten, view, reshape
    QUANT = "quant"  # an activation quantizer already in the graph
    OTHER = "other"


ELEMENTWISE = frozenset({Op.RELU, Op.RELU6, Op.LEAKY_RELU, Op.HARDSWISH, Op.ACTIVATION,
                         Op.IDENTITY, Op.SCALE})
PER_CHANNEL = ELEMENTWISE | {Op.BATCHNORM, Op.POOL}
HOMOGENEOUS = frozenset({Op.RELU, Op.LEAKY_RELU, Op.IDENTITY, Op.SCALE, Op.POOL, Op.GLOBAL_POOL,
                         Op.FLATTEN})
LAYERS = frozenset({Op.CONV, Op.LINEAR})

_MODULE_OPS: tuple[tuple[type[nn.Module] | tuple[type[nn.Module], ...], Op], ...] = (
    (nn.Conv2d, Op.CONV),
    (nn.Linear, Op.LINEAR),
    (nn.modules.batchnorm._BatchNorm, Op.BATCHNORM),
    (nn.ReLU, Op.RELU),
    (nn.ReLU6, Op.RELU6),
    (nn.LeakyReLU, Op.LEAKY_RELU),
    (nn.Hardswish, Op.HARDSWISH),
    ((nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.Hardsigmoid, nn.Mish), Op.ACTIVATION),
    ((nn.Identity, nn.Dropout), Op.IDENTITY),
    ((nn.MaxPool2d, nn.AvgPool2d), Op.POOL),
    ((nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d), Op.GLOBAL_POOL),
    (nn.Flatten, Op.FLATTEN),
)
_FUNCTION_OPS: dict[object, Op] = {
    torch.relu: Op.RELU, F.relu: Op.RELU, torch.relu_: Op.RELU, F.relu6: Op.RELU6,
    F.leaky_relu: Op.LEAKY_RELU, F.hardswish: Op.HARDSWISH,
    F.gelu: Op.ACTIVATION, F.silu: Op.ACTIVATION, torch.sigmoid: Op.ACTIVATION,
    torch.tanh: Op.ACTIVATION, F.sigmoid: Op.ACTIVATION, F.elu: Op.ACTIVATION,
    F.dropout: Op.IDENTITY,
    F.max_pool2d: Op.POOL, F.avg_pool2d: Op.POOL,
    F.adaptive_avg_pool2d: Op.GLOBAL_POOL, F.adaptive_max_pool2d: Op.GLOBAL_POOL,
    torch.flatten: Op.FLATTEN, torch.reshape: Op.FLATTEN,
    torch.cat: Op.CAT,
}
_METHOD_OPS: dict[str, Op] = {
    "relu": Op.RELU, "relu_": Op.RELU, "sigmoid": Op.ACTIVATION, "tanh": Op.ACTIVATION,
    "flatten": Op.FLATTEN, "view": Op.FLATTEN, "reshape": Op.FLATTEN,
    "contiguous": Op.IDENTITY, "clone": Op.IDENTITY, "detach": Op.IDENTITY,
}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}
_MUL_FUNCTIONS = {operator.mul, operator.imul, torch.mul, operator.truediv, torch.div}


def _is_number(arg: object) -> bool:
    return isinstance(arg, (int, float)) and not isinstance(arg, bool)


@dataclass
class ModelGraph:
    """A model traced once: its fx graph, modules, and every node's :class:`Op`.

    ``error`` is set (and ``graph`` is None) when torch.fx cannot trace the model (data-dependent
    control flow, e.g. detection heads); every walker then reports that reason for each layer
    instead of guessing.
    """

    model: nn.Module
    graph: fx.Graph | None
    error: str | None
    modules: dict[str, nn.Module] = field(default_factory=dict)
    kinds: dict[fx.Node, Op] = field(default_factory=dict)
    #: how often each module is called in the forward (a module called twice is two layers)
    calls: dict[str, int] = field(default_factory=dict)

    @classmethod
    def trace(cls, model: nn.Module) -> ModelGraph:
        modules = dict(model.named_modules())
        try:
            graph = fx.symbolic_trace(model).graph
        except Exception as exc:  # noqa: BLE001  (fx raises many types; DETR-like control flow)
            reason = (f"torch.fx cannot trace {type(model).__name__}: "
                      f"{str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}")
            log.info("%s", reason)
            return cls(model, None, reason, modules)
        found = cls(model, graph, None, modules)
        for node in graph.nodes:
            found.kinds[node] = found._classify(node)
            if node.op == "call_module":
                found.calls[str(node.target)] = found.calls.get(str(node.target), 0) + 1
        return found

    # ----------------------------------------------------------------------------------------
    # classification

    def _classify(self, node: fx.Node) -> Op:
        if node.op == "placeholder":
            return Op.INPUT
        if node.op == "output":
            return Op.OUTPUT
        if node.op == "get_attr":
            return Op.CONSTANT
        if node.op == "call_module":
            mod = self.modules.get(str(node.target))
            if mod is not None and _is_quantizer(mod):
                return Op.QUANT
            for types, op in _MODULE_OPS:
                if isinstance(mod, types):
                    return op
            return Op.OTHER
        if node.op == "call_function":
            fn = node.target
            if fn in _ADD_FUNCTIONS:
                return Op.ADD
            if fn in _MUL_FUNCTIONS:
                nodes = [a for a in node.args[:2] if isinstance(a, fx.Node)]
                if len(nodes) == 1 and any(_is_number(a) for a in node.args[:2]):
                    return Op.SCALE
                return Op.MUL if fn is not operator.truediv and fn is not torch.div else Op.OTHER
            if fn is torch.mean:
                return Op.GLOBAL_POOL if _spatial_dims(node) else Op.OTHER
            return _FUNCTION_OPS.get(fn, Op.OTHER)
        if node.op == "call_method":
            if node.target == "mean":
                return Op.GLOBAL_POOL if _spatial_dims(node) else Op.OTHER
            if node.target in ("mul", "mul_", "div", "div_"):
                return Op.SCALE if len(node.args) > 1 and _is_number(node.args[1]) else Op.OTHER
            if node.target in ("add", "add_"):
                return Op.ADD
            return _METHOD_OPS.get(str(node.target), Op.OTHER)
        return Op.OTHER

    # ----------------------------------------------------------------------------------------
    # queries

    @property
    def traced(self) -> bool:
        return self.graph is not None

    def nodes(self) -> Iterator[fx.Node]:
        return iter(self.graph.nodes) if self.graph is not None else iter(())

    def kind(self, node: fx.Node) -> Op:
        return self.kinds.get(node, Op.OTHER)

    def module(self, node: fx.Node) -> nn.Module | None:
        return self.modules.get(str(node.target)) if node.op == "call_module" else None

    def layer_nodes(self) -> dict[str, fx.Node]:
        """Compressible (Linear/Conv2d) modules called in the forward: name -> node."""
        return {str(n.target): n for n in self.nodes() if self.kind(n) in LAYERS}

    def is_depthwise(self, node: fx.Node) -> bool:
        """A conv with one input channel per group and as many outputs as inputs."""
        mod = self.module(node)
        return (isinstance(mod, nn.Conv2d) and mod.groups > 1
                and mod.groups == mod.in_channels == mod.out_channels)

    def is_grouped(self, node: fx.Node) -> bool:
        mod = self.module(node)
        return isinstance(mod, nn.Conv2d) and mod.groups != 1

    def tensor_args(self, node: fx.Node) -> list[fx.Node]:
        """The node's tensor inputs in argument order (constants and get_attr excluded)."""
        return [a for a in node.all_input_nodes if self.kind(a) is not Op.CONSTANT]

    def describe(self, node: fx.Node) -> str:
        """A node as a reader knows it: a module name, or a function's name."""
        if node.op == "call_module":
            return str(node.target)
        return str(getattr(node.target, "__name__", node.target))

    def reason_not_traced(self, names: list[str]) -> dict[str, str]:
        return {n: str(self.error) for n in names}

    def input_reaches(self, layer: str, through: frozenset[Op] = frozenset(
            {Op.IDENTITY, Op.FLATTEN, Op.QUANT})) -> bool:
        """Whether the layer reads the network input directly (through ``through`` ops only)."""
        node = self.layer_nodes().get(layer)
        if node is None or not node.args or not isinstance(node.args[0], fx.Node):
            return False
        cur = node.args[0]
        while self.kind(cur) in through and cur.args and isinstance(cur.args[0], fx.Node):
            cur = cur.args[0]
        return self.kind(cur) is Op.INPUT


def _spatial_dims(node: fx.Node) -> bool:
    """``x.mean((2, 3))`` / ``torch.mean(x, [2, 3])``: a global average pool."""
    dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
    if isinstance(dims, int):
        dims = (dims,)
    return isinstance(dims, (list, tuple)) and len(dims) > 0 and all(
        isinstance(d, int) and d in (2, 3, -1, -2) for d in dims)


def _is_quantizer(mod: nn.Module) -> bool:
    return isinstance(mod, FakeQuantAct)
