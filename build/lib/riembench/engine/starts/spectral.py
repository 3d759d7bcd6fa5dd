"""RieM's spectral start: principal coordinates of W's rows and columns as neuron positions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from riembench.engine.embeddings import RiemEmbedding
from riembench.engine.linalg import seeded_orthogonal, standardise, svd_of_distinct


@torch.no_grad()
def init_riem_spectral(model: RiemEmbedding, targets: torch.Tensor, seeds: Sequence[int] | None = None) -> dict:
    """Put the principal coordinates of W's rows and columns into RieM's positions.

    Why: classical MDS of the rows of W (Euclidean distances between rows) is PCA of the rows,
    i.e. the left SVD factors U S; the same for the columns gives V S. Neurons that behave alike
    in W then start close together in P (and in R), which is the geometry RieM's metric is meant
    to read, instead of uniform noise. We use the balanced factors U S^1/2 and V S^1/2 (so the
    product of the coordinates is W's truncated SVD) for the first min(d, rank) components, keep
    the random positions for any remaining ones, and map everything into [0, 1) with one affine
    map per element (as the random init, so lr = 1e-2 sees the same scale). The metric (U_s,
    b_s) stays random; the read-out w, c is solved by least squares, so the start is at least as
    good as the best additive read-out of those features. Seeds rotate the factors by a
    seed-drawn orthogonal matrix, so seeds start at different positions.
    """
    t_std = standardise(targets.detach().double())[0].to(model.P.device)
    b, d = model.batch, model.d
    u, s, vh = svd_of_distinct(t_std)  # a stacked unit repeats each layer once per seed
    k = min(d, s.shape[-1])
    left = u[:, :, :k] * s[:, None, :k].sqrt()
    right = vh[:, :k].transpose(1, 2) * s[:, None, :k].sqrt()
    if seeds is not None and k > 1:
        if len(seeds) != b:
            raise ValueError(f"{len(seeds)} seeds for a batch of {b}")
        q = torch.stack([seeded_orthogonal(int(sd), k) for sd in seeds]).to(left)
        left, right = left @ q, right @ q
    peak = torch.maximum(left.abs().amax((1, 2)), right.abs().amax((1, 2))).clamp_min(1e-12)
    scale = 0.5 / peak[:, None, None]  # one scale per element: [-peak, peak] -> [0, 1)
    model.P[..., :k] = (left * scale * 0.999 + 0.5).to(model.P)
    model.R[..., :k] = (right * scale * 0.999 + 0.5).to(model.R)
    err = model.refit_readout(t_std.to(model.P))
    return {"init": "spectral", "init_rank": k, "init_rel_mse": err.tolist()}


@torch.no_grad()
def init_riem_spectral_chain(parts: Sequence[RiemEmbedding], targets: Sequence[torch.Tensor],
                             seeds: Sequence[int] | None = None) -> dict:
    """:func:`init_riem_spectral` for a chain of layers that share neurons (part k's ``R`` is
    part k-1's ``P``, one tensor).

    Why: a shared neuron is a row of layer k-1 and a column of layer k, so its principal
    coordinates come from its whole profile, incoming weights and outgoing weights side by side
    ([W_{k-1}, W_k^T] per neuron); the chain's first inputs and last outputs have one side
    only. Each neuron set is placed separately (its own rotation per seed and its own scale
    into [0, 1)): RieM adds row and column positions inside a random metric, so no alignment
    between the two sides' frames is needed at the start. Then every layer's read-out is solved
    by least squares, as for one layer.
    """
    t_std = [standardise(t.detach().double())[0].to(p.P.device) for p, t in zip(parts, targets, strict=True)]
    # neuron sets: the first layer's columns, each shared set, the last layer's rows
    sets = [(parts[0].R, t_std[0].transpose(1, 2))]
    sets += [(parts[k - 1].P, torch.cat([t_std[k - 1], t_std[k].transpose(1, 2)], 2))
             for k in range(1, len(parts))]
    sets.append((parts[-1].P, t_std[-1]))
    ranks = []
    for tensor, profile in sets:
        u, s, _ = svd_of_distinct(profile)
        k = min(tensor.shape[-1], s.shape[-1])
        coords = u[:, :, :k] * s[:, None, :k].sqrt()
        if seeds is not None and k > 1:
            coords = coords @ torch.stack([seeded_orthogonal(int(sd), k) for sd in seeds]).to(coords)
        peak = coords.abs().amax((1, 2)).clamp_min(1e-12)
        tensor[..., :k] = (coords * (0.5 * 0.999 / peak[:, None, None]) + 0.5).to(tensor)
        ranks.append(k)
    errs = []
    for part, t in zip(parts, t_std, strict=True):
        errs.append(part.refit_readout(t.to(part.P)).tolist())
    return {"init": "spectral", "init_rank": ranks, "init_rel_mse": errs}
