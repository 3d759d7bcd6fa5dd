"""Data-Free Quantization (Nagel et al., ICCV 2019): make a network quantizable with no data.

Steps, in the paper's order, each on a deep copy of the pretrained model:

1. **BatchNorm folding**: every Linear/Conv2d whose output feeds only a BatchNorm absorbs it
   (``W <- W gamma / sqrt(var + eps)``, ``b <- (b - mean) gamma / sqrt(var + eps) + beta``); the
   BN's ``(beta, |gamma|)`` are kept as the statistics of the layer's output, which later steps
   need (they are the only data-free knowledge of activations).
0. **ReLU6** (``relu6="replace"``): every ReLU6 becomes a ReLU, as the paper and jakc4103/DFQ
   do for MobileNetV2; ReLU6 does not commute with a channel scale, ReLU does.
2. **Cross-layer equalization** (``equalize``): for consecutive layers joined only by ops that
   commute with a positive per-channel scale (ReLU, identity, dropout, pooling, flatten after a
   global pool; :data:`riembench.compression.graph.HOMOGENEOUS`), grouped and depthwise convs included on
   either side (MobileNetV2's expand -> depthwise -> project: 37 pairs), channel ``i`` of
   the first layer is divided by ``s_i = sqrt(r1_i r2_i) / r2_i`` and the matching input channel
   of the second multiplied by it, where ``r1_i`` is the range of output channel ``i`` of the
   first weight and ``r2_i`` that of input channel ``i`` of the second. Afterwards both ranges
   equal ``sqrt(r1_i r2_i)``: channels with a tiny range no longer waste a per-tensor grid.
   Chains (conv1 -> conv2 -> conv3 of a Bottleneck) are swept repeatedly until every ``s`` is
   1 within ``eq_tol``. In torchvision ResNets the pairs are conv1 -> conv2 (BasicBlock) and
   conv1 -> conv2 -> conv3 (Bottleneck); a block's last conv feeds the residual add and is
   never the first of a pair (scaling it would need the same scaling of the skip branch); the
   reason for every layer that starts no pair is reported in ``info["eq_skipped"]``.
3. **High-bias absorption** (``absorb_bias``): where a ReLU separates the pair, the part
   ``c = max(0, beta - 3 |gamma|)`` of a channel's pre-activation that is (almost) always
   positive is moved into the next layer's bias (``b1 -= c``, ``b2 += W2 c``), shrinking
   activation ranges. Exact whenever the pre-activation is >= c (the 3-sigma assumption) and
   the second layer does not zero-pad; see ``absorb_padded``.
4. **Quantization**: weights per-tensor asymmetric min/max at ``w_bits`` (``quantize.py``);
   activations at ``a_bits`` on ranges ``mean +- act_k * std`` from the BN statistics: layer
   inputs, and under ``act_scope="reference"`` also the image and both inputs of every residual
   add, as jakc4103/DFQ; biases per tensor at ``b_bits`` after step 5.
5. **Analytic bias correction** (``bias_correct``): quantization error ``eps = W_q - W`` shifts
   a layer's expected output by ``eps E[x]``; ``E[x]`` is the clipped-normal mean of the input
   implied by the BN statistics (propagated through ReLU, residual adds, pooling; see
   :func:`riembench.compression.quantize.input_stats`), and the shift is subtracted from the bias.

Where this departs from the references (jakc4103/DFQ, AIMET, MQBench) is written in
docs/baselines.md.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from riembench.compression.act_ranges import ActStats, input_stats
from riembench.compression.graph import COMPRESSIBLE, HOMOGENEOUS, LAYERS, Layer, ModelGraph, Op
from riembench.compression.methods.base import CompressedNet, NetworkJob, NetworkMethod
from riembench.compression.network import get_layer, get_module, set_module
from riembench.compression.quantize import QuantSpec, quantize_biases, quantize_model
from riembench.config.methods import DfqConfig

RANGES = ("absmax", "minmax")
RELU6_POLICIES = ("replace", "keep")




# --------------------------------------------------------------------------------------------
# 1. BatchNorm folding


def fold_batchnorm(model: nn.Module) -> dict[str, ActStats]:
    """Fold every BatchNorm that directly follows a Linear/Conv2d into it, in place.

    The BN is replaced by ``nn.Identity`` (its parameters disappear from the model, as in any
    deployed integer model). Returns, per folded layer, the statistics of its output implied by
    the BN: ``N(beta, gamma^2)`` per channel. A BN without running statistics
    (``track_running_stats=False``) normalizes with batch statistics even in eval mode and
    cannot be folded; a model that torch.fx cannot trace is left unchanged.
    """
    traced = ModelGraph.trace(model)
    stats: dict[str, ActStats] = {}
    for node in traced.nodes():
        if traced.kind(node) not in LAYERS:
            continue
        users = list(node.users)
        if len(users) != 1 or traced.kind(users[0]) is not Op.BATCHNORM:
            continue
        bn_name, layer_name = str(users[0].target), str(node.target)
        bn, layer = traced.modules[bn_name], traced.modules[layer_name]
        assert isinstance(bn, nn.modules.batchnorm._BatchNorm) and isinstance(layer, COMPRESSIBLE)
        if bn.running_mean is None:
            continue
        if traced.calls[bn_name] != 1 or traced.calls[layer_name] != 1:
            continue
        _fold_one(layer, bn)
        gamma = bn.weight.detach() if bn.affine else torch.ones(bn.num_features)
        beta = bn.bias.detach() if bn.affine else torch.zeros(bn.num_features)
        stats[layer_name] = ActStats.gaussian(beta, gamma)
        set_module(model, bn_name, nn.Identity())
    return stats


def replace_relu6(model: nn.Module) -> list[str]:
    """Replace every ``nn.ReLU6`` module by ``nn.ReLU`` in place (the DFQ paper's and
    jakc4103/DFQ's treatment of MobileNetV2: ReLU6 does not commute with a channel scale).
    Returns the replaced module names."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.ReLU6)]
    for name in names:
        relu6 = get_module(model, name)
        assert isinstance(relu6, nn.ReLU6)
        set_module(model, name, nn.ReLU(inplace=relu6.inplace))
    return names


@torch.no_grad()
def _fold_one(layer: Layer, bn: nn.modules.batchnorm._BatchNorm) -> None:
    # a BN with running statistics has both (fold_batchnorm skips the others)
    assert bn.running_mean is not None and bn.running_var is not None
    inv = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.affine:
        inv = inv * bn.weight.double()
    shift = -bn.running_mean.double() * inv + (bn.bias.double() if bn.affine else 0.0)
    w = layer.weight
    w.copy_((w.double() * inv.reshape(-1, *([1] * (w.dim() - 1)))).to(w.dtype))
    bias = _ensure_bias(layer)
    bias.copy_((bias.double() * inv + shift).to(bias.dtype))


def _ensure_bias(layer: Layer) -> torch.Tensor:
    """The layer's bias, created as zeros when it has none (folding and corrections need one)."""
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype,
                                              device=layer.weight.device))
    return layer.bias


