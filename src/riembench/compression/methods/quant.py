"""Plain uniform post-training quantization: the baseline DFQ improves on.

Weights of the selected layers are rounded to ``w_bits`` on a min/max (asymmetric) or abs-max
(symmetric) grid, per tensor or per output channel, biases to ``b_bits`` per tensor; activations
are rounded to ``a_bits`` on a fixed per-tensor range set from BatchNorm statistics (mean +-
act_k std), the only data-free knowledge of activations (see ``riembench.compression.quantize``): the inputs
of the layers, and under ``act_scope: reference`` also the image (on its normalization's range)
and both inputs of every residual add, as jakc4103/DFQ does. BatchNorm is folded into the preceding
layer first (``fold_bn``), as every integer deployment does, so that the quantized weights are
the ones that actually run; nothing else is changed, which is what makes it the plain baseline.
"""

from __future__ import annotations

import copy

from riembench.compression.methods.base import CompressedNet, NetworkJob, NetworkMethod
from riembench.compression.methods.dfq import fold_batchnorm
from riembench.compression.quantize import QuantSpec, quantize_model
from riembench.config.methods import QuantConfig


class QuantMethod(NetworkMethod):
    """Uniform W/A quantization; deterministic."""

    cfg: QuantConfig

    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        model = copy.deepcopy(job.model).eval()
        stats = fold_batchnorm(model) if self.cfg.fold_bn else {}
        w_bits = self.cfg.w_bits  # null: float weights (the size setting never applies)
        spec = QuantSpec(w_bits, self.cfg.a_bits, self.cfg.per_channel, self.cfg.symmetric,
                         self.cfg.b_bits, self.cfg.act_k, self.cfg.act_scope, job.input_range)
        model, info = quantize_model(model, spec, job.layers, output_stats=stats)
        info["folded_bn"] = sorted(stats)
        return [CompressedNet(copy.deepcopy(model), copy.deepcopy(info)) for _ in job.seeds]
