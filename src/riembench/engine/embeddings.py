"""Neuron embeddings: the models ``riem`` and ``lpnorm`` fit to a weight matrix, and their counts.

Both express a weight matrix W (m x n) through neuron positions and a metric. Every class here
holds B independent embeddings of one shape (the batch axis: (matrix, seed) pairs), so ten seeds
of one layer, or ten equal-shape layers, are one set of tensor ops, and batch elements never
interact (every parameter has the batch axis first). Each class knows its closed-form parameter
count (the one sizing rule, used by the methods), its reconstruction by row chunks, its linear
read-out (solved exactly by :meth:`BatchedEmbedding.refit_readout`) and, for RieM, a hand-written
gradient of its inner loop.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

import torch
from torch import nn

from riembench.engine.linalg import batched_matvec, ridge_solve

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

    #: positions of the row neurons and of the column neurons, batch axis first (each subclass
    #: sets both; the rest of their shape is its own)
    P: nn.Parameter
    R: nn.Parameter

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
    def refit_readout(self, targets: torch.Tensor, chunk_elems: int = 2**24,
                      blocks: Sequence[torch.Tensor | slice] | None = None) -> torch.Tensor:
        """Least-squares read-out for the current features, per element, against ``targets``
        (B, m, n).

        Why: after the positions and the metric are rounded (8-bit "8/16" rows), the fitted
        read-out no longer matches its features, and RieM's warm-started read-out weights are
        large and of both signs (they build products from differences of sigmoids), so small
        feature errors are amplified; re-solving the few read-out numbers removes that (measured
        in docs/riem.md). Normal equations in float64, accumulated over row chunks. Returns the
        per-element mean squared error of the new read-out against ``targets`` (float64, from
        the same normal equations: no reconstruction needed to score a start). ``blocks``: row
        chunks to solve on (a random subset of rows gives an unbiased read-out cheaply: it has
        only d_mu + 1 or H + 1 unknowns); default every row.
        """
        w_name, c_name = self.READOUT
        k = getattr(self, w_name).shape[-1]
        offset = bool(getattr(self, "has_offset", True))
        cols = k + int(offset)
        ata = targets.new_zeros(self.batch, cols, cols, dtype=torch.float64)
        aty = targets.new_zeros(self.batch, cols, dtype=torch.float64)
        yty = targets.new_zeros(self.batch, dtype=torch.float64)
        if blocks is None:
            step = self.rows_per_chunk(chunk_elems)
            blocks = [slice(i, min(i + step, self.m)) for i in range(0, self.m, step)]
        halves = self.halves()
        used = 0
        for rows in blocks:
            a = self.features(rows, halves).double().reshape(self.batch, -1, k)
            y = targets[:, rows].double().reshape(self.batch, -1)
            used += y.shape[1]
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
        return sse.clamp_min(0.0) / used

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

    #: R's feature index for every shift (a non-persistent buffer, see :meth:`_shift_index`)
    _gather: torch.Tensor

    def __init__(self, seeds: Sequence[int], m: int, n: int, d: int, d_mu: int,
                 shifts: Sequence[int], activation: str = "sigmoid", wrap: bool = True,
                 combine: str = "sum") -> None:
        super().__init__(len(seeds), m, n)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation '{activation}'; known: {', '.join(ACTIVATIONS)}")
        if combine not in ("sum", "difference"):
            raise ValueError(f"combine must be 'sum' or 'difference', got '{combine}'")
        self.d, self.d_mu, self.shifts = d, d_mu, [int(s) % max(d, 1) for s in shifts]
        # plain strings (a config may hand enumeration members): they go into checkpoints
        self.activation, self.wrap, self.combine = str(activation), wrap, str(combine)
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
        r: torch.Tensor = self.R
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
        act = self._activate(z)
        b, r, n, k = act.shape
        return batched_matvec(act.reshape(b, r * n, k), wk).view(b, r, n) + self.c[:, None, None]

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
        pred = batched_matvec(flat, wk).view(b, r, self.n).add_(self.c.detach()[:, None, None])
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



def default_shifts(d: int, n_shifts: int) -> list[int]:
    """The authors' shift set: c_s = s * d // |S| for s = 0..|S|-1 (spread over the feature axis)."""
    return [s * d // n_shifts for s in range(n_shifts)]


