"""The uncompressed model, evaluated through the same runner as every method (the "original"
row of each table), so its accuracy is measured on exactly the same splits and code path."""

from __future__ import annotations

import copy

from riembench.compression.methods.base import CompressedNet, NetworkJob, NetworkMethod


class OriginalMethod(NetworkMethod):
    """Returns a copy of the pretrained model; the seed has no effect (one seed suffices)."""

    #: the runner needs no layer selection or size target for this method

    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        return [CompressedNet(copy.deepcopy(job.model).eval(), {"note": "uncompressed"})
                for _ in job.seeds]
