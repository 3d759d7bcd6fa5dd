"""Quantizing a model data-free: weights and biases on the grid of
:mod:`riembench.compression.fake_quant`, and activation quantizers at layer inputs and at graph
sites (the image, both inputs of every residual add and concatenation) on the ranges of
:mod:`riembench.compression.act_ranges`; the graph sites are recorded so that a packed
artifact puts them back."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from riembench.compression.act_ranges import ActStats, StatsReport, input_stats
from riembench.compression.fake_quant import (
    FakeQuantAct,
    attach_input_quant,
    quantize_tensor,
)
from riembench.compression.graph import ModelGraph, Op
from riembench.compression.network import get_module, module_weight
from riembench.core.errors import RiembenchError
from riembench.core.validate import check_choice

log = logging.getLogger("riembench")


def quantize_weights(model: nn.Module, layers: Iterable[str], bits: int, per_channel: bool,
                     symmetric: bool) -> dict[str, int]:
    """Fake-quantize the weights of the named layers in place; returns ``{param name: bits}``."""
    bits_by_param: dict[str, int] = {}
    for name in layers:
        weight = module_weight(get_module(model, name))
        with torch.no_grad():
            weight.copy_(quantize_tensor(weight, bits, per_channel, symmetric, axis=0))
        bits_by_param[f"{name}.weight" if name else "weight"] = bits
    return bits_by_param


#: where activations are quantized: "reference" as jakc4103/DFQ does (the image, every layer's
#: input, both inputs of every residual add and concatenation, i.e. the skip path too);
#: "layers": only the inputs of the selected layers (the image and the adds stay in float)
ACT_SCOPES = ("reference", "layers")


@dataclass(frozen=True)
class QuantSpec:
    """What a uniform quantizer rounds, and to how many bits (None or >= 32: float)."""

    w_bits: int | None
    a_bits: int | None
    per_channel: bool = False
    symmetric: bool = False
    #: bias bits (per-tensor min/max, as jakc4103/DFQ's ``quantize_targ_layer``); None: float
    b_bits: int | None = None
    act_k: float = 6.0
    act_scope: str = "reference"
    #: range of the network input (the image after normalization), e.g. ImageNet's
    #: [(0 - mean) / std, (1 - mean) / std] = [-2.118, 2.640]; None: unknown (left in float)
    input_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        check_choice(self.act_scope, "act_scope", ACT_SCOPES)

    @staticmethod
    def active(bits: int | None) -> bool:
        return bits is not None and bits < 32


def quantize_model(model: nn.Module, spec: QuantSpec, layers: Iterable[str], *,
                   output_stats: dict[str, ActStats] | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Fake-quantize ``model``: the named layers' weights (and biases) and the activations
    ``spec.act_scope`` names. Returns the quantized model and what was done: the bits of every
    quantized tensor (``bits_by_param``, for :func:`riembench.sizing.cost.model_cost`), which
    activations were quantized on which range (``act_ranges``), and why the others were not
    (``act_float``).

    Weights and layer inputs are quantized in place (layer inputs by a pre-hook, see
    :func:`attach_input_quant`); under ``act_scope="reference"`` the inputs of residual adds and
    concatenations are quantized by quantizer nodes inserted into the traced graph, so the
    returned model is then an ``fx.GraphModule`` (as torch's FX graph-mode quantization returns)
    with the same module names. Activation ranges come from :func:`input_stats` computed *before*
    any change, so the order of the layers does not matter; ``output_stats`` is passed on to it.
    """
    layers = list(layers)
    info: dict[str, Any] = {"w_bits": spec.w_bits, "a_bits": spec.a_bits,
                            "b_bits": spec.b_bits if spec.active(spec.w_bits) else None,
                            "per_channel": spec.per_channel, "symmetric": spec.symmetric,
                            "act_scope": spec.act_scope, "bits_by_param": {}, "act_ranges": {},
                            "act_float": {}}
    quant_acts = spec.active(spec.a_bits)
    traced = ModelGraph.trace(model) if quant_acts else None
    report = input_stats(model, output_stats, traced) if traced is not None else None
    if spec.active(spec.w_bits):
        assert spec.w_bits is not None
        info["bits_by_param"] = quantize_weights(model, layers, spec.w_bits, spec.per_channel,
                                                 spec.symmetric)
        if spec.active(spec.b_bits):
            assert spec.b_bits is not None
            info["bits_by_param"].update(quantize_biases(model, layers, spec.b_bits))
    if report is None or traced is None:
        return model, info
    assert spec.a_bits is not None
    info.update(quantize_inputs(model, layers, spec.a_bits, report, spec.act_k))
    if spec.act_scope == "reference":
        info["act_float"].update(_quantize_image(model, traced, layers, spec, info))
        model = quantize_graph_inputs(model, traced, report, spec.a_bits, spec.act_k, info)
    return model, info


