"""Runs one table cell (method x dataset x size [x backbone]) for one or more seeds and records
each seed.

The runner is the only place that turns a composed config into work, so it owns the rules that
keep a sweep honest and resumable:

* every group is validated against its registered schema before anything is built;
* seeds already in the store are skipped, so rerunning a killed sweep only does what is missing;
* a seed that fails for a reason the config determines (impossible size, divergence) becomes a
  ``failed`` record with the reason, so it shows in the table's seed counts; anything else
  (a bug, out of memory) raises and records nothing, so a fixed rerun will do it;
* each record is written the moment its seed is evaluated.

Two kinds of task: a matrix (table 5: the method approximates it, scored by matrix-vector
error) and an image dataset with a pretrained backbone (tables 1-3: the method compresses the
network data-free, scored by top-1 accuracy on the dev and test splits).
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from riembench.artifact import SUFFIX as ARTIFACT_SUFFIX
from riembench.artifact import artifact_cost
from riembench.backbones import BACKBONES, load_backbone
from riembench.config import typed_group
from riembench.cost import model_cost
from riembench.data import DATASETS
from riembench.data.synthetic import MatrixTask
from riembench.errors import ImpossibleBudget, RiembenchError
from riembench.evaluate import (
    accuracy,
    matvec_error,
    output_fidelity,
    predict,
    relative_fidelity,
)
from riembench.methods import METHODS
from riembench.methods.base import (
    CompressedNet,
    MatrixApprox,
    MatrixMethod,
    NetworkJob,
    NetworkMethod,
    SizeTarget,
)
from riembench.network import select_layers
from riembench.size import SIZES, describe, matrix_budget, network_target, resolve_bits
from riembench.store import RunRecord, RunStore, run_key
from riembench.tracking import wandb_run

log = logging.getLogger("riembench")

__all__ = ["CellOutcome", "matrix_budget", "run"]


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
    backbone_cfg = typed_group(cfg.backbone, BACKBONES)
    resolve_bits(size_cfg, method_cfg, getattr(METHODS.get(method_cfg.name), "needs_size", True))
    container = resolved_container(cfg)
    if getattr(size_cfg, "bits", None) is not None:  # resolved from the method (riembench.size)
        container["size"]["bits"] = size_cfg.bits
    builder = DATASETS.get(dataset_cfg.name)
    table = cfg.table or getattr(builder, "table", dataset_cfg.name)
    seeds = list(cfg.seeds) if cfg.seeds is not None else [int(cfg.seed)]
    if len(set(seeds)) != len(seeds):
        raise RiembenchError(f"seeds has duplicates: {seeds}")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if not getattr(METHODS.get(method_cfg.name), "needs_size", True):
        # an unsized method (original, quant, dfq, prune) gives the same result under every
        # size setting: one identity, so a sweep over sizes runs it once, not once per size
        container["size"] = {"name": "unused"}
    store = RunStore(container["store"]["root"])
    keys = {s: run_key(container, s) for s in seeds}
    pending = [s for s in seeds if not store.has(table, keys[s])]
    skipped = [s for s in seeds if s not in pending]
    if skipped:
        log.info("%s: %d seed(s) already recorded, skipping %s", table, len(skipped), skipped)
    if not pending:
        return CellOutcome(table, [], skipped, [])

    if not cfg.progress and hasattr(method_cfg, "progress"):
        method_cfg.progress = False  # top-level progress=false silences every bar (sweeps)
    method = METHODS.get(method_cfg.name)(method_cfg)
    device = resolve_device(cfg.device)
    task = builder(dataset_cfg, Path(str(cfg.data.root)).expanduser())
    ctx = _Context(table=table, container=container, store=store, keys=keys, device=device,
                   command=" ".join(shlex.quote(a) for a in sys.argv),
                   outcome=CellOutcome(table, [], skipped, []))
    if isinstance(task, MatrixTask):
        if not isinstance(method, MatrixMethod):
            raise RiembenchError(f"method '{method_cfg.name}' does not approximate matrices; "
                                 "matrix methods: " + ", ".join(_names(MatrixMethod)))
        cell = _matrix_cell(method_cfg, dataset_cfg, size_cfg)
        with _tracker(cfg, ctx, cell, method_cfg) as tracker:
            _run_matrix(ctx, tracker, method, task, size_cfg, cell, pending)
        return ctx.outcome
    if not isinstance(method, NetworkMethod):
        raise RiembenchError(f"method '{method_cfg.name}' does not compress networks; "
                             "network methods: " + ", ".join(_names(NetworkMethod)))
    if backbone_cfg.name == "none":
        known = ", ".join(n for n in BACKBONES.names() if n != "none")
        raise RiembenchError(f"dataset '{dataset_cfg.name}' needs a network: set backbone=... "
                             f"(known: {known})")
    cell = _network_cell(method, method_cfg, dataset_cfg, size_cfg, backbone_cfg)
    with _tracker(cfg, ctx, cell, method_cfg) as tracker:
        _run_network(ctx, tracker, cfg, method, task, size_cfg, backbone_cfg, dataset_cfg, cell,
                     pending)
    return ctx.outcome


@dataclass
class _Context:
    """What every seed's record needs from its cell (kept together to keep signatures short)."""

    table: str
    container: dict[str, Any]
    store: RunStore
    keys: dict[int, str]
    device: torch.device
    command: str
    outcome: CellOutcome

    def record(self, seed: int, cell: dict[str, Any], seconds: float, fit: dict[str, Any],
               cost: dict[str, Any]) -> RunRecord:
        return RunRecord(table=self.table, seed=seed, method=cell["method"],
                         dataset=self.container["dataset"]["name"], cell=cell,
                         config={**self.container, "seed": seed}, wall_time_s=seconds,
                         device=_device_name(self.device), command=self.command,
                         key=self.keys[seed], fit=fit, cost=cost)

    def write(self, record: RunRecord, tracker: Any) -> None:
        path = self.store.write(record)
        self.outcome.written.append(str(path))
        if record.status == "failed":
            self.outcome.failed.append(record.seed)
            log.warning("%s seed %d failed: %s", record.cell, record.seed, record.error)
        tracker.log({"seed": record.seed, **record.metrics, "params": record.cost.get("params", 0),
                     "failed": int(record.status == "failed")})