# --------------------------------------------------------------------------------------------
# 2. cross-layer equalization


@dataclass
class Pair:
    """Two layers whose shared channels may be rescaled: ``first``'s output channel ``i`` is
    ``second``'s input channel ``i``, through ops in ``through`` (``relu`` if one is a ReLU)."""

    first: str
    second: str
    relu: bool
    through: list[str] = field(default_factory=list)


def find_pairs(model: nn.Module, names: list[str],
               traced: ModelGraph | None = None) -> tuple[list[Pair], dict[str, str]]:
    """Equalization pairs among the selected layers, and why each other selected layer starts
    none (``{layer: reason}``). Call after :func:`fold_batchnorm`: an unfolded BN in between
    does not commute with a rescaling of only one side.

    A pair is a layer whose output reaches exactly one next selected layer through
    single-consumer positively homogeneous ops (:data:`riembench.compression.graph.HOMOGENEOUS`), with
    output channel ``i`` of the first read as input channel ``i`` of the second: grouped and
    depthwise convs take part on either side (MobileNetV2's expand -> depthwise -> project).
    """
    selected = set(names)
    traced = traced or ModelGraph.trace(model)
    if not traced.traced:
        return [], traced.reason_not_traced(names)
    pairs: list[Pair] = []
    skipped: dict[str, str] = {}
    for name, node in traced.layer_nodes().items():
        if name not in selected:
            continue
        if traced.calls[name] != 1:
            skipped[name] = "module is called more than once"
            continue
        pair, reason = _follow(traced, node, selected)
        if pair is None:
            skipped[name] = reason
            continue
        first, second = traced.modules[name], traced.modules[pair.second]
        assert isinstance(first, COMPRESSIBLE) and isinstance(second, COMPRESSIBLE)
        n_out = first.weight.shape[0]
        n_in = second.in_features if isinstance(second, nn.Linear) else second.in_channels
        if traced.calls[pair.second] != 1:
            skipped[name] = f"next layer '{pair.second}' is called more than once"
        elif n_in != n_out:
            skipped[name] = f"'{pair.second}' reads {n_in} channels, '{name}' writes {n_out}"
        elif isinstance(first, nn.Linear) and isinstance(second, nn.Conv2d):
            skipped[name] = "Linear feeding a Conv2d"
        else:
            pairs.append(Pair(name, pair.second, pair.relu, pair.through))
    return pairs, skipped


