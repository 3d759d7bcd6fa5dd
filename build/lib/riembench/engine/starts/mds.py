"""Lp-norm's data-free starts from the geometry of W: classical MDS unfolding and a far-field
truncated SVD.

The fit loop standardises every target per element, so each start builds its field for the
standardised target (W - mean) / std; both read only the target weights and work on the whole
batch at once, and ``seeds`` make the protocol's seeds start from different parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from riembench.engine.embeddings import LpNormEmbedding
from riembench.engine.linalg import ridge_solve, seeded_orthogonal, standardise, svd_of_distinct


def _sym_sqrt_and_pinv_sqrt(g: torch.Tensor, rel_eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(G^1/2, pinv(G)^1/2) of a batch of symmetric matrices, negative eigenvalues clipped.

    Why clipping: G is a Gram matrix only when the dissimilarities really are Euclidean; for a
    matrix that merely resembles a distance field the least-squares G can be indefinite, and the
    closest PSD matrix is the sensible start. Eigenvalues below ``rel_eps`` of the largest are
    treated as zero (pseudo-inverse), so unidentified directions do not blow up the offset.
    """
    g = 0.5 * (g + g.transpose(-1, -2))
    evals, evecs = torch.linalg.eigh(g)
    top = evals.amax(-1, keepdim=True).clamp_min(1e-30)
    keep = evals > rel_eps * top
    ev = torch.where(keep, evals, torch.zeros_like(evals))
    inv = torch.where(keep, 1.0 / ev.clamp_min(1e-300), torch.zeros_like(evals))
    sqrt = (evecs * ev.sqrt()[..., None, :]) @ evecs.transpose(-1, -2)
    pinv_sqrt = (evecs * inv.sqrt()[..., None, :]) @ evecs.transpose(-1, -2)
    return sqrt, pinv_sqrt


def _quad_features(x: torch.Tensor) -> torch.Tensor:
    """Features of x_i G x_i^T for symmetric G: x_a x_b for a <= b (off-diagonals twice)."""
    k = x.shape[-1]
    iu = torch.triu_indices(k, k, device=x.device)
    twice = torch.where(iu[0] == iu[1], 1.0, 2.0).to(x)
    return x[..., iu[0]] * x[..., iu[1]] * twice


def _unquad(theta: torch.Tensor, k: int) -> torch.Tensor:
    """The symmetric (B, k, k) matrix whose upper triangle is ``theta`` (B, k(k+1)/2)."""
    iu = torch.triu_indices(k, k, device=theta.device)
    g = theta.new_zeros(theta.shape[0], k, k)
    g[:, iu[0], iu[1]] = theta
    g[:, iu[1], iu[0]] = theta
    return g


def _ridge_lstsq(a: torch.Tensor, y: torch.Tensor, ridge: float = 1e-9) -> torch.Tensor:
    """Batched least squares a @ x ~ y (a: (B, N, F), y: (B, N)) with a tiny relative ridge, so
    rank-deficient designs (fewer neurons than unknowns, or null components) stay solvable."""
    return ridge_solve(a.transpose(1, 2) @ a, (a.transpose(1, 2) @ y[..., None])[..., 0], ridge)


