"""Method registry. Importing this package registers every built-in method."""

from riembench.methods import (  # noqa: F401  (importing registers each method)
    autoencoder,
    dfq,
    lpnorm,
    manifold,
    neuron_merge,
    original,
    prune,
    quant,
    riem,
    svd,
)
from riembench.methods.base import METHODS, MatrixApprox, MatrixMethod  # noqa: F401
