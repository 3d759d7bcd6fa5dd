"""The uncompressed model, evaluated through the same runner as every method (the "original"
row of each table), so its accuracy is measured on exactly the same splits and code path."""

from __future__ import annotations

import copy
from dataclasses import dataclass

from riembench.methods.base import METHODS, CompressedNet, MethodConfig, NetworkJob, NetworkMethod


@dataclass
class OriginalConfig(MethodConfig):
    name: str = "original"


@METHODS.register("original", OriginalConfig)
class OriginalMethod(NetworkMethod):
    """Returns a copy of the pretrained model; the seed has no effect (one seed suffices)."""

    deterministic = True
    #: the runner needs no layer selection or size target for this method
    needs_size = False

    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        return [CompressedNet(copy.deepcopy(job.model).eval(), {"note": "uncompressed"})
                for _ in job.seeds]
