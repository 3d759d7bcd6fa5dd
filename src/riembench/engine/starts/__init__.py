"""Data-free starts of the neuron embeddings, behind one registry keyed by the methods' ``init``.

Every start reads only the target weights (no data), builds its embedding for the standardised
target the fit loop optimises, works on the whole batch (seeds x equal-shape layers) at once and
returns a record of what it did. A start names the embedding class it is for and whether it
knows chains of layers that share neurons; a chain given to a start without a chain form keeps
the random init, and the record says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from riembench.core.registry import Registry
from riembench.engine.embeddings import BatchedEmbedding, LpNormEmbedding, RiemEmbedding
from riembench.engine.starts.mds import init_lpnorm_farfield, init_lpnorm_mds
from riembench.engine.starts.spectral import init_riem_spectral, init_riem_spectral_chain
from riembench.engine.starts.svd_warm import init_riem_chain, init_riem_from_svd

Single = Callable[[Any, torch.Tensor, Sequence[int]], dict[str, Any]]
Chain = Callable[[Sequence[Any], Sequence[torch.Tensor], Sequence[int]], dict[str, Any]]


@dataclass(frozen=True)
class Start:
    """One data-free start: ``single`` for one part (a layer stack), ``chain`` for parts that
    share neurons (None: chains keep the random init)."""

    name: str
    embedding: type[BatchedEmbedding]
    single: Single
    chain: Chain | None = None


STARTS: Registry[Start] = Registry("init")


def _key(embedding: type[BatchedEmbedding], name: str) -> str:
    return f"{embedding.__name__}:{name}"


def register(start: Start) -> Start:
    return STARTS.register(_key(start.embedding, start.name))(start)


def names_for(embedding: type[BatchedEmbedding]) -> list[str]:
    """The ``init`` values a method of this embedding accepts ("random" always)."""
    prefix = f"{embedding.__name__}:"
    return ["random"] + [k[len(prefix):] for k in STARTS.names() if k.startswith(prefix)]


def apply_start(name: str, parts: Sequence[BatchedEmbedding], targets: Sequence[torch.Tensor],
                seeds: Sequence[int]) -> dict[str, Any]:
    """Run the start ``name`` on ``parts`` (one part, or a chain) in place; its record."""
    if name == "random":
        return {"init": "random"}
    start = STARTS.get(_key(type(parts[0]), name))
    if len(parts) == 1:
        return start.single(parts[0], targets[0], seeds)
    if start.chain is None:
        return {"init": "random", "init_note": f"init {name} is for single layers: a chain of "
                                                "shared neurons keeps the random init"}
    return start.chain(parts, targets, seeds)


def _svd_single(model: RiemEmbedding, target: torch.Tensor, seeds: Sequence[int]) -> dict[str, Any]:
    return _svd_info([init_riem_from_svd(model, target, seeds=seeds)])


def _svd_chain(parts: Sequence[RiemEmbedding], targets: Sequence[torch.Tensor],
               seeds: Sequence[int]) -> dict[str, Any]:
    return _svd_info(init_riem_chain(parts, targets, seeds=seeds))


def _svd_info(ranks: list[int]) -> dict[str, Any]:
    if not any(ranks):  # e.g. a piecewise-linear activation: the random init was kept
        return {"init": "random", "init_note": "svd warm start not applicable to this setting"}
    return {"init": "svd", "init_rank": ranks[0] if len(ranks) == 1 else ranks}


for _start in (
    Start("spectral", RiemEmbedding, lambda m, t, s: init_riem_spectral(m, t, seeds=s),
          lambda p, t, s: init_riem_spectral_chain(p, t, seeds=s)),
    Start("svd", RiemEmbedding, _svd_single, _svd_chain),
    Start("mds", LpNormEmbedding, lambda m, t, s: init_lpnorm_mds(m, t, seeds=s)),
    Start("farfield", LpNormEmbedding, lambda m, t, s: init_lpnorm_farfield(m, t, seeds=s)),
):
    register(_start)
