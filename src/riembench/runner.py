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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from riembench.artifact import SUFFIX as ARTIFACT_SUFFIX
from riembench.artifact import artifact_cost
from riembench.backbones import BACKBONES, backbone_label, eval_preprocessing, load_backbone
from riembench.byte_budget import measured_bytes_target
from riembench.config import ProtocolConfig, typed_group
from riembench.cost import model_cost
from riembench.data import DATASETS
from riembench.data.synthetic import MatrixTask
from riembench.errors import ImpossibleBudget, RiembenchError
from riembench.evaluate import (
    classification_metrics,
    matvec_error,
    output_fidelity,
    predict,
    relative_fidelity,
)
from riembench.methods import METHODS
from riembench.methods.base import (
    CompressedNet,
    DevGuide,
    MatrixApprox,
    MatrixMethod,
    NetworkJob,
    NetworkMethod,
    SizeTarget,
)
from riembench.network import select_layers
from riembench.quantize import input_range_of
from riembench.size import SIZES, describe, matrix_budget, network_target, resolve_bits
from riembench.store import CLAIMS, TRASH, Claim, RunRecord, RunStore, StoreError, run_key
from riembench.tracking import CellTracker, cell_tracker
from riembench.validate import check_run_settings

log = logging.getLogger("riembench")

__all__ = ["CellOutcome", "matrix_budget", "run"]


@dataclass
class CellOutcome:
    table: str
    written: list[str]
    skipped: list[int]
    failed: list[int]
    #: the records this invocation wrote (tracked, summarised at the end of the run)
    records: list[RunRecord] = field(default_factory=list)
    #: store paths of the seeds that were already recorded (skipped)
    existing: list[str] = field(default_factory=list)
    #: a dry run: the seeds that would run
    pending: list[int] = field(default_factory=list)


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


@dataclass
class CellPlan:
    """What :func:`run` will do for a composed config, decided before anything is built (also
    what a dry run and a table plan list): the validated groups, the record folder, the seeds
    asked for and the seeds that will run, and each seed's record key."""

    table: str
    container: dict[str, Any]
    method_cfg: Any
    dataset_cfg: Any
    size_cfg: Any
    backbone_cfg: Any
    method: Any
    requested: list[int]
    seeds: list[int]
    keys: dict[int, str]
    protocol: ProtocolConfig

    @property
    def deterministic(self) -> bool:
        return bool(self.method.deterministic)


def seeds_to_run(requested: list[int], deterministic: bool) -> list[int]:
    """The one rule for how many seeds a cell runs: every requested seed, except that a
    deterministic method (the seed does not change its result: original, quant, dfq, svd, ...)
    runs only the first, and its record says so."""
    return requested[:1] if deterministic else list(requested)


def known_tables() -> list[str]:
    """Record folders a run may write to: the tables of the plans in conf/table/ and of the
    registered reports (e.g. equal_bytes, run by its own recipe); a name outside this list,
    e.g. ``../x``, would file records outside the store."""
    from riembench.plan import record_tables
    from riembench.report import TABLES

    return sorted(set(record_tables()) | {TABLES.get(n).record_table for n in TABLES.names()})


