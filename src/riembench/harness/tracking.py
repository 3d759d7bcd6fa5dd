"""W&B logging: one W&B run per (table cell, seed), the layout W&B's own UI expects.

* ``group`` is ``<table>/<cell>`` so the runs table folds a cell's seeds into one row with their
  mean and spread; ``job_type`` is the table, so "group by job type" shows a table's cells;
* tags: table, method, backbone, size, protocol (when the config has one), plus ``wandb.tags``;
* the run's config is the resolved config with the seed that run used, its record key and cell;
* metrics under ``dev/`` and ``test/`` (``dev_error`` -> ``dev/error``), costs under ``cost/``,
  the fit curve (when the method records one) as history (``fit/loss`` against the fit step);
* the record JSON as a ``run-record`` artifact; the run id goes back into the record.

Offline by default. Every standard W&B environment variable wins over the config
(``WANDB_MODE``, ``WANDB_DISABLED``, ``WANDB_PROJECT``, ``WANDB_ENTITY``, ``WANDB_DIR``,
``WANDB_RUN_GROUP``, ``WANDB_JOB_TYPE``, ``WANDB_TAGS``, ``WANDB_SILENT``...): the config only
fills in what the environment leaves unset, and ``WANDB_DIR`` is left to W&B itself. Banners
are off unless ``WANDB_SILENT`` / ``WANDB_QUIET`` say otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

_TRUE = ("1", "true", "yes", "on")
#: the modes ``wandb.init`` declares; a mode from ``WANDB_MODE`` is checked by W&B itself
_InitMode = Literal["online", "offline", "disabled", "shared"]
log = logging.getLogger("riembench")


def resolve_mode(enabled: bool, mode: str) -> str:
    """The W&B mode a run gets: ``disabled`` when the config or ``WANDB_DISABLED`` say so, else
    ``WANDB_MODE`` if set, else the config's mode."""
    if not enabled or os.environ.get("WANDB_DISABLED", "").lower() in _TRUE:
        return "disabled"
    return os.environ.get("WANDB_MODE", mode)


def _unless_env(**pairs: tuple[str, Any]) -> dict[str, Any]:
    """``wandb.init`` keyword arguments for the values whose environment variable is unset (W&B
    reads the variable itself when the argument is absent)."""
    return {k: v for k, (env, v) in pairs.items() if env not in os.environ and v is not None}


def _settings() -> Any:
    import wandb

    # the record carries the git revision; W&B's git probe only warns outside a checkout
    if {"WANDB_SILENT", "WANDB_QUIET"} & set(os.environ):
        return wandb.Settings(disable_git=True)
    return wandb.Settings(silent=True, disable_git=True)


def metric_name(key: str) -> str:
    """``dev_error`` -> ``dev/error``, ``test_acc`` -> ``test/acc``; other keys keep their name."""
    split, sep, rest = key.partition("_")
    return f"{split}/{rest}" if sep and split in ("dev", "test") else key


def _numbers(prefix: str, data: Mapping[str, Any]) -> dict[str, float]:
    """The finite numeric leaves of ``data`` as ``prefix/key`` (nested keys joined by ``.``)."""
    out: dict[str, float] = {}
    for k, v in data.items():
        if isinstance(v, Mapping):
            out.update(_numbers(f"{prefix}{k}.", v))
        elif isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
        elif isinstance(v, int | float) and math.isfinite(v):
            out[f"{prefix}{k}"] = v
    return out


def fit_curve(fit: Mapping[str, Any]) -> list[tuple[int, float]]:
    """The fit's loss curve as (step, loss), from ``fit["history"]`` when the method records it
    (``[[step, loss], ...]`` or ``[{"step": s, "loss": l}, ...]``); empty otherwise."""
    curve: list[tuple[int, float]] = []
    step: Any  # values of the record's JSON (only the loss is checked)
    loss: Any
    for point in fit.get("history") or []:
        if isinstance(point, Mapping):
            step, loss = point.get("step"), point.get("loss")
        else:
            step, loss = point[0], point[1]
        if isinstance(loss, int | float) and math.isfinite(loss):
            curve.append((int(step), float(loss)))
    return curve


