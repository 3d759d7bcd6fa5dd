"""Runs one table cell (method x dataset x size) for one or more seeds and records each seed.

The runner is the only place that turns a composed config into work, so it owns the rules that
keep a sweep honest and resumable:

* every group is validated against its registered schema before anything is built;
* seeds already in the store are skipped, so rerunning a killed sweep only does what is missing;
* a seed that fails for a reason the config determines (impossible budget, divergence) becomes a
  ``failed`` record with the reason, so it shows in the table's seed counts; anything else
  (a bug, out of memory) raises and records nothing, so a fixed rerun will do it;
* each record is written the moment its seed is evaluated.
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from riembench.config import SIZES, typed_group
from riembench.data import DATASETS
from riembench.data.synthetic import MatrixTask
from riembench.errors import ImpossibleBudget, RiembenchError
from riembench.evaluate import matvec_error, relative_fidelity
from riembench.methods import METHODS
from riembench.methods.base import MatrixApprox
from riembench.store import RunRecord, RunStore, run_key
from riembench.tracking import wandb_run

log = logging.getLogger("riembench")


@dataclass
class CellOutcome:
    table: str
    written: list[str]
    skipped: list[int]
    failed: list[int]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RiembenchError(f"device={name} requested but CUDA is not available; use device=cpu")
    return dev


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return container


def run(cfg: DictConfig) -> CellOutcome:
    """Validate, then run every seed of the cell that the store does not have yet."""
    method_cfg = typed_group(cfg.method, METHODS)
    dataset_cfg = typed_group(cfg.dataset, DATASETS)
    size_cfg = typed_group(cfg.size, SIZES)
    container = resolved_container(cfg)
    builder = DATASETS.get(dataset_cfg.name)
    table = cfg.table or getattr(builder, "table", dataset_cfg.name)
    seeds = list(cfg.seeds) if cfg.seeds is not None else [int(cfg.seed)]
    if len(set(seeds)) != len(seeds):
        raise RiembenchError(f"seeds has duplicates: {seeds}")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    store = RunStore(container["store"]["root"])
    keys = {s: run_key(container, s) for s in seeds}
    pending = [s for s in seeds if not store.has(table, keys[s])]
    skipped = [s for s in seeds if s not in pending]
    if skipped:
        log.info("%s: %d seed(s) already recorded, skipping %s", table, len(skipped), skipped)
    if not pending:
        return CellOutcome(table, [], skipped, [])

    method = METHODS.get(method_cfg.name)(method_cfg)
    device = resolve_device(cfg.device)
    task = builder(dataset_cfg, Path(str(cfg.data.root)).expanduser())
    if not isinstance(task, MatrixTask):
        raise RiembenchError(f"dataset '{dataset_cfg.name}' is not a matrix task; this runner only "
                             "evaluates matrix tasks so far")
    cell = _matrix_cell(method_cfg, dataset_cfg, size_cfg)
    command = " ".join(shlex.quote(a) for a in sys.argv)
    outcome = CellOutcome(table, [], skipped, [])

    with wandb_run(enabled=cfg.wandb.enabled, mode=cfg.wandb.mode, project=cfg.wandb.project,
                   entity=cfg.wandb.entity, directory=cfg.wandb.dir, group=table,
                   name="-".join(f"{k}={v}" for k, v in cell.items() if v != ""),
                   job_type=method_cfg.name, config=container) as tracker:
        start = time.perf_counter()
        try:
            budget = matrix_budget(size_cfg, task.target.shape)
            approxes = method.approximate(task.target, budget, pending, device)
        except ImpossibleBudget as exc:
            log.error("%s", exc)
            budget = matrix_budget(size_cfg, task.target.shape, check=False)
            approxes = [MatrixApprox(None, 0, {}, failed=f"impossible budget: {exc}") for _ in pending]
        per_seed_time = (time.perf_counter() - start) / len(pending)
        for seed, approx in zip(pending, approxes):
            record = _matrix_record(table, seed, container, cell, task, approx, budget,
                                    per_seed_time, device, command, keys[seed])
            path = store.write(record)
            outcome.written.append(str(path))
            if record.status == "failed":
                outcome.failed.append(seed)
                log.warning("%s seed %d failed: %s", cell, seed, record.error)
            tracker.log({"seed": seed, **record.metrics, "params": record.cost.get("params", 0),
                         "failed": int(record.status == "failed")})
        tracker.summary({"n_seeds": len(pending), "n_failed": len(outcome.failed)})
    return outcome


def matrix_budget(size_cfg: Any, shape: torch.Size, check: bool = True) -> int:
    """Stored-parameter budget of a matrix task: ``ratio * m * n`` (rounded down)."""
    m, n = shape
    budget = int(size_cfg.ratio * m * n)
    if check and budget < 1:
        raise ImpossibleBudget(f"size.ratio={size_cfg.ratio} gives a budget of {budget} parameters "
                               f"for a {m}x{n} matrix")
    return budget


def _matrix_cell(method_cfg: Any, dataset_cfg: Any, size_cfg: Any) -> dict[str, Any]:
    return {"method": method_cfg.name, "variant": method_cfg.label,
            "family": dataset_cfg.family, "n": dataset_cfg.n, "ratio": size_cfg.ratio}


def _matrix_record(table: str, seed: int, container: dict[str, Any], cell: dict[str, Any],
                   task: MatrixTask, approx: MatrixApprox, budget: int, seconds: float,
                   device: torch.device, command: str, key: str) -> RunRecord:
    record = RunRecord(table=table, seed=seed, method=cell["method"], dataset=container["dataset"]["name"],
                       cell=cell, config={**container, "seed": seed}, wall_time_s=seconds,
                       device=_device_name(device), command=command, key=key,
                       fit=approx.info, cost={"params": approx.n_params, "budget": budget})
    if approx.failed is not None or approx.a_hat is None:
        record.status, record.error = "failed", approx.failed or "no approximation returned"
        return record
    if approx.n_params > budget:  # a method bug, not a user error: refuse to record it as valid
        raise RuntimeError(f"{cell['method']} returned {approx.n_params} params over budget {budget}")
    a_hat = approx.a_hat
    if not torch.isfinite(a_hat).all():
        record.status, record.error = "failed", "approximation contains non-finite values"
        return record
    record.metrics = {
        "dev_error": matvec_error(task.target, a_hat, task.dev_probes),
        "test_error": matvec_error(task.target, a_hat, task.test_probes),
        "weight_fidelity": relative_fidelity(task.target, a_hat),
    }
    return record


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}"