def plan_cell(cfg: DictConfig) -> CellPlan:
    """Validate every group and decide table, seeds and keys; builds no data, model or fit."""
    check_run_settings(cfg)
    method_cfg = typed_group(cfg.method, METHODS)
    dataset_cfg = typed_group(cfg.dataset, DATASETS)
    size_cfg = typed_group(cfg.size, SIZES)
    backbone_cfg = typed_group(cfg.backbone, BACKBONES)
    protocol = _protocol(cfg)
    resolve_bits(size_cfg, method_cfg, getattr(METHODS.get(method_cfg.name), "needs_size", True))
    container = resolved_container(cfg)
    if getattr(size_cfg, "bits", None) is not None:  # resolved from the method (riembench.size)
        container["size"]["bits"] = size_cfg.bits
    builder = DATASETS.get(dataset_cfg.name)
    table = cfg.table or getattr(builder, "table", dataset_cfg.name)
    if table not in known_tables():
        raise RiembenchError(f"table={table!r} is not a known table; known: "
                             + ", ".join(known_tables()))
    requested = list(cfg.seeds) if cfg.seeds is not None else [int(cfg.seed)]
    if not requested:
        raise RiembenchError("seeds is empty: give at least one seed")
    if len(set(requested)) != len(requested):
        raise RiembenchError(f"seeds has duplicates: {requested}")
    if not cfg.progress and hasattr(method_cfg, "progress"):
        method_cfg.progress = False  # top-level progress=false silences every bar (sweeps)
    method = METHODS.get(method_cfg.name)(method_cfg)
    if not getattr(type(method), "needs_size", True):
        # an unsized method (original, quant, dfq, prune) gives the same result under every
        # size setting: one identity, so a sweep over sizes runs it once, not once per size
        container["size"] = {"name": "unused"}
    seeds = seeds_to_run(requested, bool(method.deterministic))
    keys = {s: run_key(container, s) for s in seeds}
    return CellPlan(table, container, method_cfg, dataset_cfg, size_cfg, backbone_cfg, method,
                    requested, seeds, keys, protocol)


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
    plan = plan_cell(cfg)
    method_cfg, dataset_cfg, size_cfg, backbone_cfg = (plan.method_cfg, plan.dataset_cfg,
                                                       plan.size_cfg, plan.backbone_cfg)
    table, container, keys, seeds = plan.table, plan.container, plan.keys, plan.seeds
    protocol = plan.protocol
    builder = DATASETS.get(dataset_cfg.name)
    if plan.deterministic and len(plan.requested) > 1:
        log.info("%s: %s is deterministic, running seed %d of %s", table, method_cfg.name,
                 seeds[0], plan.requested)
    store = RunStore(container["store"]["root"], container["store"]["claim_stale_s"])
    store.path(table, keys[seeds[0]])  # a table name that would leave the store stops here
    if cfg.dry_run:
        pending = [s for s in seeds if cfg.force or not store.has(table, keys[s])]
        skipped = [s for s in seeds if s not in pending]
        log.info("%s: dry run, would run seed(s) %s; recorded %s", table, pending, skipped)
        return CellOutcome(table, [], skipped, [], pending=pending)
    pending = _claim_pending(store, table, keys, seeds, bool(cfg.force), claims)
    skipped = [s for s in seeds if s not in pending]
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if skipped:
        log.info("%s: %d seed(s) already recorded, skipping %s", table, len(skipped), skipped)
    existing = [str(store.path(table, keys[s])) for s in skipped]
    if not pending:
        return CellOutcome(table, [], skipped, [], existing=existing)

    method = plan.method
    device = resolve_device(cfg.device)
    # a dataset that takes it (ImageNet) evaluates with the backbone library's preprocessing
    prep = (eval_preprocessing(backbone_cfg) if getattr(builder, "takes_preprocessing", False)
            else None)
    task = builder(dataset_cfg, Path(str(cfg.data.root)).expanduser(),
                   **({"preprocessing": prep} if prep is not None else {}))
    ctx = _Context(table=table, container=container, store=store, keys=keys, device=device,
                   command=" ".join(shlex.quote(a) for a in sys.argv),
                   outcome=CellOutcome(table, [], skipped, [], existing=existing),
                   deterministic=plan.deterministic, requested=plan.requested,
                   force=bool(cfg.force))
    if isinstance(task, MatrixTask):
        if not isinstance(method, MatrixMethod):
            raise RiembenchError(f"method '{method_cfg.name}' does not approximate matrices; "
                                 "matrix methods: " + ", ".join(_names(MatrixMethod)))
        if protocol.name != "strict":
            raise RiembenchError(f"protocol={protocol.name} needs a network and its dev split; "
                                 "a matrix task (table 5) is fitted under protocol=strict")
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
    if protocol.name == "dev_guided" and not method.has_checkpoints:
        raise RiembenchError(f"protocol=dev_guided chooses between a fit's checkpoints; method "
                             f"'{method_cfg.name}' has none (use protocol=strict; methods with "
                             "checkpoints: " + ", ".join(
                                 n for n in _names(NetworkMethod) if METHODS.get(n).has_checkpoints) + ")")
    cell = _network_cell(method, method_cfg, dataset_cfg, size_cfg, backbone_cfg, protocol)
    with _tracker(cfg, ctx, cell, method_cfg) as tracker:
        _run_network(ctx, tracker, cfg, method, task, size_cfg, backbone_cfg, dataset_cfg, cell,
                     pending, protocol)
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
    deterministic: bool = False
    requested: list[int] = field(default_factory=list)
    force: bool = False

    def record(self, seed: int, cell: dict[str, Any], seconds: float, fit: dict[str, Any],
               cost: dict[str, Any]) -> RunRecord:
        return RunRecord(table=self.table, seed=seed, method=cell["method"],
                         dataset=self.container["dataset"]["name"], cell=cell,
                         config={**self.container, "seed": seed}, wall_time_s=seconds,
                         device=_device_name(self.device), command=self.command,
                         key=self.keys[seed], fit=fit, cost=cost,
                         deterministic=self.deterministic, seeds_requested=self.requested)

    def write(self, record: RunRecord, tracker: CellTracker) -> None:
        """Create the seed's record (never replacing one); with ``force`` the old record moves
        to the store's trash first. A write the store refuses (full disk, no permission) stops
        the cell with :class:`~riembench.store.StoreError`; records already written stay."""
        if self.force and self.store.has(record.table, record.key):
            moved = self.store.set_aside(self.store.path(record.table, record.key), TRASH, "force")
            log.info("force=true: previous record of seed %d moved to %s", record.seed, moved)
        tracker.start(record)  # the record names its W&B run
        try:
            path, created = self.store.create(record)
        except StoreError as exc:
            raise StoreError(f"{exc}. The cell {record.cell} stopped at seed {record.seed}: "
                             f"{len(self.outcome.written)} of its record(s) were written and are "
                             "kept; free space or fix permissions, then rerun the same command "
                             "to compute the rest") from exc
        if not created:  # someone else's record appeared (claims make this rare): keep it
            log.warning("seed %d: a record already exists at %s; kept it, ours is dropped",
                        record.seed, path)
            self.outcome.skipped.append(record.seed)
            return
        tracker.finish(record, path)
        self.outcome.written.append(str(path))
        self.outcome.records.append(record)
        if record.status == "failed":
            self.outcome.failed.append(record.seed)
            log.warning("%s seed %d failed: %s", record.cell, record.seed, record.error)


