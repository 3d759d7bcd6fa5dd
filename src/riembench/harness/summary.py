"""What a run tells its user at the end, and what it leaves in Hydra's output folder.

* every job (one table cell) ends with one line: the cell, its seeds, the mean of its headline
  metric and where its records are; the job's output folder gets ``records.txt`` (one record
  path per line) and ``cell.json`` (the same facts, for the sweep summary);
* a sweep logs ``[done/total] ... ETA`` as each cell finishes (counted from the ``cell.json``
  files in the sweep folder, so parallel joblib workers or SLURM jobs share one count), and ends
  with a table of every cell plus the folder where everything went (``summary.md`` there too).

:class:`RunSummary` is the Hydra callback (``hydra.callbacks`` in ``conf/config.yaml``); the job's
return value (:func:`cell_report`) is what the task function returns.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

log = logging.getLogger("riembench")

#: metric shown in the summary line, first one a record has (else its first test_* metric)
HEADLINE = ("test_error", "test_acc", "test_AP", "test_map", "dev_error", "dev_acc")
_TOTAL_FILE = ".riembench-total"


def headline(metrics: dict[str, Any]) -> str | None:
    for key in HEADLINE:
        if key in metrics:
            return key
    return next((k for k in sorted(metrics) if k.startswith("test_")), None)


def cell_report(outcome: Any) -> dict[str, Any]:
    """A finished cell as plain data: table, cell, seeds (new, skipped, failed), the headline
    metric's mean over every recorded ok seed of the cell, and all its record paths."""
    records = [_asdict(r) for r in outcome.records]
    for path in outcome.existing:
        try:
            records.append(json.loads(Path(path).read_text()))
        except (OSError, ValueError):
            continue
    ok = [r for r in records if r.get("status") == "ok"]
    metric = next((m for r in ok if (m := headline(r.get("metrics", {})))), None)
    values = [float(r["metrics"][metric]) for r in ok if metric in r.get("metrics", {})]
    values = [v for v in values if math.isfinite(v)]
    cell: dict[str, Any] = next((r["cell"] for r in records if r.get("cell")), {})
    return {"table": outcome.table, "cell": cell,
            "seeds": sorted(int(r["seed"]) for r in records),
            "new": len(outcome.written), "skipped": len(outcome.skipped),
            "failed": len(outcome.failed), "metric": metric,
            "mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else None,
            "records": [*outcome.written, *outcome.existing]}


def cell_name(report: dict[str, Any]) -> str:
    cell = report.get("cell") or {}
    return " ".join(f"{k}={v}" for k, v in cell.items() if v not in ("", None)) or "(no record)"


def cell_line(report: dict[str, Any]) -> str:
    """``table5 method=svd ... | seeds 0-9 (10 new, 0 skipped, 0 failed) | test_error 0.1234 +- 0.0012 | runs/table5/{a,b}.json``"""
    mean = report.get("mean")
    score = "no ok seed" if mean is None else f"{report['metric']} {mean:.4g}"
    if _spread(report):
        score += f" +- {report['std']:.2g}"
    paths = report.get("records") or []
    where = _paths_text(paths)
    return (f"{report['table']} {cell_name(report)} | seeds {_seeds_text(report['seeds'])} "
            f"({report['new']} new, {report['skipped']} skipped, {report['failed']} failed) | "
            f"{score} | {where}")


def _spread(report: dict[str, Any]) -> bool:
    """A std worth showing: seeds that differ by more than float noise (a deterministic
    method's seeds give the same number)."""
    std, mean = report.get("std"), report.get("mean")
    return std is not None and mean is not None and std > 1e-9 * max(abs(mean), 1e-30)


def _seeds_text(seeds: Sequence[int]) -> str:
    if not seeds:
        return "none"
    if list(seeds) == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ",".join(map(str, seeds))


def _paths_text(paths: Sequence[str]) -> str:
    if not paths:
        return "no records"
    folders = sorted({str(Path(p).parent) for p in paths})
    if len(paths) == 1:
        return paths[0]
    return f"{len(paths)} records in {', '.join(f + '/' for f in folders)}"