def _follow(traced: ModelGraph, node: fx.Node, selected: set[str]) -> tuple[Pair | None, str]:
    """Walk from a layer's output through homogeneous single-consumer ops to the next layer."""
    cur, relu = node, False
    through: list[str] = []
    while True:
        users = list(cur.users)
        if len(users) != 1:
            where = "output" if cur is node else f"'{traced.describe(cur)}' after it"
            return None, (f"{where} feeds {len(users)} consumers "
                          f"({', '.join(traced.describe(u) for u in users)})" if users else "unused")
        user = users[0]
        kind = traced.kind(user)
        if kind in LAYERS:
            target = str(user.target)
            if target not in selected:
                return None, f"next layer '{target}' is not selected"
            return Pair(str(node.target), target, relu, through), ""
        if kind in HOMOGENEOUS:
            relu = relu or kind is Op.RELU
            through.append(traced.describe(user))
            cur = user
            continue
        if kind is Op.BATCHNORM:
            return None, f"unfolded BatchNorm '{user.target}' follows"
        if kind is Op.RELU6:
            return None, ("output goes through ReLU6, which does not commute with a per-channel "
                          "scale (dfq relu6=replace makes it a ReLU)")
        if kind is Op.ADD:
            return None, ("output feeds a residual add: scaling it would need the same "
                          "scaling of the other branch")
        if kind is Op.CAT:
            return None, "output is concatenated with other tensors"
        if kind is Op.OUTPUT:
            return None, "output is the network's output"
        return None, (f"output goes through '{traced.describe(user)}' ({kind.value}: not a "
                      "per-channel positive-homogeneous op)")


