"""A byte budget that is the file: ``size=bytes`` with ``overhead: measured``.

What a count of numbers cannot foresee (per-channel scales and zero points, embedding ranges,
the safetensors header and its layout metadata) depends on the method's compressed structure,
and on a small model it is a large share of the file (LeNet-5 at 30 kB: about 6 kB). So the
runner first compresses a cheap probe of the same cell (:meth:`NetworkMethod.layout_probe`:
the same tensors and bit-widths, e.g. a one-step fit), packs it to a scratch file, and takes
what the file holds beyond its numbers (at their bits, :func:`riembench.sizing.cost.stored_tensors`)
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

from riembench.compression.methods.base import NetworkJob, NetworkMethod, SizeTarget
from riembench.sizing.artifact import ArtifactError, save_artifact
from riembench.sizing.budgets import network_target
from riembench.sizing.cost import stored_tensors

log = logging.getLogger("riembench")


#: probes at most: the container changes with the structure the budget buys (a layer that
#: becomes a factor pair gains a row of scales), so the budget is probed again until it holds
MAX_PROBES = 4


def measured_bytes_target(size_cfg: Any, method: NetworkMethod, job: NetworkJob,
                          meta: dict[str, Any]) -> SizeTarget:
    """``job.size`` (the numbers-only target) less the container bytes measured on probes;
    the uncorrected target when a probe packs no artifact (the run then records why).

    Each probe compresses at the current target; when its container exceeds what the target
    leaves for it, the target is lowered to that and probed again (at most ``MAX_PROBES``)."""
    if getattr(size_cfg, "name", None) != "bytes" or size_cfg.overhead != "measured":
        return job.size
    target, over = job.size, 0
    for _ in range(MAX_PROBES):
        found = _probe_container(method, replace(job, size=target), meta)
        if found is None:
            return target
        if found <= over:
            break
        over = found
        target = network_target(size_cfg, job.model, job.layers, overhead_bytes=over)
    log.info("size=bytes: %d bytes of container (scales, ranges, header) measured on a probe, "
             "left out of the %d-byte budget", over, int(size_cfg.bytes))
    return target


def _probe_container(method: NetworkMethod, job: NetworkJob, meta: dict[str, Any]) -> int | None:
    """Bytes a probe's artifact holds beyond its numbers at their bits (None: no artifact)."""
    probe_job = replace(job, seeds=list(job.seeds[:1]), dev=None)
    out = method.layout_probe().compress(probe_job)[0]
    if out.failed is not None or out.model is None:
        log.warning("size probe failed (%s): the byte budget counts the numbers only", out.failed)
        return None
    with tempfile.TemporaryDirectory(prefix="riembench-probe-") as scratch:
        try:
            written = save_artifact(out.model, Path(scratch) / "probe.safetensors", out.info,
                                    job.layers, job.model, meta)
        except ArtifactError as exc:
            log.warning("size probe packs no artifact (%s): the byte budget counts the numbers "
                        "only", exc)
            return None
    numbers_bytes = stored_tensors(out.model, out.info.get("bits_by_param"))[2] / 8
    return max(0, math.ceil(written - numbers_bytes))
