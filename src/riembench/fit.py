"""The data-free fitting engine shared by ``riem`` and ``lpnorm``.

Both methods express a weight matrix W (m x n) through neuron positions and a metric, and are
fitted to W alone (no data). The engine fits B such problems of one shape at once: the batch axis
holds (matrix, seed) pairs, so ten seeds of one layer, or ten equal-shape layers, are one set of
tensor ops. Design points, each there for a reason:

* **Per-element independence.** Every parameter tensor has the batch axis first and Adam is
  elementwise, so batch elements never interact: seed 3 fitted alone or inside a batch of ten
  follows the same trajectory (up to float reassociation), and a seed that diverges (NaN/inf) is
  frozen and reported without disturbing the others.
* **Bounded memory.** The loss is accumulated over row chunks and each chunk is back-propagated
  as soon as it is computed, so the (B, rows, n, K) RieM intermediate never exists for all rows
  at once; ``chunk_elems`` bounds it (10000 x 10000 matrices fit on a GPU).
* **Scale-free optimisation.** Targets are standardised per element before fitting and the
  affine map is folded back into the model afterwards (both models end in an affine output), so
  one learning rate serves matrices of any scale.
* **Keep the best.** The state with the lowest loss seen at an evaluation step is kept per
  element, so a late spike in the loss costs nothing.
"""

from __future__ import annotations

import copy
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from riembench.errors import ImpossibleBudget, RiembenchError

# --------------------------------------------------------------------------------------------
# activations for RieM's metric vectors


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "softplus": nn.functional.softplus,
    "gelu": nn.functional.gelu,
    "relu": torch.relu,
    "identity": lambda z: z,
}


# --------------------------------------------------------------------------------------------
# batched embeddings


