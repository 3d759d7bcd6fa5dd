"""Data-free activation statistics: the ranges activation quantizers use, from BatchNorm.

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

import logging
from dataclasses import dataclass, field

import torch
from torch import fx, nn

from riembench.compression.graph import COMPRESSIBLE, LAYERS, Layer, ModelGraph, Op

log = logging.getLogger("riembench")


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
            layer = modules[target]
            assert isinstance(layer, COMPRESSIBLE)  # only Linear/Conv2d modules get LAYERS kinds
            _record_input(inputs, missing, traced, target, layer, node, src)
            out = overrides[target].clone() if target in overrides else None
        elif node.op == "call_module" and target in overrides:
            out = overrides[target].clone()
        elif kind is Op.BATCHNORM:
            bn = modules[target]
            assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
            out = _bn_stats(bn)
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
                  name: str, mod: Layer, node: fx.Node, src: ActStats | None) -> None:
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
