"""A byte budget that is the file: ``size=bytes`` with ``overhead: measured``.

What a count of numbers cannot foresee (per-channel scales and zero points, embedding ranges,
the safetensors header and its layout metadata) depends on the method's compressed structure,
and on a small model it is a large share of the file (LeNet-5 at 30 kB: about 6 kB). So the
runner first compresses a cheap probe of the same cell (:meth:`NetworkMethod.layout_probe`:
the same tensors and bit-widths, e.g. a one-step fit), packs it to a scratch file, and takes
what the file holds beyond its numbers (at their bits, :func:`riembench.cost.stored_tensors`)
off the real run's budget. The rounding of dimensions
keeps the real file at or a little under ``size.bytes``; the record's ``stored_bytes`` is
measured in any case.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from riembench.artifact import ArtifactError, save_artifact
from riembench.cost import stored_tensors
from riembench.methods.base import NetworkJob, NetworkMethod, SizeTarget
from riembench.size import network_target

log = logging.getLogger("riembench")


def measured_bytes_target(size_cfg: Any, method: NetworkMethod, job: NetworkJob,
                          meta: dict[str, Any]) -> SizeTarget:
    """``job.size`` (the numbers-only target) corrected by the probe's measured overhead; the
    uncorrected target when the probe packs no artifact (the run then records why)."""
    if getattr(size_cfg, "name", None) != "bytes" or size_cfg.overhead != "measured":
        return job.size
    probe_job = replace(job, seeds=list(job.seeds[:1]), dev=None)
    out = method.layout_probe().compress(probe_job)[0]
    if out.failed is not None or out.model is None:
        log.warning("size probe failed (%s): the byte budget counts the numbers only", out.failed)
        return job.size
    with tempfile.TemporaryDirectory(prefix="riembench-probe-") as scratch:
        try:
            written = save_artifact(out.model, Path(scratch) / "probe.safetensors", out.info,
                                    job.layers, job.model, meta)
        except ArtifactError as exc:
            log.warning("size probe packs no artifact (%s): the byte budget counts the numbers "
                        "only", exc)
            return job.size
    # the container is what the file holds beyond its numbers at their bits (the probe may
    # store fewer numbers than its budget: its dimensions round down)
    numbers_bytes = stored_tensors(out.model, out.info.get("bits_by_param"))[2] / 8
    over = max(0, math.ceil(written - numbers_bytes))
    log.info("size=bytes: the probe's file is %d bytes, %d of them container (scales, ranges, "
             "header), left out of the %d-byte budget", written, over, int(size_cfg.bytes))
    return network_target(size_cfg, job.model, job.layers, overhead_bytes=over)