@dataclass
class CellTracker:
    """Opens one W&B run per seed of one table cell. ``mode="disabled"`` does nothing."""

    mode: str
    project: str
    entity: str | None
    table: str
    cell_name: str
    tags: list[str]
    config: dict[str, Any]
    _run: Any = field(default=None, repr=False)

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def start(self, record: Any) -> None:
        """Open the seed's run and put its id in ``record.tracker`` (before the record is
        written, so the stored record names its W&B run)."""
        if not self.enabled:
            return
        import wandb

        env_tags = [t for t in os.environ.get("WANDB_TAGS", "").split(",") if t]
        config = {**self.config, "seed": record.seed, "record_key": record.key,
                  "cell": record.cell}
        config.pop("seeds", None)  # the invocation's seed list: this run is one of them
        kwargs = _unless_env(project=("WANDB_PROJECT", self.project),
                             entity=("WANDB_ENTITY", self.entity),
                             group=("WANDB_RUN_GROUP", f"{self.table}/{self.cell_name}"),
                             job_type=("WANDB_JOB_TYPE", self.table),
                             name=("WANDB_NAME", f"{self.cell_name}-seed{record.seed}"))
        try:
            self._run = wandb.init(mode=cast(_InitMode, self.mode), config=config,
                                   tags=sorted({*self.tags, *env_tags}), reinit="create_new",
                                   settings=_settings(), **kwargs)
        except Exception as exc:  # noqa: BLE001  (W&B down or misconfigured: keep the results)
            log.warning("W&B run could not start (%s: %s); the cell goes on without W&B",
                        type(exc).__name__, exc)
            self.mode = "disabled"
            return
        record.tracker = {"wandb_run_id": self._run.id, "wandb_project": self._run.project,
                          "wandb_group": self._run.group, "wandb_dir": str(self._run.dir)}

    def finish(self, record: Any, path: str | os.PathLike[str] | None) -> None:
        """Log the seed's fit curve, metrics, costs and record file, and close its run (marked
        failed when the seed failed)."""
        run, self._run = self._run, None
        if run is None:
            return
        try:
            self._log(run, record, path)
        except Exception as exc:  # noqa: BLE001  (the record is written: never lose the cell)
            log.warning("W&B logging of %s seed %d failed (%s: %s)", self.cell_name, record.seed,
                        type(exc).__name__, exc)
        finally:
            run.finish(exit_code=0 if record.status == "ok" else 1)

    @staticmethod
    def _log(run: Any, record: Any, path: str | os.PathLike[str] | None) -> None:
        """What :meth:`finish` logs: history, summary, the revision, the record artifact."""
        import wandb

        for step, loss in fit_curve(record.fit):
            run.log({"fit/loss": loss}, step=step)
        summary = {metric_name(k): v for k, v in record.metrics.items()}
        summary.update(_numbers("cost/", record.cost))
        summary.update({k: v for k, v in _numbers("fit/", record.fit).items()
                        if not k.startswith("fit/history")})
        summary.update({"status": record.status, "seed": record.seed,
                        "wall_time_s": record.wall_time_s})
        if record.error:
            summary["error"] = record.error
        run.summary.update(summary)
        # the checkout's revision (W&B's own git probe is off: it warns outside a checkout)
        run.config.update({"git_rev": record.git_rev}, allow_val_change=True)
        if path is not None:
            art = wandb.Artifact(f"record-{record.table}-{record.key}", type="run-record",
                                 metadata={"table": record.table, "seed": record.seed,
                                           "cell": record.cell})
            art.add_file(str(path), name="record.json")  # one name for every record
            run.log_artifact(art)

    def close(self) -> None:
        """Close a run left open by an exception between start and finish."""
        if self._run is not None:
            self._run.finish(exit_code=1)
            self._run = None


