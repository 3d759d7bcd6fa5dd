"""The committed results stay what they are: every record in tables/records keeps its key under
the current identity rules, and every committed table is what the reporter writes from those
records today, byte for byte (CSV, markdown, LaTeX). A change that moves a key or a number has
to regenerate and commit the table (``make tables``) in the same change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from riembench.config.identity import run_key
from riembench.harness.plans import plan_cells, plan_names
from riembench.report.tables import write_table

ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "tables" / "records"
COMMITTED = sorted({p.stem for p in (ROOT / "tables").glob("*.csv")})


def _records() -> list[Path]:
    return [p for p in RECORDS.rglob("*.json")
            if "artifacts" not in p.parts and not p.name.startswith(".")]


def test_every_committed_record_keeps_its_key():
    moved = []
    for path in _records():
        record = json.loads(path.read_text())
        key = run_key(record["config"], record["seed"])
        if not (key == record["key"] == path.stem):
            moved.append(f"{path.relative_to(ROOT)}: recorded {record['key']}, now {key}")
    assert _records() and not moved, "\n".join(moved)


@pytest.mark.parametrize("table", COMMITTED)
def test_committed_tables_regenerate_byte_identical(table, tmp_path, monkeypatch):
    monkeypatch.setenv("RIEMBENCH_CACHE", str(tmp_path / "cache"))
    cells = plan_cells(table) if table in plan_names() else None  # as `make tables` does
    written = write_table(table, RECORDS, tmp_path / "out", cells=cells)
    compared = 0
    for path in written:
        if path.suffix not in (".csv", ".md", ".tex"):
            continue
        committed = ROOT / "tables" / path.name
        assert committed.exists(), f"{path.name} is written but not committed"
        assert path.read_bytes() == committed.read_bytes(), f"{path.name} differs"
        compared += 1
    assert compared >= 2