def _claim_pending(store: RunStore, table: str, keys: dict[int, str], seeds: list[int],
                   force: bool, claims: dict[int, Claim]) -> list[int]:
    """The seeds this run will compute: not recorded (unless ``force``) and claimed by us.

    The store is checked again once a seed is claimed, since another sweep may have finished
    it between the first check and our claim. A damaged record counts as missing.
    """
    recorded = [] if force else [s for s in seeds if store.has(table, keys[s])]
    busy: list[int] = []
    for seed in (s for s in seeds if s not in recorded):
        claim = store.claim(table, keys[seed])
        if claim is None:
            busy.append(seed)
        elif not force and store.has(table, keys[seed]):
            claim.release()
            recorded.append(seed)
        else:
            claims[seed] = claim
    if recorded:
        log.info("%s: %d seed(s) already recorded, skipping %s", table, len(recorded),
                 sorted(recorded))
    if busy:
        log.info("%s: %d seed(s) being computed by another sweep (claimed in %s), left to it: "
                 "%s", table, len(busy), store.root / CLAIMS, busy)
    mine = [s for s in seeds if s in claims]
    if mine:
        log.info("%s: computing %d seed(s) %s", table, len(mine), mine)
    return mine


def _tracker(cfg: DictConfig, ctx: _Context, cell: dict[str, Any], method_cfg: Any) -> Any:
    return cell_tracker(cfg.wandb, ctx.table, cell, ctx.container)


def _protocol(cfg: DictConfig) -> ProtocolConfig:
    node = cfg.get("protocol")
    if node is None:
        return ProtocolConfig()
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ProtocolConfig), node))
    except Exception as exc:  # omegaconf's ValidationError, or our __post_init__
        raise RiembenchError(f"invalid protocol config: {exc}") from exc


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


