"""The seeds of a cell this run computes (claimed in the store), and their records: one per seed,
written the moment its seed is evaluated, never replacing another sweep's."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from riembench.harness.cell import Cell
from riembench.harness.tracking import CellTracker
from riembench.store.records import CLAIMS, TRASH, Claim, RunRecord, RunStore, StoreError

log = logging.getLogger("riembench")


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


def dry_run(cell: Cell, store: RunStore) -> CellOutcome:
    """What a run of ``cell`` would compute: the seeds not in the store (all with ``force``)."""
    pending = [s for s in cell.seeds if cell.force or not store.has(cell.table, cell.keys[s])]
    skipped = [s for s in cell.seeds if s not in pending]
    log.info("%s: dry run, would run seed(s) %s; recorded %s", cell.table, pending, skipped)
    return CellOutcome(cell.table, [], skipped, [], pending=pending)


def open_store(cell: Cell) -> RunStore:
    """The cell's store; a table name that would leave it stops here."""
    store = RunStore(cell.store_root, cell.claim_stale_s)
    store.path(cell.table, cell.keys[cell.seeds[0]])
    return store


def claim_pending(store: RunStore, cell: Cell, claims: dict[int, Claim]) -> list[int]:
    """The seeds this run will compute: not recorded (unless ``force``) and claimed by us.

    The store is checked again once a seed is claimed, since another sweep may have finished
    it between the first check and our claim. A damaged record counts as missing.
    """
    table, keys = cell.table, cell.keys
    recorded = [] if cell.force else [s for s in cell.seeds if store.has(table, keys[s])]
    busy: list[int] = []
    for seed in (s for s in cell.seeds if s not in recorded):
        claim = store.claim(table, keys[seed])
        if claim is None:
            busy.append(seed)
        elif not cell.force and store.has(table, keys[seed]):
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
    mine = [s for s in cell.seeds if s in claims]
    if mine:
        log.info("%s: computing %d seed(s) %s", table, len(mine), mine)
    return mine


@dataclass
class Recorder:
    """Builds and writes the records of one cell's seeds."""

    cell: Cell
    store: RunStore
    device: str
    outcome: CellOutcome
    tracker: CellTracker

    def record(self, seed: int, summary: dict[str, Any], seconds: float, fit: dict[str, Any],
               cost: dict[str, Any]) -> RunRecord:
        cell = self.cell
        return RunRecord(table=cell.table, seed=seed, method=summary["method"],
                         dataset=cell.container["dataset"]["name"], cell=summary,
                         config={**cell.container, "seed": seed}, wall_time_s=seconds,
                         device=self.device, command=cell.command, key=cell.keys[seed], fit=fit,
                         cost=cost, deterministic=cell.deterministic,
                         seeds_requested=cell.requested)

    def write(self, record: RunRecord) -> None:
        """Create the seed's record (never replacing one); with ``force`` the old record moves
        to the store's trash first. A write the store refuses (full disk, no permission) stops
        the cell with :class:`~riembench.store.records.StoreError`; records already written
        stay."""
        if self.cell.force and self.store.has(record.table, record.key):
            moved = self.store.set_aside(self.store.path(record.table, record.key), TRASH, "force")
            log.info("force=true: previous record of seed %d moved to %s", record.seed, moved)
        self.tracker.start(record)  # the record names its W&B run
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
        self.tracker.finish(record, path)
        self.outcome.written.append(str(path))
        self.outcome.records.append(record)
        if record.status == "failed":
            self.outcome.failed.append(record.seed)
            log.warning("%s seed %d failed: %s", record.cell, record.seed, record.error)

    def write_failed(self, record: RunRecord, reason: str) -> None:
        record.status, record.error = "failed", reason
        self.write(record)