def _to_unit_box(p: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate (per coordinate, the same for rows and columns) and scale (one scalar per
    element) the positions into [0, 1], like the random init.

    Why: a common translation leaves every difference P[x] - R[y], hence every Lp distance,
    unchanged, and a common scale multiplies all distances by one number that the read-out lam
    absorbs; so the field is unchanged while Adam (whose steps are ~lr in parameter units) sees
    positions of the same scale as in the random init that lr=1e-2 was tuned for.
    p, r: (B, H, m, dh), (B, H, n, dh).
    """
    both = torch.cat([p, r], 2)
    lo = both.amin(2, keepdim=True)
    span = (both.amax(2) - both.amin(2)).flatten(1).amax(1).clamp_min(1e-12)  # (B,)
    scale = span[:, None, None, None]
    return (p - lo) / scale, (r - lo) / scale


# --------------------------------------------------------------------------------------------
# Lp-norm: classical MDS unfolding


def _centred_factors(dsq: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Balanced rank-k factors L, M of -1/2 J_m dsq J_n (zero-padded past its rank)."""
    b, m, n = dsq.shape
    cen = dsq - dsq.mean(1, keepdim=True) - dsq.mean(2, keepdim=True) + dsq.mean((1, 2), keepdim=True)
    u, s, vh = svd_of_distinct(-0.5 * cen)  # stacked units repeat each layer per seed
    k_eff = min(k, s.shape[-1])
    root = s[:, :k_eff].sqrt()
    left = u[:, :, :k_eff] * root[:, None]
    right = vh[:, :k_eff].transpose(1, 2) * root[:, None]
    if k_eff < k:  # fewer components than dimensions: the rest start at zero
        left = torch.cat([left, left.new_zeros(b, m, k - k_eff)], -1)
        right = torch.cat([right, right.new_zeros(b, n, k - k_eff)], -1)
    return left, right


def _unfold(dsq: torch.Tensor, factors: tuple[torch.Tensor, torch.Tensor],
            side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column positions (B, m, k), (B, n, k) whose squared distances fit ``dsq``.

    Classical MDS for a bipartite ("unfolding") distance matrix. If
    dsq[x, y] = |p_x|^2 + |r_y|^2 - 2 p_x . r_y, double centring removes the row and column
    terms: -1/2 J_m dsq J_n = P_c R_c^T (centred positions), so a rank-k SVD L M^T gives the
    positions only up to an invertible map T: P_c = L T, R_c = M T^-T, plus the offset mu
    between the two clouds. Unlike one-set MDS, T is not orthogonal and must be recovered: with
    G = T T^T (T = G^1/2) and v = T mu^T, the row means of dsq are L_x G L_x^T + 2 L_x . v +
    const, linear in (G, v), so least squares on the m row means gives them (``side="rows"``);
    the column means give G^-1 and -G^-1 v the same way (``side="cols"``); ``"identity"`` skips
    it (T = I, mu = 0: the balanced SVD factors). Which side identifies G better depends on the
    shape and the noise, so the caller tries all and keeps the best.
    """
    left, right = factors  # from _centred_factors(dsq, k)
    b, m, n = dsq.shape
    k = left.shape[-1]
    if side == "identity":
        return left, right
    q = k * (k + 1) // 2
    if side == "rows":
        a = torch.cat([_quad_features(left), 2 * left, left.new_ones(b, m, 1)], -1)
        theta = _ridge_lstsq(a, dsq.mean(2))
        g_half, g_pinv_half = _sym_sqrt_and_pinv_sqrt(_unquad(theta[:, :q], k))
        v = theta[:, q:q + k]
    elif side == "cols":
        a = torch.cat([_quad_features(right), 2 * right, right.new_ones(b, n, 1)], -1)
        theta = _ridge_lstsq(a, dsq.mean(1))
        # the columns give H = G^-1 and w = -H v: G^1/2 = pinv(H)^1/2, v = -G w
        h_half, h_pinv_half = _sym_sqrt_and_pinv_sqrt(_unquad(theta[:, :q], k))
        g_half, g_pinv_half = h_pinv_half, h_half
        v = -(g_half @ g_half @ theta[:, q:q + k, None])[..., 0]
    else:
        raise ValueError(f"side must be rows, cols or identity, got '{side}'")
    mu = (g_pinv_half @ v[..., None])[..., 0]  # (B, k)
    return left @ g_half + mu[:, None, :], right @ g_pinv_half


def _gauge_sides(m: int, n: int, k: int) -> tuple[str, ...]:
    """The gauge recoveries of :func:`_unfold` that are determined: the rows side solves for
    k (k + 1) / 2 + k + 1 unknowns from m row means (the columns side from n), so it is tried
    only with more equations than unknowns. Why a rule: past that the system is
    underdetermined, and its normal equations grow as k^4 (a 1000 x 1000 target at d = 148
    would need about 10 GB per seed)."""
    unknowns = k * (k + 1) // 2 + k + 1
    return tuple(side for side, eqs in (("rows", m), ("cols", n)) if unknowns < eqs) + ("identity",)


def _split_heads(x: torch.Tensor, heads: int, mode: str) -> torch.Tensor:
    """(B, N, d) positions -> (B, H, N, d/H): component j goes to head j // dh ("block": head 0
    gets the strongest components) or to head j % H ("interleave": every head gets a mix)."""
    b, n, d = x.shape
    dh = d // heads
    if mode == "block":
        return x.view(b, n, heads, dh).permute(0, 2, 1, 3)
    return x.view(b, n, dh, heads).permute(0, 3, 1, 2)


@torch.no_grad()
def init_lpnorm_mds(model: LpNormEmbedding, targets: torch.Tensor, seeds: Sequence[int] | None = None,
                    offsets: Sequence[float] = (0.0, 0.5, 2.0), jitter: float = 0.0) -> dict:
    """Start a (single, non-chained) Lp-norm field at the MDS embedding of its target.

    Why MDS: the field is W = sum_h lam_h ||P_h[x] - R_h[y]||_p + c, so W is an affine image
    of a row-to-column distance matrix, and classical MDS is the closed-form way to turn
    distances into positions. The affine map is unknown: the distances are D = s (+/-W_std) + a
    for an unknown sign (lam may be negative), scale s (absorbed by lam, irrelevant) and offset
    a (not removable: squaring mixes it in). We therefore build D = sign * W_std - min + delta
    for both signs and a few offsets delta (in units of W's std), unfold each (see ``_unfold``,
    three ways of recovering the bipartite gauge), split the d components over the heads
    (block or interleaved), read out lam and c by least squares, and keep per element the
    candidate with the lowest error on the standardised target: every candidate is judged by
    exactly the quantity ``fit`` then minimises, so the choice costs nothing but a few SVDs.

    MDS is exact for p = 2 and one head; for p != 2 or several heads it is a heuristic start
    (sum of per-subspace norms instead of one norm), which the fit then corrects.

    Seeds: each head's positions (rows and columns alike) are rotated by a seed-drawn orthogonal
    matrix. For p = 2 that leaves every distance, hence the error, unchanged while the
    parameters (and Adam's coordinate-wise trajectory) differ; for p != 2 it also diversifies
    the start. ``jitter`` (in units of the unit box the positions are scaled into) adds
    seed-drawn noise on top. Returns a record of what was chosen.
    """
    t_std = standardise(targets.detach().double())[0].to(model.P.device)
    b, heads = model.batch, model.heads
    d, dh = model.d, model.d // model.heads
    if model.m < 2 or model.n < 2 or float(t_std.abs().amax()) == 0.0:
        # nothing to unfold (constant or 1-wide target): keep the random positions, fit lam, c
        err = model.refit_readout(t_std.to(model.P))
        return {"init": "mds", "init_note": "degenerate target: random positions kept",
                "init_rel_mse": err.tolist()}
    best_err = torch.full((b,), math.inf, dtype=torch.float64, device=t_std.device)
    best_p, best_r = model.P.detach().clone(), model.R.detach().clone()
    best_lam, best_c = model.lam.detach().clone(), model.c.detach().clone()
    chosen: list[tuple] = [()] * b
    for sign in (1.0, -1.0):
        base = sign * t_std
        base = base - base.amin((1, 2), keepdim=True)
        for delta in offsets:
            dsq = (base + float(delta)).square()
            factors = _centred_factors(dsq, d)  # one SVD per (sign, offset), shared by the gauges
            for side in _gauge_sides(model.m, model.n, d):
                left, right = _unfold(dsq, factors, side)
                for split in ("block", "interleave") if heads > 1 else ("block",):
                    p, r = _to_unit_box(_split_heads(left, heads, split), _split_heads(right, heads, split))
                    if not (torch.isfinite(p).all() and torch.isfinite(r).all()):
                        continue
                    model.P.copy_(p.to(model.P))
                    model.R.copy_(r.to(model.R))
                    err = model.refit_readout(t_std.to(model.P))
                    better = torch.isfinite(err) & (err < best_err)
                    if better.any():
                        best_err = torch.where(better, err, best_err)
                        best_p[better], best_r[better] = model.P[better], model.R[better]
                        best_lam[better], best_c[better] = model.lam[better], model.c[better]
                        for i in better.nonzero().flatten().tolist():
                            chosen[i] = (sign, float(delta), side, split)
    p, r = best_p.to(torch.float64), best_r.to(torch.float64)
    if seeds is not None:
        if len(seeds) != b:
            raise ValueError(f"{len(seeds)} seeds for a batch of {b}")
        if dh > 1:
            q = torch.stack([torch.stack([seeded_orthogonal(int(s) * 1009 + h, dh) for h in range(heads)])
                             for s in seeds]).to(p)  # (B, H, dh, dh)
            centre = torch.cat([p, r], 2).mean(2, keepdim=True)
            p, r = (p - centre) @ q + centre, (r - centre) @ q + centre
            p, r = _to_unit_box(p, r)
        if jitter > 0:
            noise = [torch.Generator().manual_seed(int(s) + 7919) for s in seeds]
            p = p + jitter * torch.stack([torch.randn(p.shape[1:], generator=g, dtype=p.dtype)
                                          for g in noise]).to(p)
            r = r + jitter * torch.stack([torch.randn(r.shape[1:], generator=g, dtype=r.dtype)
                                          for g in noise]).to(r)
    model.P.copy_(p.to(model.P))
    model.R.copy_(r.to(model.R))
    model.lam.copy_(best_lam)
    model.c.copy_(best_c)
    err = best_err
    if seeds is not None:  # rotation/jitter changed the distances (p != 2): re-solve lam, c
        err = model.refit_readout(t_std.to(model.P))
    return {"init": "mds", "init_rel_mse": err.tolist(),
            "init_choice": [{"sign": c[0], "offset": c[1], "gauge": c[2], "heads_split": c[3]}
                            if c else None for c in chosen]}


# --------------------------------------------------------------------------------------------
# Lp-norm: far-field truncated SVD (p = 2)


@torch.no_grad()
def init_lpnorm_farfield(model: LpNormEmbedding, targets: torch.Tensor,
                         seeds: Sequence[int] | None = None, distance: float = 20.0) -> dict:
    """Start a p = 2 field at a truncated SVD of its target (rank H (d/H - 1)).

    Why: a general weight matrix is not a distance field, but far from a point the Euclidean
    norm is locally quadratic, and a quadratic has a product term. Put head h's column neurons
    at distance T along one axis e and the row neurons near the origin; with p_perp, r_perp the
    other coordinates,
        ||p - r|| = T + (r_e - p_e) + (|p_perp|^2 + |r_perp|^2 - 2 p_perp . r_perp) / (2T) + O(T^-3).
    Choosing p_e = |p_perp|^2 / 2T and r_e = -|r_perp|^2 / 2T cancels the row and column terms,
    leaving T - p_perp . r_perp / T: with lam = -T the head reads out + p_perp . r_perp, a rank
    (d/H - 1) product, i.e. d/H - 1 SVD factors per head (a Lp-norm analogue of RieM's SVD warm
    start). Positions keep a spread of about 1 (what lr = 1e-2 expects) and T = ``distance``
    makes the neglected terms ~(1/T)^2 of the signal; lam and c are then re-solved by least
    squares. Only for p = 2 (for p = 1 the norm is piecewise linear and has no product term) and
    d/H >= 2; otherwise it falls back to :func:`init_lpnorm_mds`. Seeds rotate the factors by a
    seed-drawn orthogonal matrix (L Q (M Q)^T = L M^T): same product, different parameters.
    """
    dh, heads, b = model.d // model.heads, model.heads, model.batch
    if model.p != 2.0 or dh < 2:
        info = init_lpnorm_mds(model, targets, seeds)
        return {**info, "init_note": "farfield needs p = 2 and d/heads >= 2: used mds"}
    t_std = standardise(targets.detach().double())[0].to(model.P.device)
    u, s, vh = svd_of_distinct(t_std)  # a stacked unit repeats each layer once per seed
    rank = min(heads * (dh - 1), s.shape[-1])
    left = u[:, :, :rank] * s[:, None, :rank].sqrt()
    right = vh[:, :rank].transpose(1, 2) * s[:, None, :rank].sqrt()
    if seeds is not None and rank > 1:
        q = torch.stack([seeded_orthogonal(int(sd), rank) for sd in seeds]).to(left)
        left, right = left @ q, right @ q
    pad = heads * (dh - 1) - rank
    if pad:
        left = torch.cat([left, left.new_zeros(b, model.m, pad)], -1)
        right = torch.cat([right, right.new_zeros(b, model.n, pad)], -1)
    # factor j -> head j % H (interleaved, so every head carries strong and weak factors)
    lp = left.view(b, model.m, dh - 1, heads).permute(0, 3, 1, 2)  # (B, H, m, dh-1)
    rp = right.view(b, model.n, dh - 1, heads).permute(0, 3, 1, 2)
    # a common scale alpha per head so the row/column clouds have spread ~1: lam = -T / alpha^2
    spread = torch.maximum(lp.abs().amax((2, 3)), rp.abs().amax((2, 3))).clamp_min(1e-12)  # (B, H)
    alpha = 1.0 / spread
    lp, rp = lp * alpha[..., None, None], rp * alpha[..., None, None]
    big_t = float(distance)
    p_e = lp.square().sum(-1, keepdim=True) / (2 * big_t)
    r_e = big_t - rp.square().sum(-1, keepdim=True) / (2 * big_t)
    model.P.copy_(torch.cat([lp, p_e], -1).to(model.P))
    model.R.copy_(torch.cat([rp, r_e], -1).to(model.R))
    model.lam.copy_((-big_t / alpha.square()).to(model.lam))
    model.c.zero_()
    err = model.refit_readout(t_std.to(model.P))
    return {"init": "farfield", "init_rank": rank, "init_rel_mse": err.tolist()}