class BatchedEmbedding(nn.Module, ABC):
    """B independent embeddings of matrices of one shape (m, n)."""

    def __init__(self, batch: int, m: int, n: int) -> None:
        super().__init__()
        self.batch, self.m, self.n = batch, m, n

    @abstractmethod
    def rows(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Reconstruction of the selected rows for every element: (B, rows, n), with autograd."""

    @abstractmethod
    def row_cost(self) -> int:
        """Elements of the largest intermediate per (batch element, row); sets the chunk size."""

    @abstractmethod
    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        """Make the model output ``scale * old + shift`` (per element) by editing parameters."""

    @property
    @abstractmethod
    def params_per_matrix(self) -> int:
        """Stored parameters of one element (closed form, checked against the tensors in tests)."""

    def tensor_params_per_matrix(self) -> int:
        """Parameter count read off the tensors (for checking ``params_per_matrix``)."""
        return sum(p.numel() for p in self.parameters()) // self.batch

    def rows_per_chunk(self, chunk_elems: int) -> int:
        return max(1, min(self.m, chunk_elems // max(1, self.batch * self.row_cost())))

    def halves(self) -> tuple[torch.Tensor, ...] | None:
        """Per-step work shared by every row chunk (None: nothing to share). A field whose rows
        combine a row half and a column half (RieM) computes both once here, so a step over
        many small chunks does not rebuild the column half per chunk (measured 3.7x per fit
        step on resnet18's layer2 stack x 10 seeds, docs/benchmarks.md)."""
        return None

    def rows_from(self, halves: tuple[torch.Tensor, ...] | None,
                  index: torch.Tensor | slice) -> torch.Tensor:
        """:meth:`rows` from precomputed :meth:`halves` (or directly when there are none)."""
        return self.rows(index)

    def fused_chunk_grad(self, leaves: tuple[torch.Tensor, ...] | None, index: torch.Tensor | slice,
                         target: torch.Tensor, scale: torch.Tensor,
                         scratch: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """Squared error of one row chunk with its gradient written by hand, or None (then the
        engine uses autograd). ``scale`` (B,) is d loss / d SSE per element (0: frozen);
        gradients are added to the ``leaves`` (detached :meth:`halves`) and to the read-out
        parameters. Why: autograd allocates and walks a graph over the largest intermediate of
        every chunk; an embedding that knows its derivative can reuse one buffer in place."""
        return None

    @torch.no_grad()
    def reconstruct(self, chunk_elems: int = 2**24) -> torch.Tensor:
        """The full (B, m, n) reconstruction, built chunk by chunk."""
        step = self.rows_per_chunk(chunk_elems)
        halves = self.halves()
        out = None
        for i in range(0, self.m, step):  # into one preallocated tensor (no list + cat copy)
            rows = self.rows_from(halves, slice(i, min(i + step, self.m)))
            if out is None:
                out = rows.new_empty(self.batch, self.m, self.n)
            out[:, i:i + rows.shape[1]] = rows
        assert out is not None
        return out

    #: the linear read-out of :meth:`features`: (weights over the features, offset)
    READOUT: tuple[str, str] = ("w", "c")

    def features(self, index: torch.Tensor | slice,
                 halves: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """(B, rows, n, K) features whose read-out is the reconstruction:
        ``rows(i) = features(i) @ READOUT[0] + READOUT[1]`` (``halves`` as for
        :meth:`rows_from`)."""
        raise NotImplementedError(f"{type(self).__name__} has no linear read-out")

    def readout_numel(self) -> int:
        """Numbers of one element's read-out (weights and offset)."""
        return getattr(self, self.READOUT[0]).shape[-1] + int(getattr(self, "has_offset", True))

    @torch.no_grad()
    def refit_readout(self, targets: torch.Tensor, chunk_elems: int = 2**24) -> torch.Tensor:
        """Least-squares read-out for the current features, per element, against ``targets``
        (B, m, n).

        Why: after the positions and the metric are rounded (8-bit "8/16" rows), the fitted
        read-out no longer matches its features, and RieM's warm-started read-out weights are
        large and of both signs (they build products from differences of sigmoids), so small
        feature errors are amplified; re-solving the few read-out numbers removes that (measured
        in docs/riem.md). Normal equations in float64, accumulated over row chunks. Returns the
        per-element mean squared error of the new read-out against ``targets`` (float64, from
        the same normal equations: no reconstruction needed to score a start).
        """
        w_name, c_name = self.READOUT
        k = getattr(self, w_name).shape[-1]
        offset = bool(getattr(self, "has_offset", True))
        cols = k + int(offset)
        ata = targets.new_zeros(self.batch, cols, cols, dtype=torch.float64)
        aty = targets.new_zeros(self.batch, cols, dtype=torch.float64)
        yty = targets.new_zeros(self.batch, dtype=torch.float64)
        step = self.rows_per_chunk(chunk_elems)
        halves = self.halves()
        for i in range(0, self.m, step):
            rows = slice(i, min(i + step, self.m))
            a = self.features(rows, halves).double().reshape(self.batch, -1, k)
            y = targets[:, rows].double().reshape(self.batch, -1)
            ata[:, :k, :k] += a.transpose(1, 2) @ a
            aty[:, :k] += (a.transpose(1, 2) @ y[..., None])[..., 0]
            yty += y.square().sum(1)
            if offset:  # the constant column's blocks, without concatenating a column of ones
                col = a.sum(1)
                ata[:, :k, k] += col
                ata[:, k, :k] += col
                ata[:, k, k] += a.shape[1]
                aty[:, k] += y.sum(1)
        sol = ridge_solve(ata, aty, 1e-12)
        getattr(self, w_name).copy_(sol[:, :k].to(getattr(self, w_name).dtype))
        if offset:
            getattr(self, c_name).copy_(sol[:, k].to(getattr(self, c_name).dtype))
        # ||y - A x||^2 = y'y - 2 x'A'y + x'A'A x, at the solution x
        sse = yty - 2 * (sol * aty).sum(1) + (sol[:, None, :] @ ata @ sol[..., None])[:, 0, 0]
        return sse.clamp_min(0.0) / (self.m * self.n)

    def element(self, b: int) -> BatchedEmbedding:
        """A batch-of-one copy of element ``b`` (what one seed's compressed layer keeps)."""
        new = copy.copy(self)
        new._parameters = {
            k: None if v is None else nn.Parameter(v.detach()[b:b + 1].clone(), v.requires_grad)
            for k, v in self._parameters.items()}
        new._buffers = dict(self._buffers)
        new._modules = dict(self._modules)
        new.batch = 1
        return new

    def element_state(self, b: int) -> dict[str, torch.Tensor]:
        """Parameters of one batch element (what a per-seed checkpoint stores)."""
        return {k: v[b].detach().clone() for k, v in self.named_parameters()}


def _per_element_init(seeds: Sequence[int], fn: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """Stack one independently seeded draw per element, so seed s gives the same init whatever
    else is in the batch (reproducibility of single cells run outside a sweep)."""
    return torch.stack([fn(torch.Generator().manual_seed(int(s))) for s in seeds])


class LpNormEmbedding(BatchedEmbedding):
    """Lp-norm neuron field (Pei & Wang, 2023):
    W[x, y] = sum_h lambda_h ||q_x[chunk h] - q_y[chunk h]||_p + c.

    Positions are kept per head, (B, H, m, d/H) and (B, H, n, d/H), uniform [0, 1) as in the
    authors' code; lambda ~ N(0, 1). ``c`` is one offset per matrix (1 stored parameter) that
    the authors' code lacks; it lets a distance field represent a matrix with a non-zero mean.
    """

    def __init__(self, seeds: Sequence[int], m: int, n: int, d: int, heads: int, p: float,
                 offset: bool = True) -> None:
        super().__init__(len(seeds), m, n)
        if d % heads:
            raise ValueError(f"d={d} must be a multiple of heads={heads}")
        self.d, self.heads, self.p, self.has_offset = d, heads, float(p), offset
        dh = d // heads
        # one generator per element draws all of that element's tensors in a fixed order
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        self.P = nn.Parameter(torch.stack([torch.rand(heads, m, dh, generator=g) for g in gens]))
        self.R = nn.Parameter(torch.stack([torch.rand(heads, n, dh, generator=g) for g in gens]))
        self.lam = nn.Parameter(torch.stack([torch.randn(heads, generator=g) for g in gens]) / math.sqrt(d))
        self.c = nn.Parameter(torch.zeros(self.batch), requires_grad=offset)

    @staticmethod
    def count(m: int, n: int, d: int, heads: int, offset: bool = True) -> int:
        return (m + n) * d + heads + int(offset)

    @property
    def params_per_matrix(self) -> int:
        return self.count(self.m, self.n, self.d, self.heads, self.has_offset)

    def tensor_params_per_matrix(self) -> int:
        return super().tensor_params_per_matrix() - (0 if self.has_offset else 1)

    def row_cost(self) -> int:
        if self.p in (1.0, 2.0):
            return self.heads * self.n * 2  # cdist output + weighted copy
        return self.heads * self.n * (self.d // self.heads + 3)  # explicit differences

    def distances(self, index: torch.Tensor | slice) -> torch.Tensor:
        """Per-head distances of the selected rows to every column: (B, H, rows, n)."""
        p_rows = self.P[:, :, index]  # (B, H, r, dh)
        b, h, r, dh = p_rows.shape
        if self.p in (1.0, 2.0):
            dist = torch.cdist(p_rows.reshape(b * h, r, dh), self.R.reshape(b * h, self.n, dh),
                               p=self.p)
        else:
            # torch.cdist's general-p backward is ~40x slower than p = 2 (measured: 0.62 s vs
            # 0.015 s for a LeNet-5 fc1 batch); the explicit form is 4-5x faster than cdist at
            # p = 3. The clamp keeps the gradient of s^(1/p) finite where two neurons coincide.
            diff = (p_rows[:, :, :, None, :] - self.R[:, :, None, :, :]).abs()
            dist = diff.pow(self.p).sum(-1).clamp_min(1e-30).pow(1.0 / self.p)
        return dist.view(b, h, r, self.n)

    def rows(self, index: torch.Tensor | slice) -> torch.Tensor:
        out = (self.distances(index) * self.lam[:, :, None, None]).sum(1)
        return out + self.c[:, None, None]

    READOUT = ("lam", "c")

    def features(self, index: torch.Tensor | slice,
                 halves: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Per-head distances as (B, rows, n, H); lambda reads them out."""
        return self.distances(index).permute(0, 2, 3, 1)

    @torch.no_grad()
    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        self.lam.mul_(scale[:, None])
        self.c.mul_(scale).add_(shift)


class RiemEmbedding(BatchedEmbedding):
    """RieM neuron field, as the authors' released code (class ``dynMat_rieM``) computes it:

        W[i, j] = w . sum_s act( U_s (P[i] (+|-) shift_s(R[j])) + b_s ) + c

    with P (m x d), R (n x d) uniform [0, 1), U_s (d_mu x d) and b_s affine, |S| shifts of the
    feature axis (``wrap=True``: cyclic roll as in their code; ``False``: zero-filled shift as in
    the poster's q_y[i + s] with i + s < d), ``combine="sum"`` (their code) or ``"difference"``
    (the poster's displacement q_x - q_y). Because U_s is affine, U_s(P[i] + R'[j]) = (P U_s^T)[i]
    + (R' U_s^T)[j]: we precompute both and never build the (m, n, d) tensor; the (rows, n, |S|
    d_mu) activation is the real cost and is what ``chunk_elems`` bounds.
    """

    def __init__(self, seeds: Sequence[int], m: int, n: int, d: int, d_mu: int,
                 shifts: Sequence[int], activation: str = "sigmoid", wrap: bool = True,
                 combine: str = "sum") -> None:
        super().__init__(len(seeds), m, n)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; known: {', '.join(ACTIVATIONS)}")
        if combine not in ("sum", "difference"):
            raise ValueError(f"combine must be 'sum' or 'difference', got '{combine}'")
        self.d, self.d_mu, self.shifts = d, d_mu, [int(s) % max(d, 1) for s in shifts]
        self.activation, self.wrap, self.combine = activation, wrap, combine
        self.act = ACTIVATIONS[activation]
        s_count = len(self.shifts)
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        bound_u, bound_w = 1 / math.sqrt(d), 1 / math.sqrt(d_mu)  # nn.Linear's default init
        self.P = nn.Parameter(torch.stack([torch.rand(m, d, generator=g) for g in gens]))
        self.R = nn.Parameter(torch.stack([torch.rand(n, d, generator=g) for g in gens]))
        self.U = nn.Parameter(torch.stack([(torch.rand(s_count, d_mu, d, generator=g) * 2 - 1) * bound_u for g in gens]))
        self.bias = nn.Parameter(torch.stack([(torch.rand(s_count, d_mu, generator=g) * 2 - 1) * bound_u for g in gens]))
        self.w = nn.Parameter(torch.stack([(torch.rand(d_mu, generator=g) * 2 - 1) * bound_w for g in gens]))
        self.c = nn.Parameter(torch.zeros(self.batch))
        self.register_buffer("_gather", self._shift_index(), persistent=False)

    @staticmethod
    def count(m: int, n: int, d: int, d_mu: int, n_shifts: int) -> int:
        return (m + n) * d + n_shifts * (d * d_mu + d_mu) + d_mu + 1

    @property
    def params_per_matrix(self) -> int:
        return self.count(self.m, self.n, self.d, self.d_mu, len(self.shifts))

    def row_cost(self) -> int:
        return self.n * len(self.shifts) * self.d_mu * 3  # pre-activation, activation, grad

    def _shift_index(self) -> torch.Tensor:
        """Index into R's feature axis (with ``d`` meaning a zero) for every shift."""
        t = torch.arange(self.d)
        rows = []
        for s in self.shifts:
            idx = t + s
            rows.append(idx % self.d if self.wrap else torch.where(idx < self.d, idx, self.d))
        return torch.stack(rows)  # (S, d)

    def shifted_columns(self) -> torch.Tensor:
        """Column-neuron half of the pre-activation: (B, n, S * d_mu), bias included."""
        r = self.R
        if not self.wrap:
            r = torch.cat([r, r.new_zeros(self.batch, self.n, 1)], -1)
        r_s = r[:, :, self._gather]  # (B, n, S, d)
        cols = torch.einsum("bnsd,bskd->bnsk", r_s, self.U)
        if self.combine == "difference":
            cols = -cols
        return (cols + self.bias[:, None]).flatten(2)

    def row_part(self, index: torch.Tensor | slice) -> torch.Tensor:
        return torch.einsum("brd,bskd->brsk", self.P[:, index], self.U).flatten(2)  # (B, r, S*d_mu)

    def halves(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(row half (B, m, S d_mu), column half (B, n, S d_mu)) of the pre-activation."""
        return self.row_part(slice(None)), self.shifted_columns()

    def _combine(self, rowp: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        wk = self.w.repeat(1, len(self.shifts))  # w is shared across shifts (sum over s first)
        z = rowp[:, :, None, :] + cols[:, None, :, :]
        return torch.einsum("brnk,bk->brn", self._activate(z), wk) + self.c[:, None, None]

    def _activate(self, z: torch.Tensor) -> torch.Tensor:
        """act(z); with no graph to keep, in z's own memory (reconstructions, read-out refits)."""
        in_place = _IN_PLACE.get(self.activation) if not torch.is_grad_enabled() else None
        return in_place[0](z) if in_place else self.act(z)

    def rows(self, index: torch.Tensor | slice) -> torch.Tensor:
        return self._combine(self.row_part(index), self.shifted_columns())

    def rows_from(self, halves: tuple[torch.Tensor, ...] | None,
                  index: torch.Tensor | slice) -> torch.Tensor:
        if halves is None:
            return self.rows(index)
        rowp, cols = halves
        return self._combine(rowp[:, index], cols)

    #: use :meth:`fused_chunk_grad` where the activation allows (False: autograd, for
    #: benchmarks and tests that compare the two)
    fused: bool = True

    @torch.no_grad()
    def fused_chunk_grad(self, leaves: tuple[torch.Tensor, ...] | None, index: torch.Tensor | slice,
                         target: torch.Tensor, scale: torch.Tensor,
                         scratch: dict[str, torch.Tensor] | None = None) -> torch.Tensor | None:
        """The fit's inner loop without autograd: one (B, rows, n, |S| d_mu) buffer holds the
        pre-activation, then the activation, then its derivative times the incoming gradient,
        all in place; the row and column halves get that buffer's sums over columns and rows.
        Same gradients as autograd to float rounding (tests/test_fit.py), 2.5x faster per chunk
        on CPU (benchmarks/engine_ablation.py). Sigmoid and tanh only: their derivative is a
        function of their output, so the pre-activation need not be kept."""
        ops = _IN_PLACE.get(self.activation)
        if not self.fused or ops is None or leaves is None:
            return None
        activate, derivative = ops
        rowp, cols = leaves
        rp = rowp.detach()[:, index]
        b, r, k = rp.shape
        wk = self.w.detach().repeat(1, len(self.shifts))
        buf = _scratch(scratch, "z", (b, r, self.n, k), rp)
        torch.add(rp[:, :, None, :], cols.detach()[:, None, :, :], out=buf)
        act = activate(buf)
        flat = act.view(b, r * self.n, k)
        pred = torch.bmm(flat, wk[:, :, None]).view(b, r, self.n).add_(self.c.detach()[:, None, None])
        err = pred.sub_(target)
        sse = err.square().sum((1, 2))
        grad = err.mul_(scale[:, None, None]).masked_fill_((scale == 0)[:, None, None], 0.0)
        for p, g in ((self.w, torch.bmm(grad.view(b, 1, -1), flat)[:, 0]
                      .view(b, len(self.shifts), self.d_mu).sum(1)),
                     (self.c, grad.sum((1, 2)))):
            if p.requires_grad:
                p.grad = g if p.grad is None else p.grad.add_(g)
        derivative(act)
        act.mul_(grad[..., None])  # w multiplies after the sums: it does not depend on (row, col)
        if rowp.requires_grad:
            _add_rows(_grad_of(rowp), index, act.sum(2).mul_(wk[:, None, :]))
        if cols.requires_grad:
            _grad_of(cols).add_(act.sum(1).mul_(wk[:, None, :]))
        return sse

    def features(self, index: torch.Tensor | slice,
                 halves: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """The metric's activations summed over shifts, (B, rows, n, d_mu); w reads them out."""
        rowp, cols = halves if halves is not None else self.halves()
        z = rowp[:, index][:, :, None, :] + cols[:, None, :, :]
        b, r, n, _ = z.shape
        return self._activate(z).view(b, r, n, len(self.shifts), self.d_mu).sum(3)

    @torch.no_grad()
    def fold_affine(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        self.w.mul_(scale[:, None])
        self.c.mul_(scale).add_(shift)


#: (act in place, act' written over act's output in place) for the activations whose derivative
#: is a function of their output (what :meth:`RiemEmbedding.fused_chunk_grad` needs)
_IN_PLACE: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor],
                           Callable[[torch.Tensor], torch.Tensor]]] = {
    "sigmoid": (torch.Tensor.sigmoid_, lambda s: s.addcmul_(s, s, value=-1.0)),  # s (1 - s)
    "tanh": (torch.Tensor.tanh_, lambda s: s.mul_(s).neg_().add_(1.0)),  # 1 - s^2
}


def _scratch(store: dict[str, torch.Tensor] | None, key: str, shape: tuple[int, ...],
             like: torch.Tensor) -> torch.Tensor:
    """A reusable buffer of ``shape`` (a fresh one when there is no store, or a new shape):
    chunks of one step share it instead of allocating (and, on CPU, page-faulting) their own."""
    if store is None:
        return like.new_empty(shape)
    buf = store.get(key)
    if buf is None or buf.shape != shape or buf.dtype != like.dtype or buf.device != like.device:
        buf = store[key] = like.new_empty(shape)
    return buf


def _grad_of(leaf: torch.Tensor) -> torch.Tensor:
    if leaf.grad is None:
        leaf.grad = torch.zeros_like(leaf)
    return leaf.grad


def _add_rows(grad: torch.Tensor, index: torch.Tensor | slice, value: torch.Tensor) -> None:
    if isinstance(index, slice):
        grad[:, index] += value
    else:
        grad.index_add_(1, index, value)


# --------------------------------------------------------------------------------------------
# size solving


def solve_lpnorm_d(m: int, n: int, budget: int, heads: int, offset: bool = True) -> int:
    """Largest d (a multiple of ``heads``) whose Lp-norm embedding fits ``budget`` parameters."""
    d = (budget - heads - int(offset)) // (m + n)
    d -= d % heads
    if d < heads:
        need = LpNormEmbedding.count(m, n, heads, heads, offset)
        raise ImpossibleBudget(f"lpnorm: a {m}x{n} matrix needs at least {need} parameters "
                               f"(d={heads}, heads={heads}); budget is {budget}")
    return d


def solve_riem_dims(m: int, n: int, budget: int, n_shifts: int, d_mu: int | None = None,
                    d_mu_ratio: float = 0.25) -> tuple[int, int]:
    """Largest (d, d_mu) that fits ``budget``: d_mu fixed, or ``round(d_mu_ratio * d)`` (>= 1).

    The authors' ResNet-50 example uses d = 52, d_mu = 14 (ratio ~0.27)."""
    def mu(d: int) -> int:
        return d_mu if d_mu is not None else max(1, round(d_mu_ratio * d))

    d = budget // (m + n)
    while d >= 1 and RiemEmbedding.count(m, n, d, mu(d), n_shifts) > budget:
        d -= 1
    if d < 1:
        need = RiemEmbedding.count(m, n, 1, mu(1), n_shifts)
        raise ImpossibleBudget(f"riem: a {m}x{n} matrix needs at least {need} parameters "
                               f"(d=1, d_mu={mu(1)}, |S|={n_shifts}); budget is {budget}")
    return d, mu(d)


def default_shifts(d: int, n_shifts: int) -> list[int]:
    """The authors' shift set: c_s = s * d // |S| for s = 0..|S|-1 (spread over the feature axis)."""
    return [s * d // n_shifts for s in range(n_shifts)]


# --------------------------------------------------------------------------------------------
# the fitting loop


@dataclass
class FitConfig:
    steps: int = 2000
    lr: float = 1e-2
    #: "cosine" decays to lr * min_lr_ratio; "constant" keeps lr
    schedule: str = "cosine"
    min_lr_ratio: float = 0.01
    warmup: int = 50
    #: every ``eval_every`` steps the best state per element is kept
    eval_every: int = 25
    #: stop when no element improved its best loss by ``min_delta`` (relative) for this many evals
    patience: int = 0
    min_delta: float = 1e-4
    #: bound on elements of the per-chunk intermediate (B * rows * n * K); sets memory use
    chunk_elems: int = field(default=2**24, metadata={"identity": False})
    #: a loss this many times the initial one counts as divergence
    diverge_factor: float = 1e6
    #: fraction of rows per step (stochastic steps are cheaper); evaluation steps use all rows
    row_fraction: float = 1.0

    def __post_init__(self) -> None:
        if self.schedule not in ("cosine", "constant"):
            raise RiembenchError(f"fit.schedule must be cosine or constant, got '{self.schedule}'")
        if self.steps < 1 or self.lr <= 0 or self.eval_every < 1:
            raise RiembenchError("fit.steps and fit.eval_every must be >= 1 and fit.lr > 0")
        if not 0 < self.row_fraction <= 1:
            raise RiembenchError(f"fit.row_fraction must be in (0, 1], got {self.row_fraction}")


@dataclass
class FitResult:
    #: final (best) mean squared error per element, in the target's original units
    mse: torch.Tensor
    #: relative MSE (mse / var(target)) per element
    rel_mse: torch.Tensor
    #: None for fitted elements, a reason for failed ones
    failed: list[str | None]
    best_step: list[int]
    steps_run: int
    wall_time_s: float
    history: list[tuple[int, list[float]]] = field(default_factory=list)


def standardise(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """((t - mean) / std, mean, std) per element of a (B, m, n) stack: what the fit optimises
    (and what the data-free starts build for). One new tensor, divided in place: a ten-seed
    10000 x 10000 target is 4 GB."""
    mean = t.mean((1, 2))
    std = t.std((1, 2)).clamp_min(1e-12) if t[0].numel() > 1 else torch.ones_like(mean)
    return (t - mean[:, None, None]).div_(std[:, None, None]), mean, std


def ridge_solve(ata: torch.Tensor, aty: torch.Tensor, rel: float) -> torch.Tensor:
    """Batched normal equations (B, F, F) x = (B, F) with a ridge of ``rel`` times the mean
    diagonal: rank-deficient designs (collinear features, fewer equations than unknowns) stay
    solvable while a well-posed system is changed only at that relative size."""
    ridge = rel * ata.diagonal(dim1=1, dim2=2).mean(-1).clamp_min(1e-30)
    eye = torch.eye(ata.shape[-1], dtype=ata.dtype, device=ata.device)
    return torch.linalg.solve(ata + ridge[:, None, None] * eye, aty)


def _lr_factor(cfg: FitConfig, step: int) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule != "cosine":
        raise ValueError(f"unknown schedule '{cfg.schedule}'")
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def fit(model: BatchedEmbedding, targets: torch.Tensor, cfg: FitConfig,
        progress: bool = False, desc: str = "fit") -> FitResult:
    """Fit every element of ``model`` to its target (B, m, n) by Adam on the squared error."""
    result = fit_parts([model], [targets], cfg, progress, desc)
    result.mse, result.rel_mse = result.mse[0], result.rel_mse[0]
    return result


def fit_parts(parts: Sequence[BatchedEmbedding], targets: Sequence[torch.Tensor], cfg: FitConfig,
              progress: bool = False, desc: str = "fit") -> FitResult:
    """Fit several embeddings jointly, one target (B, m_k, n_k) each, all with the same batch B.

    Why joint: the parts may share parameters (a chain of layers whose neurons are shared, where
    part k+1's column positions *are* part k's row positions), so they must be optimised as one
    problem. The loss of batch element b is the sum over parts of each part's mean squared error
    on its standardised target: every layer counts equally whatever its size, since a small last
    layer matters as much to the network's output as a large first one. Parameters shared by
    several parts are optimised once (``nn.ModuleList`` de-duplicates them). ``mse`` and
    ``rel_mse`` in the result are (parts, B).
    """
    start = time.perf_counter()
    container = nn.ModuleList(parts)
    batch = parts[0].batch
    device = next(container.parameters()).device
    stds, means, tgts = [], [], []
    for part, target in zip(parts, targets, strict=True):
        t = target.to(device=device, dtype=torch.float32)
        if t.shape != (part.batch, part.m, part.n) or part.batch != batch:
            raise ValueError(f"target {tuple(t.shape)} does not match part {(part.batch, part.m, part.n)}")
        t_std, mean, std = standardise(t)
        tgts.append(t_std)
        means.append(mean)
        stds.append(std)

    # gradient weight per part: equal weight per layer, scaled so that one part gets weight 1
    # (the plain sum of squared errors; Adam's epsilon then sees the same gradients as before)
    largest = max(p.m * p.n for p in parts)
    weights = [largest / (p.m * p.n) for p in parts]
    params = [p for p in container.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(cfg, s))
    best = {k: v.detach().clone() for k, v in container.named_parameters()}
    best_loss = torch.full((batch,), math.inf, device=device)
    best_parts = torch.full((len(parts), batch), math.inf, device=device)
    best_step = [0] * batch
    failed: list[str | None] = [None] * batch
    alive = torch.ones(batch, dtype=torch.bool, device=device)
    history: list[tuple[int, list[float]]] = []
    init_loss: torch.Tensor | None = None
    stale = 0
    row_gen = torch.Generator(device=device).manual_seed(0)
    bar = _progress(cfg.steps, desc, progress)
    step = 0
    for step in range(cfg.steps):
        last = step == cfg.steps - 1
        is_eval = step % cfg.eval_every == 0 or last
        opt.zero_grad(set_to_none=False)
        part_loss = torch.zeros(len(parts), batch, device=device)
        for k, (part, t) in enumerate(zip(parts, tgts)):
            part_loss[k] = _accumulate_part(part, t, cfg, is_eval, alive, row_gen, weights[k])
        loss = part_loss.sum(0)
        if init_loss is None:
            init_loss = loss.clone()
        bad = alive & (~torch.isfinite(loss) | (loss > cfg.diverge_factor * init_loss.clamp_min(1e-12)))
        if bad.any():
            for b in bad.nonzero().flatten().tolist():
                failed[b] = f"non-finite or diverging loss ({loss[b].item():.3g}) at step {step}"
            alive &= ~bad
            if not alive.any():
                break
        for p in params:  # frozen elements get no update
            if p.grad is not None:
                p.grad[~alive] = 0
        if is_eval:
            improved = alive & (loss < best_loss * (1 - cfg.min_delta))
            if improved.any():
                with torch.no_grad():
                    for k, v in container.named_parameters():
                        best[k][improved] = v.detach()[improved]
                best_loss = torch.where(improved, loss, best_loss)
                best_parts[:, improved] = part_loss[:, improved]
                for b in improved.nonzero().flatten().tolist():
                    best_step[b] = step
                stale = 0
            else:
                stale += 1
            history.append((step, loss.tolist()))
            if bar is not None:
                bar.set_postfix(best_mse=f"{best_loss[alive].min().item():.3e}" if alive.any() else "-")
            if cfg.patience and stale >= cfg.patience:
                break
        opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    with torch.no_grad():
        for k, v in container.named_parameters():
            v.copy_(best[k])
        for part, std, mean in zip(parts, stds, means):
            part.fold_affine(std, mean)
    mse = torch.stack([best_parts[k] * stds[k].square() for k in range(len(parts))])
    # the variance as the standardisation measured it (no float64 copy of the targets)
    var = torch.stack([std.square() if t[0].numel() > 1 else torch.ones(batch).to(mse)
                       for t, std in zip(targets, stds, strict=True)]).to(mse)
    return FitResult(mse=mse.cpu(), rel_mse=(mse / var.clamp_min(1e-30)).cpu(), failed=failed,
                     best_step=best_step, steps_run=step + 1,
                     wall_time_s=time.perf_counter() - start, history=history)


def _accumulate_part(part: BatchedEmbedding, t: torch.Tensor, cfg: FitConfig, full: bool,
                     alive: torch.Tensor, row_gen: torch.Generator, weight: float) -> torch.Tensor:
    """Back-propagate one part's loss chunk by chunk; return its per-element mean squared error."""
    step_rows = part.rows_per_chunk(cfg.chunk_elems)
    n_sub = max(1, round(cfg.row_fraction * part.m))
    if full or n_sub == part.m:
        blocks: list[torch.Tensor | slice] = [slice(i, min(i + step_rows, part.m))
                                              for i in range(0, part.m, step_rows)]
        rows_used = part.m
    else:
        picked = torch.randperm(part.m, generator=row_gen, device=t.device)[:n_sub]
        blocks = list(picked.split(step_rows))
        rows_used = n_sub
    loss = torch.zeros(part.batch, device=t.device)
    # the halves are built once with autograd; each chunk back-propagates into detached copies,
    # whose gradients then go through the halves once (same gradients, fewer rebuilds)
    halves = part.halves()
    leaves = None if halves is None else tuple(h.detach().requires_grad_(h.requires_grad)
                                               for h in halves)
    scale = torch.where(alive, 2.0 * weight, 0.0).to(t.dtype)  # d loss / d SSE per element
    scratch: dict[str, torch.Tensor] = {}
    for rows in blocks:
        err = part.fused_chunk_grad(leaves, rows, t[:, rows], scale, scratch)
        if err is None:
            err = (part.rows_from(leaves, rows) - t[:, rows]).square().sum((1, 2))
            # only live elements drive gradients; a NaN element cannot leak into the others
            live = torch.where(alive, err, torch.zeros_like(err)).sum()
            (live * weight if weight != 1.0 else live).backward()
        loss += err.detach()
    if halves is not None and leaves is not None:
        pairs = [(h, leaf.grad) for h, leaf in zip(halves, leaves, strict=True)
                 if h.requires_grad and leaf.grad is not None]
        if pairs:
            torch.autograd.backward([h for h, _ in pairs], [g for _, g in pairs])
    return loss / (rows_used * part.n)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, mininterval=1.0)


# --------------------------------------------------------------------------------------------
# data-free smart initialisation of RieM from a truncated SVD of the target


def _derivatives(act: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """act' and act'' on a grid over [-4, 4] (act'' = 0 where autograd has no second graph)."""
    with torch.enable_grad():
        z = torch.linspace(-4, 4, 8001, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(act(z).sum(), z, create_graph=True)
        if g.requires_grad:
            (h,) = torch.autograd.grad(g.sum(), z)
        else:  # piecewise-linear activations (identity, relu)
            h = torch.zeros_like(z)
    return z.detach(), g.detach(), h.detach()


def _curvature_point(act: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """(z0, act''(z0)) with |act''| largest on [-4, 4]: where a pair of terms is most 'quadratic'."""
    z, _, h = _derivatives(act)
    i = int(h.abs().argmax())
    return float(z[i]), float(h[i])


def _factor_slots(model: RiemEmbedding, rank: int, half: int,
                  taken: tuple[set[int], set[int]]) -> list[tuple[int, int, int, int]]:
    """Assign factor k to (shift s, metric row a < half) with P column p and R column p + c_s, so
    that no P column and no R column serves two factors (nor the ``taken`` ones). Returns
    (s, a, p_col, r_col) per factor, at most ``rank`` of them."""
    used_p, used_r = set(taken[0]), set(taken[1])
    slots: list[tuple[int, int, int, int]] = []
    for s_idx in range(len(model.shifts)):
        for a in range(half):
            for k in range(model.d):
                r_col = _shifted_col(model, s_idx, k)
                if r_col is not None and k not in used_p and r_col not in used_r:
                    used_p.add(k)
                    used_r.add(r_col)
                    slots.append((s_idx, a, k, r_col))
                    break
            if len(slots) == rank:
                return slots
    return slots


def _shifted_col(model: RiemEmbedding, s_idx: int, k: int) -> int | None:
    """R column that shift ``s_idx`` brings to feature position k (None: shifted in as zero),
    read from the model's own gather index so the warm start and the forward pass agree."""
    col = int(model._gather[s_idx, k])
    return None if col == model.d else col


@torch.no_grad()
def init_riem_from_svd(model: RiemEmbedding, targets: torch.Tensor, amplitude: float = 0.5,
                       seeds: Sequence[int] | None = None) -> int:
    """Start every element at a truncated SVD of its (standardised) target.

    With act''(z0) != 0, two terms with pre-activations z0 + e(a + b) and z0 - e(a + b) and the
    same output weight w sum to 2 act(z0) + act''(z0) e^2 (a + b)^2 + O(e^4): their cross term
    2 act'' e^2 a b is a rank-1 product. Pairing metric rows a and a + d_mu/2 (U negated) in each
    shift gives |S| * floor(d_mu / 2) rank-1 terms; a greedy slot assignment puts factor k in P
    column k and R column k + c_s so no position column is shared. The a^2 and b^2 leftovers are
    row/column-additive, which the fit removes in a few steps (it learns additive structure
    first). With ``seeds``, each element's factors are rotated by a seed-drawn orthogonal Q
    (L Q (R Q)^T = L R^T), so seeds start from the same product but different parameters and the
    ten-seed protocol still samples distinct fits. Returns the rank used. Data-free: it reads
    only the target weights.
    """
    if not warm_start_applicable(model):
        return 0
    model.P.zero_()
    model.R.zero_()
    rank, _, _ = _write_svd_start(model, targets, amplitude, seeds)
    return rank


@torch.no_grad()
def init_riem_chain(parts: Sequence[RiemEmbedding], targets: Sequence[torch.Tensor],
                    amplitude: float = 0.5, seeds: Sequence[int] | None = None) -> list[int]:
    """The SVD warm start for a chain of layers that share neurons (part k's ``R`` is part
    k-1's ``P``).

    A shared position set serves as rows of one layer and columns of the next, so the two
    layers must build their factors in disjoint feature columns of it: layer k takes at most
    half of them for its rows (leaving the rest for layer k+1's columns) and avoids the ones
    layer k-1 wrote. Every layer reads only its own columns (its metric rows are zero
    elsewhere), so the layers do not disturb each other. Returns the rank used per layer.
    """
    if not all(warm_start_applicable(p) for p in parts):
        return [0] * len(parts)
    for part in parts:
        part.P.zero_()
        part.R.zero_()
    ranks: list[int] = []
    prev_rows: set[int] = set()
    for k, (part, target) in enumerate(zip(parts, targets)):
        cap = (part.d - 2) // 2 if k < len(parts) - 1 else None
        rank, used_p, _ = _write_svd_start(part, target, amplitude, seeds, taken_r=prev_rows,
                                           max_rank=cap)
        ranks.append(rank)
        prev_rows = used_p
    return ranks


def warm_start_applicable(model: RiemEmbedding) -> bool:
    """The warm start needs >= 3 metric rows, d >= 2, and an activation with curvature and an
    inflection (sigmoid, tanh, softplus, gelu; not identity or relu)."""
    if model.d_mu < 3 or model.d < 2:
        return False
    _, curv = _curvature_point(model.act)
    _, slope = _inflection_point(model.act)
    return abs(curv) >= 1e-6 and abs(slope) >= 1e-6


def _write_svd_start(model: RiemEmbedding, targets: torch.Tensor, amplitude: float,
                     seeds: Sequence[int] | None, taken_r: set[int] | None = None,
                     max_rank: int | None = None) -> tuple[int, set[int], set[int]]:
    """Write one element set's warm start into the feature columns it may use; P and R columns
    outside the returned (used P columns, used R columns) are left as they are."""
    z0, curv = _curvature_point(model.act)
    z1, slope = _inflection_point(model.act)
    taken_r = set(taken_r or ())
    t = standardise(targets.to(model.P))[0]
    # one slot, in the linear regime, cancels the additive a^2/2 + b^2/2 leftovers of the pairs
    fix_a = model.d_mu - 1
    fix_p = next((k for k in range(model.d) if _shifted_col(model, 0, k) is not None
                  and _shifted_col(model, 0, k) not in taken_r), None)
    if fix_p is None:
        return 0, set(), set()
    fix_r = _shifted_col(model, 0, fix_p)
    assert fix_r is not None
    half = (model.d_mu - 1) // 2
    rank = min(len(model.shifts) * half, model.d - 1, model.m, model.n)
    if max_rank is not None:
        rank = min(rank, max_rank)
    slots = _factor_slots(model, rank, half, ({fix_p}, {fix_r} | taken_r))
    rank = len(slots)
    u, s, vh = _svd_of_distinct(t)
    left = u[:, :, :rank] * s[:, None, :rank].sqrt()  # (B, m, r)
    right = vh[:, :rank].transpose(1, 2) * s[:, None, :rank].sqrt()  # (B, n, r)
    if seeds is not None and rank > 1:
        q = torch.stack([torch.linalg.qr(torch.randn(rank, rank, dtype=torch.float64,
                                                     generator=torch.Generator().manual_seed(int(sd))))[0]
                         for sd in seeds]).to(left)
        left, right = left @ q, right @ q
    # scale so that |e (a + b)| stays within `amplitude`, where the quadratic expansion holds
    peak = (left.abs().amax(1) + right.abs().amax(1)).amax(1).clamp_min(1e-12)  # (B,)
    eps = amplitude / peak  # (B,)
    w_pair = 1.0 / (2 * curv * eps**2)  # (B,)
    model.U.zero_()
    model.bias.fill_(z0)
    model.w.zero_()
    sign = -1.0 if model.combine == "difference" else 1.0  # difference negates the R part
    for k, (s_idx, a, p_col, r_col) in enumerate(slots):
        model.P[:, :, p_col] = eps[:, None] * left[:, :, k]
        model.R[:, :, r_col] = sign * eps[:, None] * right[:, :, k]
        model.U[:, s_idx, a, p_col] = 1.0
        model.U[:, s_idx, a + half, p_col] = -1.0
    model.w[:, : 2 * half] = w_pair[:, None]
    # each pair also adds (a^2 + b^2) / 2 per factor: a row term and a column term, removed by
    # one linear-regime slot with pre-activation z1 - eta (row_i + col_j) and weight 1/(slope eta)
    row_extra = 0.5 * left.square().sum(2)  # (B, m)
    col_extra = 0.5 * right.square().sum(2)  # (B, n)
    eta = amplitude / (row_extra.amax(1) + col_extra.amax(1)).clamp_min(1e-12)  # (B,)
    model.P[:, :, fix_p] = -eta[:, None] * row_extra
    model.R[:, :, fix_r] = -sign * eta[:, None] * col_extra
    model.U[:, 0, fix_a, fix_p] = 1.0
    model.bias[:, 0, fix_a] = z1
    model.w[:, fix_a] = 1.0 / (slope * eta)
    # the fix slot's metric row in other shifts reads nothing: make it a constant term
    model.c.zero_()
    model.c.sub_(model.reconstruct().mean((1, 2)))
    used_p = {fix_p} | {p for _, _, p, _ in slots}
    used_r = {fix_r} | {r for _, _, _, r in slots}
    return rank, used_p, used_r


def _svd_of_distinct(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of each (m, n) element of ``t``, computed once per run of equal elements.

    A stacked unit holds each layer once per seed, consecutively (layers x seeds), and the
    seeds only rotate the factors afterwards: one SVD per layer instead of per (layer, seed)
    (19.6 s -> 2.0 s on resnet18 x 10 seeds, docs/benchmarks.md), with the same result."""
    first = [0]
    owner = [0]
    for b in range(1, t.shape[0]):
        if not torch.equal(t[b], t[first[-1]]):
            first.append(b)
        owner.append(len(first) - 1)
    u, s, vh = torch.linalg.svd(t[first], full_matrices=False)
    if len(first) == t.shape[0]:
        return u, s, vh
    idx = torch.tensor(owner, device=t.device)
    return u[idx], s[idx], vh[idx]


def _inflection_point(act: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """(z1, act'(z1)) where act is most linear with a non-zero slope (|act''| smallest among
    the steep points)."""
    z, g, h = _derivatives(act)
    steep = g.abs() >= 0.5 * g.abs().max()
    score = torch.where(steep, h.abs(), torch.full_like(h, math.inf))
    i = int(score.argmin())
    return float(z[i]), float(g[i])
