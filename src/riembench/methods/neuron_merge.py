"""Neuron Merging (Kim et al., NeurIPS 2020): structured pruning that compensates, data-free.

The same L1 filter pruning as ``prune`` (same prunable layers, same channels removed), but
before a channel goes, the next layer is made to read a scaled copy of its most similar kept
channel in its place (:func:`riembench.methods.prune.merge_into_kept`). Table 3 quotes Neuron
Merging as a published baseline; running it here puts a measured number beside the quote.
"""

from __future__ import annotations

from dataclasses import dataclass

from riembench.errors import RiembenchError
from riembench.methods.base import METHODS
from riembench.methods.prune import PruneConfig, PruneMethod


@dataclass
class NeuronMergeConfig(PruneConfig):
    name: str = "neuron_merge"
    #: merge a removed channel only into a kept one at least this cosine-similar (the
    #: similarity of filter + bias with the BatchNorm folded in); below it the channel is
    #: simply removed. 0 merges every removed channel that has a positively similar partner
    threshold: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode != "structured":
            raise RiembenchError("neuron_merge removes channels: mode must be 'structured'")
        if not -1 <= self.threshold <= 1:
            raise RiembenchError(f"neuron_merge threshold is a cosine in [-1, 1], got "
                                 f"{self.threshold}")


@METHODS.register("neuron_merge", NeuronMergeConfig)
class NeuronMergeMethod(PruneMethod):
    """Pruning with merging; deterministic."""

    cfg: NeuronMergeConfig

    def merge_threshold(self) -> float | None:
        return self.cfg.threshold
