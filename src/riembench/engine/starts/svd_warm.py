"""RieM's SVD warm start: an embedding whose step-0 reconstruction is a truncated SVD of W.

Data-free (it reads only the target weights). See :func:`init_riem_from_svd` for the
construction; docs/riem.md for its measured effect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from riembench.engine.embeddings import RiemEmbedding
from riembench.engine.linalg import standardise, svd_of_distinct


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
    u, s, vh = svd_of_distinct(t)
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



def _inflection_point(act: Callable[[torch.Tensor], torch.Tensor]) -> tuple[float, float]:
    """(z1, act'(z1)) where act is most linear with a non-zero slope (|act''| smallest among
    the steep points)."""
    z, g, h = _derivatives(act)
    steep = g.abs() >= 0.5 * g.abs().max()
    score = torch.where(steep, h.abs(), torch.full_like(h, math.inf))
    i = int(score.argmin())
    return float(z[i]), float(g[i])

