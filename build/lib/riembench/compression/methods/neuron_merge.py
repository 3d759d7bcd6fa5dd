"""Neuron Merging (Kim et al., NeurIPS 2020): structured pruning that compensates, data-free.

The same L1 filter pruning as ``prune`` (same prunable layers, same channels removed), but
before a channel goes, the next layer is made to read a scaled copy of its most similar kept
channel in its place (:func:`riembench.compression.methods.prune.merge_into_kept`). Table 3 quotes Neuron
Merging as a published baseline; running it here puts a measured number beside the quote.
"""

from __future__ import annotations

from riembench.compression.methods.prune import PruneMethod
from riembench.config.methods import NeuronMergeConfig


class NeuronMergeMethod(PruneMethod):
    """Pruning with merging; deterministic."""

    cfg: NeuronMergeConfig

    def merge_threshold(self) -> float | None:
        return self.cfg.threshold