def _tracker(cfg: DictConfig, ctx: _Context, cell: dict[str, Any], method_cfg: Any) -> Any:
    return wandb_run(enabled=cfg.wandb.enabled, mode=cfg.wandb.mode, project=cfg.wandb.project,
                     entity=cfg.wandb.entity, directory=cfg.wandb.dir, group=ctx.table,
                     name="-".join(f"{k}={v}" for k, v in cell.items() if v not in ("", None)),
                     job_type=method_cfg.name, config=ctx.container)


def _names(kind: type) -> list[str]:
    return [n for n in METHODS.names() if issubclass(METHODS.get(n), kind)]


# --------------------------------------------------------------------------------------------
# matrix tasks (table 5)


def _run_matrix(ctx: _Context, tracker: Any, method: MatrixMethod, task: MatrixTask,
                size_cfg: Any, cell: dict[str, Any], pending: list[int]) -> None:
    start = time.perf_counter()
    shape = (int(task.target.shape[0]), int(task.target.shape[1]))
    try:
        budget = matrix_budget(size_cfg, shape)
        approxes = method.approximate(task.target, budget, pending, ctx.device)
    except ImpossibleBudget as exc:
        log.error("%s", exc)
        budget = matrix_budget(size_cfg, shape, check=False)
        approxes = [MatrixApprox(None, 0, {}, failed=f"impossible budget: {exc}") for _ in pending]
    per_seed_time = (time.perf_counter() - start) / len(pending)
    for seed, approx in zip(pending, approxes, strict=True):
        record = ctx.record(seed, cell, per_seed_time, approx.info,
                            {"params": approx.n_params, "budget": budget})
        _score_matrix(record, task, approx, budget)
        ctx.write(record, tracker)
    tracker.summary({"n_seeds": len(pending), "n_failed": len(ctx.outcome.failed)})


