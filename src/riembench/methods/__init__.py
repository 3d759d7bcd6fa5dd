"""Method registry. Importing this package registers every built-in method."""

from riembench.methods import autoencoder, dfq, lpnorm, manifold, original, prune, quant, riem, svd  # noqa: F401  (importing registers each method)
from riembench.methods.base import METHODS, MatrixApprox, MatrixMethod  # noqa: F401
