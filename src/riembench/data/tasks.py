"""What a network cell reads from its dataset: the interface image classification and COCO
detection implement, declared here so the harness never has to probe a task."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

#: the splits a network task has; compression and selection see train and dev, the test split is
#: read only for the test metrics of a finished seed
SPLITS = ("train", "dev", "test")


class NetworkTask(ABC):
    """Three disjoint parts (train, dev, test), the input shape, and how models are scored."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    #: how dev was made, for the tables' notes
    dev_note: str
    #: the metric that ranks seeds and dev_guided checkpoints (higher is better)
    primary_metric: ClassVar[str] = "acc"
    #: True for a task that scores models itself (COCO's AP suite); else the harness scores
    #: top-1 / top-5 and the agreement with the original's logits
    scores_itself: ClassVar[bool] = False

    @abstractmethod
    def split(self, name: str) -> Dataset[Any]:
        """The dataset of one split (``train``, ``dev`` or ``test``)."""

    def evaluate(self, model: nn.Module, split: str, *, device: torch.device | str,
                 batch_size: int, num_workers: int) -> dict[str, float]:
        """The task's own metrics on one split (only where ``scores_itself``)."""
        raise NotImplementedError(f"{type(self).__name__} does not score models itself")

    def input_range(self) -> tuple[float, float] | None:
        """The range of the network's inputs after normalization (data-free quantizers start
        from it); None when unknown."""
        return None