def quantize_biases(model: nn.Module, layers: Iterable[str], bits: int) -> dict[str, int]:
    """Per-tensor min/max quantization of the named layers' biases in place."""
    done: dict[str, int] = {}
    for name in layers:
        bias = getattr(get_module(model, name), "bias", None)
        if bias is None:
            continue
        with torch.no_grad():
            bias.copy_(quantize_tensor(bias, bits, per_channel=False, symmetric=False))
        done[f"{name}.bias" if name else "bias"] = bits
    return done


def _quantize_image(model: nn.Module, traced: ModelGraph, layers: list[str], spec: QuantSpec,
                    info: dict[str, Any]) -> dict[str, str]:
    """Quantize the network input where the selected layers read it: the layers' input
    quantizers on ``spec.input_range`` (the same grid for every such layer)."""
    left: dict[str, str] = {}
    for name in layers:
        if name not in info["act_float"] or not traced.input_reaches(name):
            continue
        if spec.input_range is None:
            left[name] = ("the network input's range is unknown (no normalization given with "
                          "the job): left in float")
            continue
        lo, hi = spec.input_range
        assert spec.a_bits is not None
        quant = FakeQuantAct(lo, hi, spec.a_bits)
        attach_input_quant(get_module(model, name), quant)
        info["act_ranges"][name] = [float(quant.lo), float(quant.hi)]
        info["act_float"].pop(name)
    return left


#: container of the quantizers inserted into a traced graph (one per tensor input of an add/cat)
GRAPH_QUANT = "act_quant"


def quantize_graph_inputs(model: nn.Module, traced: ModelGraph, report: StatsReport, bits: int,
                          act_k: float, info: dict[str, Any]) -> nn.Module:
    """Insert a ``bits``-bit quantizer before every tensor input of every residual add and
    concatenation whose statistics are known (the skip path among them); record the ranges in
    ``info["act_ranges"]`` (key ``<node>:<i>``) and the unknown ones in ``info["act_float"]``.

    Returns ``model`` itself when nothing was inserted, else an ``fx.GraphModule`` over the
    graph of ``traced`` holding the same modules (hooks included) and a ``act_quant``
    ModuleDict of the new quantizers.
    """
    if traced.graph is None:
        return model
    graph = traced.graph
    quants = nn.ModuleDict()
    for node in list(graph.nodes):
        kind = traced.kind(node)
        if kind is Op.ADD:
            inputs = [a for a in node.args[:2] if isinstance(a, fx.Node)]
            if len(inputs) < 2:
                continue  # a shift by a constant, not a join of two branches
        elif kind is Op.CAT:
            parts = node.args[0] if node.args else []
            inputs = [p for p in parts if isinstance(p, fx.Node)]
        else:
            continue
        for i, arg in enumerate(inputs):
            key = f"{node.name}:{i}"
            stats = report.nodes.get(arg.name)
            if stats is None:
                info["act_float"][key] = (f"'{traced.describe(arg)}' feeding {node.name}: "
                                          "no BatchNorm determines it")
                continue
            quant = FakeQuantAct.from_stats(stats, bits, act_k)
            _insert_quant(graph, quants, f"{node.name}_{i}", quant, arg, [node])
            info["act_ranges"][key] = [float(quant.lo), float(quant.hi)]
    return _with_graph_quants(model, graph, quants)


