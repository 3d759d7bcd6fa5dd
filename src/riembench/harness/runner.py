"""Runs one table cell (method x dataset x size [x backbone] under a protocol) for one or more
seeds and records each seed. The runner only sequences: resolve the cell, claim its missing
seeds, build the task and the method, compress, measure, evaluate, record.

The rules that keep a sweep honest and resumable:

* every group is validated against its registered schema before anything is built;
* seeds already in the store are skipped, so rerunning a killed sweep only does what is missing;
* a seed that fails for a reason the config determines (impossible size, divergence) becomes a
  ``failed`` record with the reason, so it shows in the table's seed counts; anything else
  (a bug, out of memory) raises and records nothing, so a fixed rerun will do it;
* each record is written the moment its seed is evaluated.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from riembench.backbones import eval_preprocessing, load_backbone
from riembench.compression.methods.base import (
    CompressedNet,
    MatrixApprox,
    MatrixMethod,
    NetworkJob,
    NetworkMethod,
    SizeTarget,
)
from riembench.compression.network import select_layers
from riembench.config.datasets import DATASETS
from riembench.config.methods import METHODS
from riembench.config.protocols import PROTOCOLS
from riembench.core.errors import ImpossibleBudget
from riembench.data.synthetic import MatrixTask
from riembench.data.tasks import NetworkTask
from riembench.harness.cell import check_cell, resolve_cell
from riembench.harness.device import device_name, resolve_device
from riembench.harness.evaluate import Evaluator, matvec_error, relative_fidelity
from riembench.harness.recorder import CellOutcome, Recorder, claim_pending, dry_run, open_store
from riembench.harness.tracking import cell_tracker
from riembench.sizing.artifact import SUFFIX as ARTIFACT_SUFFIX
from riembench.sizing.budgets import matrix_budget, network_target
from riembench.sizing.byte_budget import measured_bytes_target
from riembench.sizing.measure import compressed_cost, original_counts
from riembench.store.records import Claim, RunRecord

log = logging.getLogger("riembench")

__all__ = ["CellOutcome", "run"]


def run(cfg: DictConfig) -> CellOutcome:
    """Validate, then run every seed of the cell that the store does not have yet and no other
    sweep has claimed; the claims this run takes are released however it ends."""
    claims: dict[int, Claim] = {}
    try:
        return _run(cfg, claims)
    finally:
        for claim in claims.values():
            claim.release()


def _run(cfg: DictConfig, claims: dict[int, Claim]) -> CellOutcome:
    cell = resolve_cell(cfg)
    check_cell(cell)
    table, keys, seeds = cell.table, cell.keys, cell.seeds
    if cell.deterministic and len(cell.requested) > 1:
        log.info("%s: %s is deterministic, running seed %d of %s", table, cell.method.name,
                 seeds[0], cell.requested)
    store = open_store(cell)
    if cell.dry_run:
        return dry_run(cell, store)
    pending = claim_pending(store, cell, claims)
    skipped = [s for s in seeds if s not in pending]
    existing = [str(store.path(table, keys[s])) for s in skipped]
    outcome = CellOutcome(table, [], skipped, [], existing=existing)
    if not pending:
        return outcome
    if cell.threads:
        torch.set_num_threads(int(cell.threads))
    device = resolve_device(cell.device)
    method = METHODS.get(cell.method.name)(cell.method)
    # a dataset that takes it (ImageNet) evaluates with the backbone library's preprocessing
    extra = ({"preprocessing": eval_preprocessing(cell.backbone)}
             if cell.dataset.takes_preprocessing else {})
    task = DATASETS.get(cell.dataset.name)(cell.dataset, Path(str(cfg.data.root)).expanduser(),
                                           **extra)
    summary = cell.summary()
    with cell_tracker(cfg.wandb, table, summary, cell.container) as tracker:
        recorder = Recorder(cell, store, device_name(device), outcome, tracker)
        if isinstance(task, MatrixTask):
            assert isinstance(method, MatrixMethod)
            _run_matrix(recorder, method, task, summary, pending, device)
        else:
            assert isinstance(method, NetworkMethod) and isinstance(task, NetworkTask)
            _run_network(recorder, method, task, summary, pending, device,
                         int(cfg.data.batch_size), int(cfg.data.num_workers))
    return outcome


# --------------------------------------------------------------------------------------------
# matrix tasks (table 5)


def _run_matrix(recorder: Recorder, method: MatrixMethod, task: MatrixTask,
                summary: dict[str, Any], pending: list[int], device: torch.device) -> None:
    size = recorder.cell.size
    start = time.perf_counter()
    shape = (int(task.target.shape[0]), int(task.target.shape[1]))
    try:
        budget = matrix_budget(size, shape)
        approxes = method.approximate(task.target, budget, pending, device)
    except ImpossibleBudget as exc:
        log.error("%s", exc)
        budget = matrix_budget(size, shape, check=False)
        approxes = [MatrixApprox(None, 0, {}, failed=f"impossible budget: {exc}") for _ in pending]
    per_seed_time = (time.perf_counter() - start) / len(pending)
    for seed, approx in zip(pending, approxes, strict=True):
        record = recorder.record(seed, summary, per_seed_time, approx.info,
                                 {"params": approx.n_params, "budget": budget})
        _score_matrix(record, task, approx, budget)
        recorder.write(record)


def _score_matrix(record: RunRecord, task: MatrixTask, approx: MatrixApprox, budget: int) -> None:
    if approx.failed is not None or approx.a_hat is None:
        record.status, record.error = "failed", approx.failed or "no approximation returned"
        return
    if approx.n_params > budget:  # a method bug, not a user error: refuse to record it as valid
        raise RuntimeError(f"{record.method} returned {approx.n_params} params over budget {budget}")
    a_hat = approx.a_hat
    if not torch.isfinite(a_hat).all():
        record.status, record.error = "failed", "approximation contains non-finite values"
        return
    record.metrics = {
        "dev_error": matvec_error(task.target, a_hat, task.dev_probes),
        "test_error": matvec_error(task.target, a_hat, task.test_probes),
        "weight_fidelity": relative_fidelity(task.target, a_hat),
    }


# --------------------------------------------------------------------------------------------
# networks (tables 1-4)


def _run_network(recorder: Recorder, method: NetworkMethod, task: NetworkTask,
                 summary: dict[str, Any], pending: list[int], device: torch.device,
                 batch_size: int, num_workers: int) -> None:
    """Compress the pretrained model once for all pending seeds, then measure and evaluate
    each seed."""
    cell = recorder.cell
    # the dataset config lets the loader refuse a checkpoint trained on this run's dev split
    loaded = load_backbone(cell.backbone, task, "cpu", cell.dataset)
    layers = select_layers(loaded.model, cell.method.layers)  # also counted for the original row
    example = torch.zeros(1, task.in_channels, task.image_size, task.image_size)
    evaluator = Evaluator(task, loaded.model, device, batch_size, num_workers)
    start = time.perf_counter()
    target = SizeTarget(None)
    prepared: dict[str, Any] = {}
    try:
        model, prepared = method.prepare(loaded.model, layers)  # e.g. pruning first (table 3)
        if cell.method.needs_size:
            target = network_target(cell.size, model, layers)
        job = NetworkJob(model, layers, target, pending, device, example,
                         input_range=task.input_range())
        if cell.method.needs_size:  # size=bytes: leave room for the container, measured on a probe
            target = job.size = measured_bytes_target(cell.size, method, job, summary)
        job.dev = PROTOCOLS.get(cell.protocol.name).dev_guide(cell, evaluator)
        outs = method.compress(job)
    except ImpossibleBudget as exc:
        log.error("%s", exc)
        outs = [CompressedNet(None, {}, failed=f"impossible size: {exc}") for _ in pending]
    per_seed_time = (time.perf_counter() - start) / len(pending)
    original = original_counts(loaded.model, layers)
    artifacts = recorder.store.root / cell.table / "artifacts"
    for seed, out in zip(pending, outs, strict=True):
        cost: dict[str, Any] = {"budget": target.budget, "size_note": target.note,
                                "layers": cell.method.layers, **original}
        record = recorder.record(seed, summary, per_seed_time,
                                 {**prepared, **out.info, "weights": loaded.provenance,
                                  "dev_note": task.dev_note}, cost)
        if out.failed is not None or out.model is None:
            recorder.write_failed(record, out.failed or "no model returned")
            continue
        cost.update(compressed_cost(out.model, layers, example, out.info,
                                    artifacts / f"{cell.keys[seed]}{ARTIFACT_SUFFIX}",
                                    loaded.model, summary))
        eval_start = time.perf_counter()
        record.metrics = {f"{split}_{name}": value for split in ("dev", "test")
                          for name, value in evaluator.split(out.model, split).items()}
        record.fit["eval_wall_time_s"] = time.perf_counter() - eval_start
        recorder.write(record)