def _matrix_cell(method_cfg: Any, dataset_cfg: Any, size_cfg: Any) -> dict[str, Any]:
    return {"method": method_cfg.name, "variant": method_cfg.label,
            "family": dataset_cfg.family, "n": dataset_cfg.n,
            "ratio": getattr(size_cfg, "ratio", describe(size_cfg))}


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
# networks (tables 1-3)


def _run_network(ctx: _Context, tracker: Any, cfg: DictConfig, method: NetworkMethod, task: Any,
                 size_cfg: Any, backbone_cfg: Any, dataset_cfg: Any, cell: dict[str, Any],
                 pending: list[int]) -> None:
    """Compress the pretrained model once for all pending seeds, then evaluate each seed."""
    # the dataset config lets the loader refuse a checkpoint trained on this run's dev split
    loaded = load_backbone(backbone_cfg, task, "cpu", dataset_cfg)
    model = loaded.model
    needs_size = getattr(method, "needs_size", True)
    layers = select_layers(model, method.cfg.layers)  # also counted for the original row
    example = torch.zeros(1, task.in_channels, task.image_size, task.image_size)
    original = {"original_layer_params": layer_numel(model, layers),
                "original_model_params": sum(p.numel() for p in model.parameters())}
    start = time.perf_counter()
    target = SizeTarget(None)
    prepared: dict[str, Any] = {}
    try:
        model, prepared = method.prepare(model, layers)  # e.g. pruning before RieM (table 3)
        if needs_size:
            target = network_target(size_cfg, model, layers)
        outs = method.compress(NetworkJob(model, layers, target, pending, ctx.device, example))
    except ImpossibleBudget as exc:
        log.error("%s", exc)
        outs = [CompressedNet(None, {}, failed=f"impossible size: {exc}") for _ in pending]
    per_seed_time = (time.perf_counter() - start) / len(pending)
    bs, workers = int(cfg.data.batch_size), int(cfg.data.num_workers)
    references = _References(task, ctx.device, bs, workers)
    for seed, out in zip(pending, outs, strict=True):
        cost: dict[str, Any] = {"budget": target.budget, "size_note": target.note,
                                "layers": method.cfg.layers, **original}
        record = ctx.record(seed, cell, per_seed_time,
                            {**prepared, **out.info, "weights": loaded.provenance,
                             "dev_note": getattr(task, "dev_note", "")}, cost)
        if out.failed is not None or out.model is None:
            record.status, record.error = "failed", out.failed or "no model returned"
            ctx.write(record, tracker)
            continue
        compressed = out.model
        cost.update(network_cost(compressed, layers))
        cost.update(model_size_and_flops(compressed, example, out.info))
        cost.update(artifact_cost(compressed, ctx.store.root / ctx.table / "artifacts" /
                                  f"{ctx.keys[seed]}{ARTIFACT_SUFFIX}", out.info, layers,
                                  loaded.model, cell, cost.get("stored_bytes")))
        eval_start = time.perf_counter()
        compressed.to(ctx.device)
        record.metrics = {f"{split}_{name}": value for split in ("dev", "test")
                          for name, value in evaluate_split(
                              task, compressed, split, ctx.device, bs, workers,
                              references.get(split, loaded.model)).items()}
        compressed.to("cpu")
        record.fit["eval_wall_time_s"] = time.perf_counter() - eval_start
        ctx.write(record, tracker)
    tracker.summary({"n_seeds": len(pending), "n_failed": len(ctx.outcome.failed)})


