"""Method registry. Importing this package registers every built-in method."""

from riembench.methods.base import METHODS, MatrixApprox, MatrixMethod  # noqa: F401
from riembench.methods import lpnorm, riem  # noqa: F401
from riembench.methods import svd, manifold, autoencoder  # noqa: F401
