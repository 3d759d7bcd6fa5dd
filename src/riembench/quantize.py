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
:func:`input_stats` propagates these per-channel Gaussians through the traced graph (ReLU:
clipped normal; residual add: sum of independent Gaussians; pooling and flatten: unchanged;
concatenation: stacked) to every compressible layer's input. :class:`FakeQuantAct` then quantizes
that input on the fixed range ``mean +- k * std`` (``k = 6`` by default, clipped at 0 after a
ReLU), taken over all channels (per-tensor: a per-channel activation scale cannot be factored out
of an integer accumulation). Where no BatchNorm determines a tensor (the network input, a layer
without BN before it) there is nothing data-free to set a range from: such inputs stay in float
and the reason is reported, never guessed from data.
"""

from __future__ import annotations

import fnmatch
import logging
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from riembench.errors import RiembenchError
from riembench.network import COMPRESSIBLE, get_module

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

    Channel ``c`` is ``N(mu_c, sigma_c^2)``, or ``ReLU`` of it where ``relu[c]``: keeping the
    Gaussian *before* the ReLU lets both the clipped mean (bias correction) and the clipped range
    (activation quantization) be computed exactly under the Gaussian assumption.
    """

    mu: torch.Tensor
    sigma: torch.Tensor
    relu: torch.Tensor  # bool, per channel

    @classmethod
    def gaussian(cls, mu: torch.Tensor, sigma: torch.Tensor) -> ActStats:
        mu = mu.detach().double().flatten()
        sigma = sigma.detach().double().abs().flatten()
        return cls(mu, sigma, torch.zeros_like(mu, dtype=torch.bool))

    def __len__(self) -> int:
        return int(self.mu.numel())

    def clone(self) -> ActStats:
        return ActStats(self.mu.clone(), self.sigma.clone(), self.relu.clone())

    def after_relu(self) -> ActStats:
        return ActStats(self.mu, self.sigma, torch.ones_like(self.relu))

    def mean(self) -> torch.Tensor:
        """E[x] per channel; for a ReLU'd channel the clipped-normal mean
        ``mu Phi(mu/sigma) + sigma phi(mu/sigma)`` (``max(mu, 0)`` when sigma = 0)."""
        clipped = _clipped_moments(self.mu, self.sigma)[0]
        return torch.where(self.relu, clipped, self.mu)

    def var(self) -> torch.Tensor:
        clipped = _clipped_moments(self.mu, self.sigma)[1]
        return torch.where(self.relu, clipped, self.sigma.square())

    def bounds(self, k: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel range ``mu +- k sigma``, clipped at 0 where a ReLU follows."""
        lo, hi = self.mu - k * self.sigma, self.mu + k * self.sigma
        lo = torch.where(self.relu, lo.clamp(min=0), lo)
        hi = torch.where(self.relu, hi.clamp(min=0), hi)
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
                        self.relu.repeat_interleave(k))


def _clipped_moments(mu: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and variance of ReLU(N(mu, sigma^2)), elementwise."""
    safe = sigma.clamp(min=1e-12)
    a = mu / safe
    cdf = torch.special.ndtr(a)
    pdf = torch.exp(-0.5 * a * a) / (2 * torch.pi) ** 0.5
    mean = mu * cdf + sigma * pdf
    second = (mu * mu + sigma * sigma) * cdf + mu * sigma * pdf
    var = (second - mean * mean).clamp(min=0)
    zero = sigma <= 0
    return torch.where(zero, mu.clamp(min=0), mean), torch.where(zero, torch.zeros_like(var), var)


#: modules that leave per-channel statistics unchanged (pooling keeps the mean exactly for
#: average pooling and is a documented approximation for max pooling; the variance is kept,
#: i.e. neighbouring positions are assumed fully correlated)
_PASSTHROUGH_MODULES = (nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
                        nn.AdaptiveMaxPool2d, nn.Flatten)
_PASSTHROUGH_FUNCTIONS = {torch.flatten, F.adaptive_avg_pool2d, F.avg_pool2d, F.max_pool2d,
                          F.adaptive_max_pool2d, F.dropout}
_PASSTHROUGH_METHODS = {"flatten", "view", "reshape", "contiguous", "clone", "detach"}
_RELU_FUNCTIONS = {torch.relu, F.relu}
_ADD_FUNCTIONS = {operator.add, operator.iadd, torch.add}


@dataclass
class StatsReport:
    """Input statistics of the compressible layers, and why the others have none."""

    inputs: dict[str, ActStats]
    missing: dict[str, str]


def input_stats(model: nn.Module, overrides: dict[str, ActStats] | None = None) -> StatsReport:
    """Data-free statistics of the input of every Linear/Conv2d of ``model``.

    ``overrides``: statistics of the *outputs* of named modules, used in place of the rules
    below; DFQ passes those of convolutions into which a BatchNorm was folded (the BN is gone
    from the graph but its parameters still describe the conv's output).

    Rules (per node of the torch.fx graph): BatchNorm (eval) -> ``N(beta, gamma^2)``; ReLU ->
    clipped; add of two tensors -> sum of means and variances (independence assumed); add of a
    constant -> shifted mean; pooling, dropout, flatten -> unchanged; ``torch.cat`` on dim 1 ->
    stacked; anything else (including a Linear/Conv2d without an override) -> unknown. A model
    that torch.fx cannot trace gets no statistics at all (every layer reported as missing).
    """
    overrides = overrides or {}
    modules = dict(model.named_modules())
    layer_names = [n for n, m in modules.items() if isinstance(m, COMPRESSIBLE)]
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:  # noqa: BLE001  (fx raises many types)
        reason = f"torch.fx cannot trace {type(model).__name__}: {str(exc).splitlines()[0][:120]}"
        return StatsReport({}, {n: reason for n in layer_names})

    env: dict[fx.Node, ActStats | None] = {}
    inputs: dict[str, ActStats] = {}
    missing: dict[str, str] = {}
    for node in graph.nodes:
        env[node] = None
        if node.op == "call_module":
            target = str(node.target)
            mod = modules[target]
            src = _arg_stats(env, node.args[0]) if node.args else None
            if isinstance(mod, COMPRESSIBLE):
                _record_input(inputs, missing, target, mod, node, src)
                env[node] = overrides[target].clone() if target in overrides else None
            elif target in overrides:
                env[node] = overrides[target].clone()
            elif isinstance(mod, nn.modules.batchnorm._BatchNorm):
                env[node] = _bn_stats(mod)
            elif isinstance(mod, nn.ReLU):
                env[node] = src.after_relu() if src is not None else None
            elif isinstance(mod, _PASSTHROUGH_MODULES) or _is_fake_quant(mod):
                env[node] = src
        elif node.op == "call_function":
            env[node] = _function_stats(env, node)
        elif node.op == "call_method":
            src = _arg_stats(env, node.args[0]) if node.args else None
            if node.target in ("relu", "relu_"):
                env[node] = src.after_relu() if src is not None else None
            elif node.target in _PASSTHROUGH_METHODS:
                env[node] = src
    for name in layer_names:
        if name not in inputs and name not in missing:
            missing[name] = "not called in the traced forward"
    return StatsReport(inputs, missing)


def _is_fake_quant(mod: nn.Module) -> bool:
    return isinstance(mod, FakeQuantAct)


def _arg_stats(env: dict[fx.Node, ActStats | None], arg: Any) -> ActStats | None:
    return env.get(arg) if isinstance(arg, fx.Node) else None


def _record_input(inputs: dict[str, ActStats], missing: dict[str, str], name: str, mod: nn.Module,
                  node: fx.Node, src: ActStats | None) -> None:
    if name in inputs or name in missing:
        inputs.pop(name, None)
        missing[name] = "module is called more than once; its inputs differ"
        return
    if src is None:
        arg = node.args[0] if node.args else None
        what = "the network input" if isinstance(arg, fx.Node) and arg.op == "placeholder" \
            else f"'{arg}'"
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


def _function_stats(env: dict[fx.Node, ActStats | None], node: fx.Node) -> ActStats | None:
    fn = node.target
    src = _arg_stats(env, node.args[0]) if node.args else None
    if fn in _RELU_FUNCTIONS:
        return src.after_relu() if src is not None else None
    if fn in _PASSTHROUGH_FUNCTIONS:
        return src
    if fn in _ADD_FUNCTIONS and len(node.args) == 2:
        a, b = node.args
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
    if fn is torch.cat:
        parts = node.args[0]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if dim != 1 or not isinstance(parts, (list, tuple)):
            return None
        stats = [env.get(p) if isinstance(p, fx.Node) else None for p in parts]
        if any(s is None for s in stats):
            return None
        return ActStats(torch.cat([s.mu for s in stats]), torch.cat([s.sigma for s in stats]),
                        torch.cat([s.relu for s in stats]))
    return None


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


def quantize_model(model: nn.Module, w_bits: int | None, a_bits: int | None, per_channel: bool,
                   symmetric: bool, layers: Iterable[str], *, act_k: float = 6.0,
                   output_stats: dict[str, ActStats] | None = None) -> dict[str, Any]:
    """Fake-quantize ``model`` in place: the named layers' weights at ``w_bits`` and their
    inputs at ``a_bits`` (``None`` or >= 32: left in float). Returns what was done: the bits
    of every quantized tensor (``bits_by_param``, for :func:`riembench.cost.model_cost`), which
    layers' inputs were quantized on which range, and why the others were not.

    Activation ranges come from :func:`input_stats` computed *before* any change, so the order
    of the layers does not matter; ``output_stats`` is passed on to it (see there).
    """
    layers = list(layers)
    info: dict[str, Any] = {"w_bits": w_bits, "a_bits": a_bits, "per_channel": per_channel,
                            "symmetric": symmetric, "bits_by_param": {}, "act_ranges": {},
                            "act_float": {}}
    quant_acts = a_bits is not None and a_bits < 32
    report = input_stats(model, output_stats) if quant_acts else None
    if w_bits is not None and w_bits < 32:
        info["bits_by_param"] = quantize_weights(model, layers, w_bits, per_channel, symmetric)
    if report is not None:
        assert a_bits is not None
        info.update(quantize_inputs(model, layers, a_bits, report, act_k))
    return info


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