def evaluate_split(task: Any, model: nn.Module, split: str, device: torch.device,
                   batch_size: int, num_workers: int,
                   reference: torch.Tensor | None = None) -> dict[str, float]:
    """Metrics of ``model`` on one split. A task that knows its own metrics (detection: the COCO
    AP suite) provides ``evaluate(model, split, device=, batch_size=, num_workers=)`` returning
    ``{name: value}``; image classification is top-1 accuracy (``acc``) and, given the original
    model's logits on the split (``reference``), agreement with them (``agree``,
    ``out_rel_err``: :func:`riembench.evaluate.output_fidelity`)."""
    own = getattr(task, "evaluate", None)
    if callable(own):
        return dict(own(model, split, device=device, batch_size=batch_size, num_workers=num_workers))
    logits, labels = predict(model, getattr(task, split), batch_size, device,
                             num_workers=num_workers)
    metrics = {"acc": accuracy(logits, labels)}
    if reference is not None:
        metrics.update(output_fidelity(logits, reference))
    return metrics


class _References:
    """The original model's logits per split, computed on first use and kept for the cell's
    seeds (one extra pass per split, not per seed); tasks with their own metrics get none."""

    def __init__(self, task: Any, device: torch.device, batch_size: int, num_workers: int):
        self.task, self.device, self.bs, self.workers = task, device, batch_size, num_workers
        self.cache: dict[str, torch.Tensor] = {}

    def get(self, split: str, original: nn.Module) -> torch.Tensor | None:
        if callable(getattr(self.task, "evaluate", None)):
            return None
        if split not in self.cache:
            original.to(self.device)
            try:
                self.cache[split] = predict(original, getattr(self.task, split), self.bs,
                                            self.device, num_workers=self.workers)[0]
            finally:
                original.to("cpu")
        return self.cache[split]


def _network_cell(method: NetworkMethod, method_cfg: Any, dataset_cfg: Any, size_cfg: Any,
                  backbone_cfg: Any) -> dict[str, Any]:
    paper_name = getattr(method, "paper_name", None)
    return {"backbone": backbone_cfg.name, "dataset": dataset_cfg.name, "method": method_cfg.name,
            "variant": method_cfg.label,
            "paper_method": paper_name() if callable(paper_name) else method_cfg.name,
            "size": describe(size_cfg) if getattr(method, "needs_size", True) else ""}


def layer_numel(model: nn.Module, layers: list[str]) -> int:
    """Stored numbers of the named layers: a compressed layer reports what it stores
    (``stored_numel``), any other module its parameters (e.g. an SVD pair of factors)."""
    total = 0
    for name in layers:
        module = model.get_submodule(name)
        stored = getattr(module, "stored_numel", None)
        total += int(stored()) if callable(stored) else sum(p.numel() for p in module.parameters())
    return total


def network_cost(model: nn.Module, layers: list[str]) -> dict[str, Any]:
    """Stored numbers of a compressed model: its compressed layers, and the whole model
    (compressed layers as they store themselves, everything else as is)."""
    selected = layer_numel(model, layers)
    inside = {id(p) for n in layers for p in model.get_submodule(n).parameters()}
    rest = sum(p.numel() for p in model.parameters() if id(p) not in inside)
    return {"params": selected, "model_params": selected + rest}


def model_size_and_flops(model: nn.Module, example: torch.Tensor,
                         info: dict[str, Any]) -> dict[str, Any]:
    """The stored size at the method's bit-widths, the saved file and fvcore's FLOPs/BOPs of a
    compressed model (riembench.cost), under names that do not clash with the layer counts.

    A model fvcore cannot trace (some detection heads) still gets its sizes; the FLOP failure
    is recorded as ``flops_error`` rather than failing a finished seed.
    """
    bits = info.get("bits_by_param")
    try:
        full = model_cost(model, example, bits)
    except Exception as exc:  # noqa: BLE001  (fvcore/jit raise many types)
        full = model_cost(model, example, bits, flops=False)
        full["flops_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    full["total_params"] = full.pop("params")
    return full


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}"