def cell_tags(table: str, cell: Mapping[str, Any], container: Mapping[str, Any],
              extra: list[str]) -> list[str]:
    """table, method, backbone, size and protocol tags of a cell (W&B tags are <= 64 chars)."""
    method = container.get("method", {}) or {}
    protocol = method.get("protocol", container.get("protocol"))
    backbone = (container.get("backbone") or {}).get("name")
    size = cell.get("size", cell.get("ratio"))
    pairs = {"table": table, "method": cell.get("method"), "backbone": backbone,
             "size": size, "protocol": protocol}
    tags = [f"{k}:{v}" for k, v in pairs.items() if v not in (None, "", "none", "unused")]
    return [t[:64] for t in [*tags, *extra]]


@contextlib.contextmanager
def cell_tracker(wandb_cfg: Any, table: str, cell: Mapping[str, Any],
                 container: dict[str, Any]) -> Iterator[CellTracker]:
    """A :class:`CellTracker` for one cell, closed on the way out."""
    name = "-".join(f"{k}={v}" for k, v in cell.items() if v not in ("", None))
    tracker = CellTracker(mode=resolve_mode(bool(wandb_cfg.enabled), str(wandb_cfg.mode)),
                          project=str(wandb_cfg.project), entity=wandb_cfg.entity, table=table,
                          cell_name=name, config=container,
                          tags=cell_tags(table, cell, container, list(wandb_cfg.get("tags") or [])))
    try:
        yield tracker
    finally:
        tracker.close()


@contextlib.contextmanager
def training_run(config: dict[str, Any], name: str, tags: list[str]) -> Iterator[Any]:
    """A W&B run for ``riembench-train`` (job type ``train``, grouped by backbone/dataset); yields
    the run, or None when W&B is disabled. Same environment rules as the cell runs."""
    wb = config.get("wandb") or {}
    mode = resolve_mode(bool(wb.get("enabled", True)), str(wb.get("mode", "offline")))
    if mode == "disabled":
        yield None
        return
    import wandb

    kwargs = _unless_env(project=("WANDB_PROJECT", wb.get("project", "riembench")),
                         entity=("WANDB_ENTITY", wb.get("entity")),
                         group=("WANDB_RUN_GROUP", f"train/{name}"),
                         job_type=("WANDB_JOB_TYPE", "train"), name=("WANDB_NAME", name))
    run = wandb.init(mode=cast(_InitMode, mode), config=config, tags=tags, reinit="create_new",
                     settings=_settings(), **kwargs)
    try:
        yield run
    finally:
        run.finish()


def log_file_artifact(run: Any, path: str | os.PathLike[str], name: str, kind: str,
                      metadata: dict[str, Any] | None = None) -> None:
    """Log one file as a W&B artifact of ``run`` (artifact names allow [A-Za-z0-9_.-])."""
    import re

    import wandb

    art = wandb.Artifact(re.sub(r"[^A-Za-z0-9_.-]", "_", name), type=kind, metadata=metadata)
    art.add_file(str(path))
    run.log_artifact(art)


def log_table_files(table: str, paths: list[Path]) -> str | None:
    """After a report run: the written table files as one ``table`` artifact in a W&B run of
    job type ``report``, when ``WANDB_MODE`` is set and not ``disabled`` (the reporter has no
    config of its own). Returns the run id, or None when nothing was logged."""
    mode = os.environ.get("WANDB_MODE")
    if not mode or resolve_mode(True, mode) == "disabled":
        return None
    import wandb

    kwargs = _unless_env(project=("WANDB_PROJECT", "riembench"),
                         group=("WANDB_RUN_GROUP", table),
                         job_type=("WANDB_JOB_TYPE", "report"), name=("WANDB_NAME", f"{table}-report"))
    run = wandb.init(mode=cast(_InitMode, mode), tags=[f"table:{table}"], reinit="create_new",
                     settings=_settings(), **kwargs)
    try:
        art = wandb.Artifact(f"{table}-tables", type="table")
        for p in paths:
            if Path(p).is_file():
                art.add_file(str(p))
        run.log_artifact(art)
        return str(run.id)
    finally:
        run.finish()