def _matrix_cell(method_cfg: Any, dataset_cfg: Any, size_cfg: Any) -> dict[str, Any]:
    return {"method": method_cfg.name, "variant": method_cfg.label, "protocol": "strict",
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
                 pending: list[int], protocol: ProtocolConfig) -> None:
    """Compress the pretrained model once for all pending seeds, then evaluate each seed."""
    # the dataset config lets the loader refuse a checkpoint trained on this run's dev split
    loaded = load_backbone(backbone_cfg, task, "cpu", dataset_cfg)
    model = loaded.model
    needs_size = getattr(method, "needs_size", True)
    layers = select_layers(model, method.cfg.layers)  # also counted for the original row
    example = torch.zeros(1, task.in_channels, task.image_size, task.image_size)
    original = {"original_layer_params": layer_numel(model, layers),
                "original_model_params": sum(p.numel() for p in model.parameters())}
    bs, workers = int(cfg.data.batch_size), int(cfg.data.num_workers)
    references = _References(task, ctx.device, bs, workers)
    start = time.perf_counter()
    target = SizeTarget(None)
    prepared: dict[str, Any] = {}
    try:
        model, prepared = method.prepare(model, layers)  # e.g. pruning before RieM (table 3)
        if needs_size:
            target = network_target(size_cfg, model, layers)
        job = NetworkJob(model, layers, target, pending, ctx.device, example,
                         input_range=input_range_of(task))
        if needs_size:  # size=bytes: leave room for the container, measured on a probe
            target = job.size = measured_bytes_target(size_cfg, method, job, cell)
        job.dev = _dev_guide(protocol, task, loaded.model, ctx.device, bs, workers, references)
        outs = method.compress(job)
    except ImpossibleBudget as exc:
        log.error("%s", exc)
        outs = [CompressedNet(None, {}, failed=f"impossible size: {exc}") for _ in pending]
    per_seed_time = (time.perf_counter() - start) / len(pending)
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


def _dev_guide(protocol: ProtocolConfig, task: Any, original: nn.Module, device: torch.device,
               batch_size: int, num_workers: int, references: _References) -> DevGuide | None:
    """The dev evaluator handed to a method under protocol=dev_guided (None under strict): the
    task's dev split only, scored by the metric that ranks seeds (top-1, or AP)."""
    if protocol.name != "dev_guided":
        return None
    metric = dev_metric(task)

    def score(model: nn.Module) -> float:
        model.to(device)
        try:
            return evaluate_split(task, model, "dev", device, batch_size, num_workers)[metric]
        finally:
            model.to("cpu")

    stop_at = None
    if protocol.stop_at_original:
        original.to(device)
        try:
            stop_at = evaluate_split(task, original, "dev", device, batch_size, num_workers)[metric]
        finally:
            original.to("cpu")
    return DevGuide(score=score, every=protocol.every, stop_at=stop_at)


def dev_metric(task: Any) -> str:
    """The metric that ranks seeds and checkpoints: a task's own (COCO: AP), else top-1."""
    return str(task.primary_metric)


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
    metrics = classification_metrics(logits, labels)  # acc (top-1) and top5
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
                  backbone_cfg: Any, protocol: ProtocolConfig) -> dict[str, Any]:
    paper_name = getattr(method, "paper_name", None)
    return {"backbone": backbone_label(backbone_cfg), "dataset": dataset_cfg.name,
            "method": method_cfg.name, "variant": method_cfg.label, "protocol": protocol.name,
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
    """The stored size at the method's bit-widths, the saved file and the FLOPs/BOPs of a
    compressed model (riembench.cost), under names that do not clash with the layer counts.

    A model that does not run on the example input still gets its sizes; the reason the FLOPs
    could not be counted is recorded as ``flops_error`` rather than failing a finished seed.
    """
    bits = info.get("bits_by_param")
    try:
        full = model_cost(model, example, bits)
    except RiembenchError as exc:  # raised by cost.count_flops only
        full = model_cost(model, example, bits, flops=False)
        full["flops_error"] = str(exc)
    full["total_params"] = full.pop("params")
    return full


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}"
