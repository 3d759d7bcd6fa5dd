"""Plain uniform post-training quantization: the baseline DFQ improves on.

Weights of the selected layers are rounded to ``w_bits`` on a min/max (asymmetric) or abs-max
(symmetric) grid, per tensor or per output channel, biases to ``b_bits`` per tensor; activations
are rounded to ``a_bits`` on a fixed per-tensor range set from BatchNorm statistics (mean +-
act_k std), the only data-free knowledge of activations (see ``riembench.quantize``): the inputs
of the layers, and under ``act_scope: reference`` also the image (on its normalization's range)
and both inputs of every residual add, as jakc4103/DFQ does. BatchNorm is folded into the preceding
layer first (``fold_bn``), as every integer deployment does, so that the quantized weights are
the ones that actually run; nothing else is changed, which is what makes it the plain baseline.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from riembench.errors import RiembenchError
from riembench.methods.base import METHODS, CompressedNet, MethodConfig, NetworkJob, NetworkMethod
from riembench.methods.dfq import fold_batchnorm
from riembench.quantize import ACT_SCOPES, QuantSpec, quantize_model
from riembench.validate import check_choice


@dataclass
class QuantConfig(MethodConfig):
    name: str = "quant"
    #: weight bits; null keeps float weights (an unsized method: size settings never apply)
    w_bits: int | None = 8
    #: activation bits; null keeps activations in float (a "W8A32" row)
    a_bits: int | None = None
    per_channel: bool = False
    #: weights only; activations are always asymmetric per-tensor (a ReLU output is
    #: non-negative, a symmetric grid would waste its sign bit)
    symmetric: bool = False
    fold_bn: bool = True
    act_k: float = 6.0
    #: where activations are quantized (with a_bits): "reference" (the image, layer inputs and
    #: both inputs of every residual add / concatenation, as jakc4103/DFQ) or "layers" (layer
    #: inputs only, this project's behaviour before)
    act_scope: str = "reference"
    #: bias bits (per-tensor min/max, with quantized weights); null keeps float biases
    b_bits: int | None = 16

    def __post_init__(self) -> None:
        check_choice(self.act_scope, "quant act_scope", ACT_SCOPES)
        if self.b_bits is not None and not 2 <= self.b_bits <= 32:
            raise RiembenchError(f"quant b_bits must be in 2..32 or null, got {self.b_bits}")
        for bits in (self.w_bits, self.a_bits):
            if bits is not None and not 1 <= bits <= 32:
                raise RiembenchError(f"quant bits must be in 1..32 or null, got {bits}")
        if self.symmetric and self.w_bits == 1:
            raise RiembenchError("quant: symmetric weights need w_bits >= 2")


@METHODS.register("quant", QuantConfig)
class QuantMethod(NetworkMethod):
    """Uniform W/A quantization; deterministic."""

    cfg: QuantConfig
    deterministic = True
    needs_size = False

    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        model = copy.deepcopy(job.model).eval()
        stats = fold_batchnorm(model) if self.cfg.fold_bn else {}
        w_bits = self.cfg.w_bits  # null: float weights (the size setting never applies)
        spec = QuantSpec(w_bits, self.cfg.a_bits, self.cfg.per_channel, self.cfg.symmetric,
                         self.cfg.b_bits, self.cfg.act_k, self.cfg.act_scope, job.input_range)
        model, info = quantize_model(model, spec, job.layers, output_stats=stats)
        info["folded_bn"] = sorted(stats)
        return [CompressedNet(copy.deepcopy(model), copy.deepcopy(info)) for _ in job.seeds]
