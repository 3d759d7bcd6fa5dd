"""Uniform fake quantization, and data-free activation statistics: the one place that defines how
this project rounds numbers to ``b`` bits.

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

Activations (data-free). A post-training quantizer normally calibrates activation ranges on data;
here no data may be seen. Following DFQ (Nagel et al., 2019, section 5), a BatchNorm layer's
learned shift and scale say what its output looks like: channel ``c`` is about
``N(beta_c, gamma_c^2)`` when the running statistics describe the data the model was trained on.
:func:`input_stats` propagates these per-channel Gaussians through the graph of
:mod:`riembench.compression.graph` (ReLU / ReLU6: normal clipped to ``[0, inf)`` / ``[0, 6]``; residual add:
sum of independent Gaussians; pooling and flatten: unchanged; concatenation: stacked) to every
compressible layer's input and every node. :class:`FakeQuantAct` then quantizes a tensor on the
fixed range ``mean +- k * std`` (``k = 6`` by default, clipped to the activation's range), taken
over all channels (per-tensor: a per-channel activation scale cannot be factored out of an
integer accumulation). :func:`quantize_model` quantizes, under ``act_scope="reference"``, what
jakc4103/DFQ does: every layer's input, the image on its normalization's range
(``NetworkTask.input_range``), and both inputs of every residual add and concatenation. Where no
BatchNorm determines a tensor (a layer without BN before it, the image when its range is not
given) there is nothing data-free to set a range from: it stays in float and the reason is
reported, never guessed from data.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from riembench.compression.graph import COMPRESSIBLE, LAYERS, ModelGraph, Op
from riembench.compression.network import get_module
from riembench.core.errors import RiembenchError
from riembench.core.validate import check_choice

log = logging.getLogger("riembench")


# --------------------------------------------------------------------------------------------
# tensors


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


# --------------------------------------------------------------------------------------------
# data-free activation statistics


@dataclass
class ActStats:
    """Per-channel statistics of a tensor implied by BatchNorm parameters, not by data.

    Channel ``c`` is ``N(mu_c, sigma_c^2)``, or ``clip(., 0, cap_c)`` of it where ``relu[c]``
    (``cap`` is +inf after a ReLU, 6 after a ReLU6): keeping the Gaussian *before* the clip lets
    both the clipped mean (bias correction) and the clipped range (activation quantization) be
    computed exactly under the Gaussian assumption.
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    relu: torch.Tensor  # bool, per channel
    #: upper clip of the ReLU'd channels (None: +inf, a plain ReLU)
    cap: torch.Tensor | None = None

    @classmethod
    def gaussian(cls, mu: torch.Tensor, sigma: torch.Tensor) -> ActStats:
        mu = mu.detach().double().flatten()
        sigma = sigma.detach().double().abs().flatten()
        return cls(mu, sigma, torch.zeros_like(mu, dtype=torch.bool))

    def __len__(self) -> int:
        return int(self.mu.numel())

    def clone(self) -> ActStats:
        return ActStats(self.mu.clone(), self.sigma.clone(), self.relu.clone(),
                        None if self.cap is None else self.cap.clone())

    def scaled(self, s: torch.Tensor) -> ActStats:
        """Statistics of the tensor divided by a positive per-channel ``s`` (the cap with it)."""
        return ActStats(self.mu / s, self.sigma / s, self.relu,
                        None if self.cap is None else self.cap / s)

    def shifted(self, c: torch.Tensor) -> ActStats:
        """Statistics of the pre-activation lowered by ``c`` (high-bias absorption)."""
        return ActStats(self.mu - c, self.sigma, self.relu,
                        None if self.cap is None else self.cap - c)

    def after_relu(self) -> ActStats:
        """ReLU of these statistics (a ReLU of a clipped channel changes nothing)."""
        return ActStats(self.mu, self.sigma, torch.ones_like(self.relu), self.cap)

    def after_relu6(self) -> ActStats:
        cap = torch.where(self.relu, torch.clamp(self._cap(), max=6.0),
                          torch.full_like(self.mu, 6.0))
        return ActStats(self.mu, self.sigma, torch.ones_like(self.relu), cap)

    def _cap(self) -> torch.Tensor:
        return self.cap if self.cap is not None else torch.full_like(self.mu, torch.inf)

    def mean(self) -> torch.Tensor:
        """E[x] per channel; for a ReLU'd channel the clipped-normal mean
        ``mu Phi(mu/sigma) + sigma phi(mu/sigma)`` (``max(mu, 0)`` when sigma = 0), with the
        upper clip's terms where a cap (ReLU6) applies."""
        clipped = _clipped_moments(self.mu, self.sigma, self._cap())[0]
        return torch.where(self.relu, clipped, self.mu)

    def var(self) -> torch.Tensor:
        clipped = _clipped_moments(self.mu, self.sigma, self._cap())[1]
        return torch.where(self.relu, clipped, self.sigma.square())

    def bounds(self, k: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel range ``mu +- k sigma``, clipped to ``[0, cap]`` where a ReLU follows."""
        lo, hi = self.mu - k * self.sigma, self.mu + k * self.sigma
        cap = self._cap()
        lo = torch.where(self.relu, torch.minimum(lo.clamp(min=0), cap), lo)
        hi = torch.where(self.relu, torch.minimum(hi.clamp(min=0), cap), hi)
        return lo, hi

    def expand_to(self, n: int) -> ActStats | None:
        """Statistics for ``n`` features when a flatten turned C channels into C * k features
        (channel-major, as torch.flatten lays out (C, H, W)); None if n is no multiple of C."""
        c = len(self)
        if n == c:
            return self
        if c == 0 or n % c:
            return None
        k = n // c
        return ActStats(self.mu.repeat_interleave(k), self.sigma.repeat_interleave(k),
                        self.relu.repeat_interleave(k),
                        None if self.cap is None else self.cap.repeat_interleave(k))

    @staticmethod
    def stack(parts: list[ActStats]) -> ActStats:
        """Channel-wise concatenation (``torch.cat`` on dim 1)."""
        caps = None
        if any(p.cap is not None for p in parts):
            caps = torch.cat([p._cap() for p in parts])
        return ActStats(torch.cat([p.mu for p in parts]), torch.cat([p.sigma for p in parts]),
                        torch.cat([p.relu for p in parts]), caps)


def _clipped_moments(mu: torch.Tensor, sigma: torch.Tensor,
                     cap: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ``clip(N(mu, sigma^2), 0, cap)``, elementwise (cap +inf: ReLU).

    With ``a = -mu / sigma``, ``b = (cap - mu) / sigma``: ``E = mu (Phi(b) - Phi(a)) +
    sigma (phi(a) - phi(b)) + cap (1 - Phi(b))``, and ``E[y^2]`` likewise from the truncated
    normal's second moment (the formulas of jakc4103/DFQ's ``calculate_mean_6``).
    """
    if cap is None:
        cap = torch.full_like(mu, torch.inf)
    safe = sigma.clamp(min=1e-12)
    a = -mu / safe
    b = (cap - mu) / safe
    cdf_a, cdf_b = torch.special.ndtr(a), torch.special.ndtr(b)
    pdf_a = torch.exp(-0.5 * a * a) / (2 * torch.pi) ** 0.5
    pdf_b = torch.where(torch.isinf(b), torch.zeros_like(b), torch.exp(-0.5 * b * b)
                        / (2 * torch.pi) ** 0.5)
    inside = cdf_b - cdf_a
    top = torch.where(torch.isinf(cap), torch.zeros_like(cap), cap * (1 - cdf_b))
    top2 = torch.where(torch.isinf(cap), torch.zeros_like(cap), cap * cap * (1 - cdf_b))
    cap_pdf = torch.where(torch.isinf(cap), torch.zeros_like(cap), (cap + mu) * pdf_b)
    mean = mu * inside + sigma * (pdf_a - pdf_b) + top
    second = (mu * mu + sigma * sigma) * inside + sigma * (mu * pdf_a - cap_pdf) + top2
    var = (second - mean * mean).clamp(min=0)
    zero = sigma <= 0
    point = torch.minimum(mu.clamp(min=0), cap)
    return torch.where(zero, point, mean), torch.where(zero, torch.zeros_like(var), var)


@dataclass
class StatsReport:
    """Input statistics of the compressible layers, and why the others have none.

    ``nodes``: the statistics of every traced node's output (None: unknown), by node name; the
    activation-graph quantizer (:func:`quantize_graph_inputs`) sets the ranges of the residual
    adds' inputs from them.
    """

    inputs: dict[str, ActStats]
    missing: dict[str, str]
    nodes: dict[str, ActStats | None] = field(default_factory=dict)


def input_stats(model: nn.Module, overrides: dict[str, ActStats] | None = None,
                traced: ModelGraph | None = None) -> StatsReport:
    """Data-free statistics of the input of every Linear/Conv2d of ``model``.

    ``overrides``: statistics of the *outputs* of named modules, used in place of the rules
    below; DFQ passes those of convolutions into which a BatchNorm was folded (the BN is gone
    from the graph but its parameters still describe the conv's output).

    Rules (per node of :class:`riembench.compression.graph.ModelGraph`): BatchNorm (eval) ->
    ``N(beta, gamma^2)``; ReLU / ReLU6 -> clipped to ``[0, inf)`` / ``[0, 6]``; add of two tensors
    -> sum of means and variances (independence assumed); add of a constant -> shifted mean;
    pooling, dropout, flatten -> unchanged; ``torch.cat`` on dim 1 -> stacked; anything else
    (hardswish, a gate, a Linear/Conv2d without an override) -> unknown. A model that torch.fx
    cannot trace gets no statistics at all (every layer reported as missing).
    """
    overrides = overrides or {}
    traced = traced or ModelGraph.trace(model)
    modules = traced.modules
    layer_names = [n for n, m in modules.items() if isinstance(m, COMPRESSIBLE)]
    if not traced.traced:
        return StatsReport({}, traced.reason_not_traced(layer_names))

    env: dict[fx.Node, ActStats | None] = {}
    inputs: dict[str, ActStats] = {}
    missing: dict[str, str] = {}
    for node in traced.nodes():
        kind = traced.kind(node)
        args = [a for a in node.args if isinstance(a, fx.Node)]
        src = env.get(args[0]) if args else None
        target = str(node.target)
        out: ActStats | None = None
        if kind in LAYERS:
            _record_input(inputs, missing, traced, target, modules[target], node, src)
            out = overrides[target].clone() if target in overrides else None
        elif node.op == "call_module" and target in overrides:
            out = overrides[target].clone()
        elif kind is Op.BATCHNORM:
            out = _bn_stats(modules[target])
        elif kind is Op.RELU:
            out = src.after_relu() if src is not None else None
        elif kind is Op.RELU6:
            out = src.after_relu6() if src is not None else None
        elif kind in (Op.IDENTITY, Op.POOL, Op.GLOBAL_POOL, Op.FLATTEN, Op.QUANT):
            out = src
        elif kind is Op.ADD:
            out = _add_stats(env, node)
        elif kind is Op.CAT:
            out = _cat_stats(env, node)
        env[node] = out
    for name in layer_names:
        if name not in inputs and name not in missing:
            missing[name] = "not called in the traced forward"
    return StatsReport(inputs, missing, {n.name: s for n, s in env.items()})


def _record_input(inputs: dict[str, ActStats], missing: dict[str, str], traced: ModelGraph,
                  name: str, mod: nn.Module, node: fx.Node, src: ActStats | None) -> None:
    if name in inputs or name in missing:
        inputs.pop(name, None)
        missing[name] = "module is called more than once; its inputs differ"
        return
    if src is None:
        arg = node.args[0] if node.args else None
        what = ("the network input" if traced.input_reaches(name) else f"'{arg}'")
        missing[name] = f"no BatchNorm determines {what}: its statistics are unknown without data"
        return
    n_in = mod.in_features if isinstance(mod, nn.Linear) else mod.in_channels
    stats = src.expand_to(n_in)
    if stats is None:
        missing[name] = f"input has {len(src)} known channels, layer reads {n_in}"
        return
    inputs[name] = stats


def _bn_stats(bn: nn.modules.batchnorm._BatchNorm) -> ActStats:
    if bn.affine:
        return ActStats.gaussian(bn.bias, bn.weight)
    c = bn.num_features
    return ActStats.gaussian(torch.zeros(c), torch.ones(c))


def _add_stats(env: dict[fx.Node, ActStats | None], node: fx.Node) -> ActStats | None:
    if len(node.args) < 2:
        return None
    a, b = node.args[0], node.args[1]
    if isinstance(a, fx.Node) and isinstance(b, fx.Node):
        sa, sb = env.get(a), env.get(b)
        if sa is None or sb is None or len(sa) != len(sb):
            return None
        return ActStats.gaussian(sa.mean() + sb.mean(), (sa.var() + sb.var()).sqrt())
    tensor, const = (a, b) if isinstance(a, fx.Node) else (b, a)
    st = env.get(tensor) if isinstance(tensor, fx.Node) else None
    if st is None or not isinstance(const, (int, float)):
        return None
    return ActStats.gaussian(st.mean() + const, st.var().sqrt())


def _cat_stats(env: dict[fx.Node, ActStats | None], node: fx.Node) -> ActStats | None:
    parts = node.args[0]
    dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
    if dim != 1 or not isinstance(parts, (list, tuple)):
        return None
    stats = [env.get(p) if isinstance(p, fx.Node) else None for p in parts]
    if any(s is None for s in stats):
        return None
    return ActStats.stack([s for s in stats if s is not None])


# --------------------------------------------------------------------------------------------
# modules


class FakeQuantAct(nn.Module):
    """Quantize-dequantize an activation on a fixed per-tensor range ``[lo, hi]`` (asymmetric,
    exact zero), set once from data-free statistics (:meth:`from_stats`); it never observes
    the tensors that pass through it. ``lo``/``hi`` are persistent buffers: a deployed integer
    model stores them (as scale and zero point), so they count in its size.
    """

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


def quantize_weights(model: nn.Module, layers: Iterable[str], bits: int, per_channel: bool,
                     symmetric: bool) -> dict[str, int]:
    """Fake-quantize the weights of the named layers in place; returns ``{param name: bits}``."""
    bits_by_param: dict[str, int] = {}
    for name in layers:
        mod = get_module(model, name)
        with torch.no_grad():
            mod.weight.copy_(quantize_tensor(mod.weight, bits, per_channel, symmetric, axis=0))
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
            sites[target.split(".", 1)[1]] = {
                "input": arg.name, "users": [u.name for u in node.users],
                "bits": int(model.get_submodule(target).bits)}
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
