"""Small batched linear algebra shared by the embeddings, the fit loop and the data-free starts."""

from __future__ import annotations

import torch


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



def svd_of_distinct(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def seeded_orthogonal(seed: int, k: int) -> torch.Tensor:
    """A seed-drawn orthogonal k x k matrix (QR of a Gaussian, signs fixed so it is Haar)."""
    g = torch.Generator().manual_seed(int(seed))
    q, r = torch.linalg.qr(torch.randn(k, k, dtype=torch.float64, generator=g))
    return q * torch.where(torch.diagonal(r) >= 0, 1.0, -1.0).to(q)


def batched_matvec(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(B, M, k) @ (B, k) -> (B, M)``, rounded the same for an element whatever B is.

    Why: for B = 1 torch dispatches to a matrix-vector kernel that rounds differently from the
    batched product (about 1e-7 relative on CPU), and a fit's dynamics amplify that, so a seed
    refitted alone after an interrupted sweep would end elsewhere than in its batch. A lone
    element is therefore computed as a pair (twice the work, only then)."""
    if a.shape[0] == 1:
        return torch.bmm(torch.cat([a, a]), torch.cat([v, v])[:, :, None])[:1, :, 0]
    return torch.bmm(a, v[:, :, None])[:, :, 0]