def _insert_quant(graph: fx.Graph, quants: nn.ModuleDict, qname: str, quant: nn.Module,
                  arg: fx.Node, users: list[fx.Node]) -> None:
    """Put ``quant`` between ``arg`` and ``users`` (one call_module node under GRAPH_QUANT)."""
    quants[qname] = quant
    with graph.inserting_before(users[0]):
        qnode = graph.create_node("call_module", f"{GRAPH_QUANT}.{qname}", (arg,))
    for user in users:
        user.replace_input_with(arg, qnode)


def _with_graph_quants(model: nn.Module, graph: fx.Graph, quants: nn.ModuleDict) -> nn.Module:
    if not len(quants):
        return model
    model.add_module(GRAPH_QUANT, quants)
    rewritten = fx.GraphModule(model, graph)
    rewritten.train(model.training)
    return rewritten


def graph_quant_sites(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Where :func:`quantize_graph_inputs` put its quantizers, by name: the node each one
    reads, the nodes that read it, and its bits (what an artifact needs to put them back with
    :func:`restore_graph_quants`; their ranges are buffers of the state)."""
    if not isinstance(model, fx.GraphModule) or not hasattr(model, GRAPH_QUANT):
        return {}
    sites: dict[str, dict[str, Any]] = {}
    for node in model.graph.nodes:
        target = str(node.target)
        if node.op == "call_module" and target.startswith(GRAPH_QUANT + "."):
            arg = node.args[0]
            assert isinstance(arg, fx.Node)
            quant = model.get_submodule(target)
            assert isinstance(quant, FakeQuantAct)  # the only modules put under GRAPH_QUANT
            sites[target.split(".", 1)[1]] = {
                "input": arg.name, "users": [u.name for u in node.users],
                "bits": int(quant.bits)}
    return sites


def restore_graph_quants(model: nn.Module, sites: dict[str, dict[str, Any]]) -> nn.Module:
    """``model`` (the architecture the quantizers were inserted into) traced and given the
    quantizers of ``sites`` (ranges zero until its state is loaded). Node names come from the
    same tracer on the same architecture; a site it cannot find is an error, not a skip."""
    if not sites:
        return model
    traced = ModelGraph.trace(model)
    if traced.graph is None:
        raise RiembenchError(f"cannot restore activation quantizers: {traced.error}")
    graph = traced.graph
    nodes = {n.name: n for n in graph.nodes}
    quants = nn.ModuleDict()
    for qname, site in sites.items():
        missing = [n for n in [site["input"], *site["users"]] if n not in nodes]
        if missing:
            raise RiembenchError(f"activation quantizer '{qname}' reads or feeds graph nodes "
                                 f"{missing} that {type(model).__name__} does not have: not the "
                                 "architecture it was quantized on")
        _insert_quant(graph, quants, qname, FakeQuantAct(0.0, 0.0, int(site["bits"])),
                      nodes[site["input"]], [nodes[u] for u in site["users"]])
    return _with_graph_quants(model, graph, quants)


def quantize_inputs(model: nn.Module, layers: Iterable[str], bits: int, report: StatsReport,
                    act_k: float = 6.0) -> dict[str, Any]:
    """Attach a ``bits``-bit input quantizer to every named layer that ``report`` has statistics
    for (range ``mean +- act_k std``); the others stay in float, with the reason.

    ``report`` may come from another model than ``model`` with the same layer names: a
    converted model (RieM layers are not Linear/Conv2d to the tracer) takes the statistics of
    the model it was converted from. Returns ``{"act_ranges": ..., "act_float": ...}``.
    """
    ranges: dict[str, list[float]] = {}
    left: dict[str, str] = {}
    for name in layers:
        stats = report.inputs.get(name)
        if stats is None:
            left[name] = report.missing.get(name, "no statistics")
            continue
        quant = FakeQuantAct.from_stats(stats, bits, act_k)
        attach_input_quant(get_module(model, name), quant)
        ranges[name] = [float(quant.lo), float(quant.hi)]
    if left:
        log.info("activations left in float at %d layer(s): %s", len(left),
                 "; ".join(f"{k}: {v}" for k, v in list(left.items())[:3]))
    return {"act_ranges": ranges, "act_float": left}