def _asdict(record: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(record)


def summary_table(reports: Iterable[dict[str, Any]]) -> str:
    """The sweep's cells as a markdown table."""
    rows = ["| table | cell | seeds | failed | metric | mean | std |",
            "|---|---|---|---|---|---|---|"]
    for r in reports:
        mean = "" if r.get("mean") is None else f"{r['mean']:.4g}"
        std = f"{r['std']:.2g}" if _spread(r) else ""
        status = f" ({r['error']})" if r.get("error") else ""
        rows.append(f"| {r.get('table', '')} | {cell_name(r)}{status} | "
                    f"{len(r.get('seeds', []))} | {r.get('failed', 0)} | "
                    f"{r.get('metric') or ''} | {mean} | {std} |")
    return "\n".join(rows)


def sweep_total(config: DictConfig) -> int | None:
    """Number of jobs a basic-sweeper multirun launches (its params x the command line's sweep
    overrides), or None when the sweeper is another kind."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if "basic_sweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return None
    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(args)
    batches = BasicSweeper.split_arguments(overrides, None)
    return sum(len(b) for b in batches)


def _eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class RunSummary(Callback):
    """Hydra callback: the per-cell line, records.txt / cell.json, sweep progress and summary."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        try:
            total = sweep_total(config)
        except Exception:  # noqa: BLE001  (progress is a courtesy; never stop a sweep for it)
            total = None
        (sweep_dir / _TOTAL_FILE).write_text(json.dumps({"total": total, "start": time.time()}))
        log.info("sweep: %s cell(s), output in %s", total if total is not None else "?",
                 sweep_dir.resolve())

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:  # which cell each worker is on, as it starts
            log.info("[job %s] start: %s", config.hydra.job.num,
                     " ".join(config.hydra.overrides.task))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        out_dir = Path(config.hydra.runtime.output_dir)
        from hydra.core.utils import JobStatus

        try:
            value = job_return.return_value  # re-raises the job's exception when it failed
            error = None if job_return.status == JobStatus.COMPLETED else "did not complete"
        except Exception as exc:  # noqa: BLE001  (summarise any failure, the launcher re-raises)
            value, error = None, f"{type(exc).__name__}: {exc}"[:300]
        if error is None and isinstance(value, dict):
            report = value
        else:
            report = {"table": str(config.get("table") or ""), "cell": {}, "seeds": [],
                      "new": 0, "skipped": 0, "failed": 0, "metric": None, "mean": None,
                      "std": None, "records": [], "error": error or "no cell report"}
            overrides = list(config.hydra.overrides.task)
            report["cell"] = {"overrides": " ".join(overrides)}
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "records.txt").write_text("".join(f"{p}\n" for p in report["records"]))
        (out_dir / "cell.json").write_text(json.dumps(report, indent=1, default=str))
        line = cell_line(report) if not report.get("error") else \
            f"{cell_name(report)} | failed: {report['error']}"
        if config.hydra.mode == RunMode.MULTIRUN:
            line = f"{self._progress(config)} {line}"
        log.info("%s", line)

    @staticmethod
    def _progress(config: DictConfig) -> str:
        sweep_dir = Path(config.hydra.sweep.dir)
        done = len(list(sweep_dir.glob("*/cell.json")))
        try:
            meta = json.loads((sweep_dir / _TOTAL_FILE).read_text())
        except (OSError, ValueError):
            return f"[job {config.hydra.job.num}, {done} done]"
        total, elapsed = meta.get("total"), time.time() - float(meta["start"])
        if not total:
            return f"[job {config.hydra.job.num}, {done} done]"
        eta = elapsed / done * (total - done) if done else math.nan
        eta_text = _eta(eta) if math.isfinite(eta) else "?"
        return f"[{done}/{total} cells, {_eta(elapsed)} elapsed, ETA {eta_text}]"

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        reports = []
        for path in sorted(sweep_dir.glob("*/cell.json"), key=lambda p: _job_num(p.parent.name)):
            try:
                reports.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        table = summary_table(reports)
        records = sorted({p for r in reports for p in r.get("records", [])})
        stores = sorted({str(Path(p).parent.resolve()) for p in records})
        text = (f"{table}\n\nrecords: {len(records)} in {', '.join(stores) or '(none)'}\n"
                f"sweep folder (per-cell logs, records.txt, cell.json): {sweep_dir.resolve()}\n")
        (sweep_dir / "summary.md").write_text(text)
        (sweep_dir / "records.txt").write_text("".join(f"{p}\n" for p in records))
        log.info("sweep summary (%d cell(s)):\n%s", len(reports), text)


def _job_num(name: str) -> int:
    return int(name) if name.isdigit() else 1 << 30
