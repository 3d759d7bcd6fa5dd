"""Table 5's scikit-learn baselines: embed the rows of A in k dimensions, decode them linearly.

Isomap, LLE, Nystroem and Kernel PCA only produce an embedding ``E`` (m x k) of the rows; none
has an inverse map that reproduces a row of A. To turn each into a compressor they all share the
same decoder, fitted once in closed form: a least-squares linear map with intercept,
``D = lstsq([E, 1], A)`` and ``A_hat = [E, 1] D``. Least squares is the best any linear decoder
can do from that embedding, so differences between the four rows come from the embeddings alone,
and a useless embedding still scores no worse than the mean row (the intercept).

Stored numbers: the embedding ``m k`` plus the decoder ``(k + 1) n``; ``k`` is the largest that
fits the budget, capped where the estimator cannot produce more components. The paper gives no
hyper-parameters, so every default is scikit-learn's own (n_neighbors=5, KernelPCA's linear
kernel, Nystroem's rbf with gamma = 1 / n_features), except ``eigen_solver="dense"`` where the
seed cannot reach ARPACK's start vector (Isomap) or where dense keeps the seed irrelevant.
Fitting runs in float64 on the CPU whatever ``device`` is (scikit-learn is CPU-only).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import KernelPCA
from sklearn.kernel_approximation import Nystroem
from sklearn.manifold import Isomap, LocallyLinearEmbedding

from riembench.compression.methods.base import MatrixApprox, PerSeedMatrixMethod
from riembench.config.methods import IsomapConfig, KernelPcaConfig, LleConfig, NystroemConfig
from riembench.core.errors import ImpossibleBudget, RiembenchError

# --------------------------------------------------------------------------------------------
# the shared part: size solving and the linear decoder


def decoder_params(m: int, n: int, k: int) -> int:
    """Stored numbers of an embedding-plus-decoder: E (m x k) and D ((k + 1) x n)."""
    return m * k + (k + 1) * n


def solve_embedding_dim(m: int, n: int, budget: int, k_max: int, name: str) -> int:
    """Largest k with ``decoder_params(m, n, k) <= budget``, capped at ``k_max``."""
    k = min((budget - n) // (m + n), k_max)
    if k < 1:
        need = decoder_params(m, n, 1)
        why = f"budget is {budget}" if k_max >= 1 else f"the estimator allows k <= {k_max}"
        raise ImpossibleBudget(f"{name}: a {m}x{n} matrix needs at least {need} parameters "
                               f"(k=1 embedding + linear decoder); {why}")
    return k


def linear_decode(embedding: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[E, 1] @ lstsq([E, 1], A)``: the best linear (with intercept) reconstruction from E.

    The minimum-norm solution (rcond=None) keeps rank-deficient embeddings (repeated or zero
    columns, which LLE and Isomap produce on disconnected neighbour graphs) from failing.
    """
    design = np.hstack([embedding, np.ones((embedding.shape[0], 1))])
    decoder, *_ = np.linalg.lstsq(design, target, rcond=None)
    return design @ decoder




class EmbeddingDecoderMethod(PerSeedMatrixMethod):
    """Budget -> k, embed the rows with a scikit-learn estimator, decode with least squares.

    A subclass only says how many components its estimator can produce (``max_components``)
    and builds the estimator (``estimator``); everything else lives here once.
    """

    cfg: Any

    @abstractmethod
    def max_components(self, m: int, n: int) -> int:
        """Most components the estimator can return for m samples of n features."""

    @abstractmethod
    def estimator(self, k: int, seed: int, n_samples: int) -> Any:
        """The scikit-learn estimator producing a k-dimensional embedding of ``n_samples`` rows."""

    def approximate_one(self, target: torch.Tensor, budget: int, seed: int,
                        device: torch.device) -> MatrixApprox:
        m, n = target.shape
        k = solve_embedding_dim(m, n, budget, self.max_components(m, n), self.cfg.name)
        rows = target.detach().cpu().to(torch.float64).numpy()
        est = self.estimator(k, seed, m)
        embedding = np.asarray(est.fit_transform(rows), dtype=np.float64)
        k_used = embedding.shape[1]  # estimators may return fewer columns than asked
        a_hat = linear_decode(embedding, rows)
        info = {"k": k_used, "k_requested": k, "estimator": _settings(est),
                "rel_mse": float(np.mean((a_hat - rows) ** 2) / max(float(rows.var()), 1e-30))}
        return MatrixApprox(torch.from_numpy(a_hat).to(target.dtype), decoder_params(m, n, k_used), info)


def _settings(est: Any) -> dict[str, Any]:
    """The estimator's effective settings (after any capping), as plain JSON-able values."""
    plain = (bool, int, float, str, type(None))
    return {"class": type(est).__name__,
            **{k: v for k, v in est.get_params().items() if isinstance(v, plain)}}


def _neighbors(n_neighbors: int, n_samples: int) -> int:
    """Neighbour-graph methods need n_neighbors < n_samples; tiny matrices get the most allowed."""
    return max(1, min(n_neighbors, n_samples - 1))


def _check_neighbors(name: str, n_neighbors: int) -> None:
    if n_neighbors < 1:
        raise RiembenchError(f"{name} n_neighbors must be >= 1, got {n_neighbors}")


# --------------------------------------------------------------------------------------------
# the four estimators




class IsomapMethod(EmbeddingDecoderMethod):
    """Isomap has no random_state: the seed never reaches it."""

    cfg: IsomapConfig

    def max_components(self, m: int, n: int) -> int:
        return m - 1  # eigenvectors of the centred m x m geodesic kernel (rank <= m - 1)

    def estimator(self, k: int, seed: int, n_samples: int) -> Isomap:
        return Isomap(n_neighbors=_neighbors(self.cfg.n_neighbors, n_samples), n_components=k,
                      eigen_solver=self.cfg.eigen_solver, path_method=self.cfg.path_method)




class LleMethod(EmbeddingDecoderMethod):
    cfg: LleConfig

    def max_components(self, m: int, n: int) -> int:
        return min(n, m - 1)  # sklearn: k <= n_features, and k + 1 bottom eigenvectors of m x m

    def estimator(self, k: int, seed: int, n_samples: int) -> LocallyLinearEmbedding:
        return LocallyLinearEmbedding(n_neighbors=_neighbors(self.cfg.n_neighbors, n_samples),
                                      n_components=k,
                                      reg=self.cfg.reg, method=self.cfg.method,
                                      eigen_solver=self.cfg.eigen_solver, random_state=seed)




class NystroemMethod(EmbeddingDecoderMethod):
    """The seed draws the k landmark rows, so every seed is a different approximation."""

    cfg: NystroemConfig

    def max_components(self, m: int, n: int) -> int:
        return m  # k landmarks drawn from the m rows

    def estimator(self, k: int, seed: int, n_samples: int) -> Nystroem:
        return Nystroem(kernel=self.cfg.kernel, gamma=self.cfg.gamma, coef0=self.cfg.coef0,
                        degree=self.cfg.degree, n_components=k, random_state=seed)




class KernelPcaMethod(EmbeddingDecoderMethod):
    cfg: KernelPcaConfig

    def max_components(self, m: int, n: int) -> int:
        return m - 1  # the centred m x m kernel has rank <= m - 1

    def estimator(self, k: int, seed: int, n_samples: int) -> KernelPCA:
        return KernelPCA(n_components=k, kernel=self.cfg.kernel, gamma=self.cfg.gamma,
                         degree=self.cfg.degree, coef0=self.cfg.coef0,
                         eigen_solver=self.cfg.eigen_solver, random_state=seed)