def _by_input_channel(w: torch.Tensor, groups: int) -> torch.Tensor:
    """A (grouped) weight (out, in/groups, ...) as rows per *input* channel: row ``c`` holds
    every weight that reads input channel ``c`` (channel ``g * in_g + j`` of group ``g``)."""
    out, in_g = w.shape[0], w.shape[1]
    grouped = w.detach().double().reshape(groups, out // groups, in_g, -1)
    return grouped.permute(0, 2, 1, 3).reshape(groups * in_g, -1)


def _groups(layer: nn.Module) -> int:
    return int(getattr(layer, "groups", 1))


def _range(flat: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "absmax":
        return flat.abs().amax(dim=1)
    return flat.amax(dim=1) - flat.amin(dim=1)


def _out_ranges(w: torch.Tensor, kind: str) -> torch.Tensor:
    return _range(w.detach().double().reshape(w.shape[0], -1), kind)


def _in_ranges(layer: Layer, kind: str) -> torch.Tensor:
    return _range(_by_input_channel(layer.weight, _groups(layer)), kind)


def pair_ranges(model: nn.Module, pair: Pair,
                kind: str = "absmax") -> tuple[torch.Tensor, torch.Tensor]:
    """(r1, r2): per-channel ranges of the first layer's outputs and the second's inputs."""
    return (_out_ranges(get_layer(model, pair.first).weight, kind),
            _in_ranges(get_layer(model, pair.second), kind))


@torch.no_grad()
def equalize(model: nn.Module, pairs: list[Pair], stats: dict[str, ActStats],
             kind: str = "absmax", max_iter: int = 100, tol: float = 1e-6) -> dict[str, Any]:
    """Cross-layer equalization of ``pairs`` in place (``stats`` of first layers are rescaled
    with them). Sweeps all pairs until every scale is within ``1 +- tol``."""
    dev = math.inf
    sweeps = 0
    while sweeps < max_iter and dev > tol:
        sweeps += 1
        dev = 0.0
        for pair in pairs:
            r1, r2 = pair_ranges(model, pair, kind)
            ok = (r1 > 0) & (r2 > 0)
            s = torch.where(ok, torch.sqrt(r1 * r2) / r2.clamp(min=1e-300), torch.ones_like(r1))
            _scale_channels(model, pair, s, stats)
            dev = max(dev, float((s - 1).abs().max()))
    return {"sweeps": sweeps, "max_scale_dev": dev, "converged": dev <= tol}


def _scale_channels(model: nn.Module, pair: Pair, s: torch.Tensor,
                    stats: dict[str, ActStats]) -> None:
    """Divide output channel i of ``first`` by s_i and multiply input channel i of ``second``."""
    first, second = get_layer(model, pair.first), get_layer(model, pair.second)
    w1 = first.weight
    w1.copy_((w1.double() / s.reshape(-1, *([1] * (w1.dim() - 1)))).to(w1.dtype))
    if first.bias is not None:
        first.bias.copy_((first.bias.double() / s).to(first.bias.dtype))
    w2 = second.weight
    groups = _groups(second)
    grouped = w2.double().reshape(groups, w2.shape[0] // groups, w2.shape[1], -1)
    grouped = grouped * s.reshape(groups, 1, w2.shape[1], 1)
    w2.copy_(grouped.reshape(w2.shape).to(w2.dtype))
    if pair.first in stats:
        stats[pair.first] = stats[pair.first].scaled(s)


# --------------------------------------------------------------------------------------------
# 3. high-bias absorption


def _zero_pads(layer: nn.Module) -> bool:
    padding = getattr(layer, "padding", 0)
    if isinstance(padding, str):
        return padding != "valid"
    return any(p != 0 for p in (padding if isinstance(padding, tuple) else (padding,)))


@torch.no_grad()
def absorb_high_bias(model: nn.Module, pairs: list[Pair], stats: dict[str, ActStats],
                     n_sigma: float = 3.0, allow_padded: bool = False) -> dict[str, Any]:
    """Move ``c = max(0, mu - n_sigma sigma)`` of each ReLU'd channel into the next bias."""
    absorbed: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for pair in pairs:
        second = get_layer(model, pair.second)
        if not pair.relu:
            skipped[pair.first] = "no ReLU between the pair: nothing is clipped, nothing to absorb"
            continue
        if pair.first not in stats:
            skipped[pair.first] = "no BatchNorm statistics for its output"
            continue
        if _zero_pads(second) and not allow_padded:
            skipped[pair.first] = (f"'{pair.second}' zero-pads its input: absorption would change "
                                   "border outputs (absorb_padded=true does it anyway)")
            continue
        st = stats[pair.first]
        c = (st.mu - n_sigma * st.sigma).clamp(min=0)
        if not bool((c > 0).any()):
            skipped[pair.first] = "no channel has beta > 3 |gamma|"
            continue
        first = get_layer(model, pair.first)
        b1 = _ensure_bias(first)
        b1.copy_((b1.double() - c).to(b1.dtype))
        shift = _weight_times_input(second, c)
        b2 = _ensure_bias(second)
        b2.copy_((b2.double() + shift).to(b2.dtype))
        stats[pair.first] = st.shifted(c)
        absorbed[pair.first] = float(c.max())
    return {"absorbed": absorbed, "absorb_skipped": skipped}


# --------------------------------------------------------------------------------------------
# 5. analytic bias correction


def _weight_times_input(layer: Layer, x: torch.Tensor,
                        weight: torch.Tensor | None = None) -> torch.Tensor:
    """``W x`` for a per-input-channel constant ``x`` (a conv's kernel summed; grouped convs
    read their own group's channels): the output shift that a constant input shift causes."""
    w = (layer.weight if weight is None else weight).detach().double()
    groups = _groups(layer)
    out, in_g = w.shape[0], w.shape[1]
    per_in = w.reshape(groups, out // groups, in_g, -1).sum(dim=3)  # (g, out/g, in/g)
    shift = torch.einsum("goi,gi->go", per_in, x.double().reshape(groups, in_g))
    return shift.reshape(out)


@torch.no_grad()
def correct_bias(layer: Layer, float_weight: torch.Tensor, input_mean: torch.Tensor) -> float:
    """Subtract the expected output shift ``(W_q - W) E[x]`` from ``layer``'s bias, in place.

    ``input_mean``: E[x] per input channel (in_channels of a conv). For a conv the shift uses
    the kernel's sum, i.e. it is exact away from zero-padded borders. Returns max |shift|.
    """
    shift = _weight_times_input(layer, input_mean, layer.weight.double() - float_weight.double())
    bias = _ensure_bias(layer)
    bias.copy_((bias.double() - shift).to(bias.dtype))
    return float(shift.abs().max()) if shift.numel() else 0.0


# --------------------------------------------------------------------------------------------
# the method


def dfq_transform(model: nn.Module, layers: list[str], cfg: DfqConfig, w_bits: int | None,
                  input_range: tuple[float, float] | None = None
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """Apply the whole DFQ pipeline to ``model`` (modified in place; the returned model is it,
    or a graph module over it when add inputs are quantized); returns it and what was done.

    ``input_range``: the network input's range (the normalized image), quantized at ``a_bits``
    under ``act_scope="reference"``; None leaves it in float with the reason recorded.
    """
    info: dict[str, Any] = {}
    if cfg.relu6 == "replace":
        info["relu6_replaced"] = replace_relu6(model)
    stats = fold_batchnorm(model)
    info["folded_bn"] = sorted(stats)
    pairs, skipped = find_pairs(model, layers)
    info["eq_pairs"] = [[p.first, p.second] for p in pairs]
    info["eq_skipped"] = skipped
    if cfg.equalize and pairs:
        info["equalization"] = equalize(model, pairs, stats, cfg.eq_range, cfg.eq_max_iter,
                                        cfg.eq_tol)
    if cfg.absorb_bias and pairs:
        info.update(absorb_high_bias(model, pairs, stats, cfg.absorb_sigmas, cfg.absorb_padded))
    float_weights = {n: get_layer(model, n).weight.detach().clone() for n in layers}
    means = input_stats(model, stats) if cfg.bias_correct else None
    spec = QuantSpec(w_bits, cfg.a_bits, cfg.per_channel, cfg.symmetric, None, cfg.act_k,
                     cfg.act_scope, input_range)
    model, qinfo = quantize_model(model, spec, layers, output_stats=stats)
    info.update(qinfo)
    quantized = QuantSpec.active(w_bits)
    if means is not None and quantized:
        corrected: dict[str, float] = {}
        for name in layers:
            st = means.inputs.get(name)
            if st is not None:
                corrected[name] = correct_bias(get_layer(model, name), float_weights[name],
                                               st.mean())
        info["bias_corrected"] = corrected
        info["bias_uncorrected"] = {n: means.missing.get(n, "?") for n in layers
                                    if n not in corrected}
    info["b_bits"] = cfg.b_bits if quantized and QuantSpec.active(cfg.b_bits) else None
    if info["b_bits"] is not None:  # after the correction, which changes the biases
        info["bits_by_param"].update(quantize_biases(model, layers, info["b_bits"]))
    return model, info


class DfqMethod(NetworkMethod):
    """DFQ; deterministic (one build, one copy per seed)."""

    cfg: DfqConfig
    #: the size follows from the bits: the runner needs no parameter budget

    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        model = copy.deepcopy(job.model).eval()
        w_bits = self.cfg.w_bits  # null: float weights (the size setting never applies)
        model, info = dfq_transform(model, list(job.layers), self.cfg, w_bits, job.input_range)
        return [CompressedNet(copy.deepcopy(model), copy.deepcopy(info)) for _ in job.seeds]
