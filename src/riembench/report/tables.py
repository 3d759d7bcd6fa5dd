"""Table specs: what a paper table groups by, which metric selects seeds, how it is rendered.

Why a registry of specs: every paper table goes through the same steps (load records, keep the
current config of each cell, select seeds, join the paper's numbers, render), and only the
what differs per table. Adding table 1-4 is therefore one module that registers a
:class:`TableSpec`; :func:`write_table` does the rest, and ``python -m riembench.report all``
picks it up without further wiring.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from riembench.config.identity import config_version
from riembench.core.errors import RiembenchError
from riembench.report.registry import TABLES
from riembench.store.records import RunStore

log = logging.getLogger("riembench.report")

#: a renderer writes one file for a table (CSV, LaTeX, markdown, plot, ...) and returns its path
Renderer = Callable[[pd.DataFrame, Path], Path]


class NoRecords(RiembenchError, LookupError):
    """The store has no records for a table: nothing to report, and the user should run it first."""


@dataclass(frozen=True)
class TableSpec:
    """Everything table-specific about turning run records into one paper table.

    ``group_cols`` are flattened record columns (``cell.family`` ...); in the selected frame
    they are shortened to their last component (``family``). ``extras`` adds per-cell columns
    aggregated over the cell's records, as ``{out_name: (record_column, pandas_agg)}`` (e.g.
    the parameter count and budget), since the seed rule itself only knows metrics.
    ``join_paper`` receives the selected frame (``mean``, ``std``, counts, provenance) and returns
    the final tidy table (paper column, ratios, row order); each renderer writes one file of it.
    """

    name: str
    record_table: str
    group_cols: tuple[str, ...]
    dev_col: str
    test_col: str
    join_paper: Callable[[pd.DataFrame], pd.DataFrame]
    renderers: tuple[Renderer, ...]
    lower_is_better: bool = True
    k: int = 3
    extras: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    #: how to produce the records, shown when the store has none
    run_hint: str = ""
    description: str = ""


def short(col: str) -> str:
    """``cell.family`` -> ``family``: record columns as they are named in the output tables."""
    return col.rsplit(".", 1)[-1]


def current_records(store_root: str | Path, table: str, group_cols: Sequence[str],
                    commands: Mapping[str, str] | None = None) -> pd.DataFrame:
    """All records of ``table``, keeping per cell only the newest config version.

    Why: the store is append-only, so after a default changes a cell holds runs of both the old
    and the new setting; mixing them in one mean would describe neither. Older records are left
    out with a warning that says how many.

    ``commands`` (config version -> the command that runs that cell, from the table's plan)
    keeps only the records of the plan's cells, so an ad-hoc run never enters a paper table,
    and gives each record its ``command``.
    """
    group_cols = list(group_cols)
    records = list(RunStore(store_root).iter_records(table))
    for rec in records:
        rec["config_version"] = config_version(rec.get("config") or {})
    if commands is not None:
        planned = [r for r in records if r["config_version"] in commands]
        if len(planned) < len(records):
            log.info("%s: %d record(s) of cells outside the table's plan left out (--all-records "
                     "renders them too)", table, len(records) - len(planned))
        records = planned
        for rec in records:
            rec["command"] = commands[rec["config_version"]]
    if not records:
        return pd.DataFrame()
    df = pd.json_normalize(records)
    for col in group_cols:  # a record that does not set a coordinate gets "" (not NaN: groupable)
        if col not in df:
            df[col] = ""
        df[col] = df[col].where(df[col].notna(), "")
    if "created_at" not in df:
        df["created_at"] = ""
    newest = df.groupby(group_cols + ["config_version"], dropna=False)["created_at"].max().reset_index()
    newest = newest.sort_values("created_at", kind="mergesort").groupby(group_cols, dropna=False).tail(1)
    kept = df.merge(newest[group_cols + ["config_version"]], on=group_cols + ["config_version"])
    if len(kept) < len(df):
        log.warning("%s: %d record(s) from older configs of the same cells left out", table,
                    len(df) - len(kept))
    warn_mixed_revisions(kept, group_cols, table)
    return kept


def warn_mixed_revisions(df: pd.DataFrame, group_cols: Sequence[str], table: str) -> None:
    """Warn for each cell whose records ran at more than one code revision: same config, but a
    fix in between may have changed the numbers the cell averages."""
    if "git_rev" not in df or df.empty:
        return
    revs = df.groupby(list(group_cols), dropna=False)["git_rev"].agg(lambda s: sorted(set(s)))
    for cell, found in revs[revs.map(len) > 1].items():
        log.warning("%s: cell %s mixes %d code revisions (%s); rerun it with force=true at one "
                    "revision to make it uniform", table, cell, len(found), ", ".join(found))


def build_table(name: str, store_root: str | Path, cells: Sequence[Any] | None = None) -> pd.DataFrame:
    """The tidy table ``name`` from the records in ``store_root`` (raises :class:`NoRecords`).

    ``cells`` (:func:`riembench.harness.plans.plan_cells`): only the records of these cells count, and
    each row gets the ``command`` that reproduces it; without them every record of the table
    counts and ``command`` is the one each record was made with.
    """
    from riembench.report.select import select_top_k

    spec = TABLES.get(name)
    group_cols = list(spec.group_cols)
    commands = {c.version: c.command() for c in cells} if cells is not None else None
    df = current_records(store_root, spec.record_table, group_cols, commands)
    if df.empty:
        hint = f" ({spec.run_hint})" if spec.run_hint else ""
        raise NoRecords(f"no records for table '{name}' in store '{store_root}'{hint}")
    selected = select_top_k(df, group_cols, spec.dev_col, spec.test_col, spec.k, spec.lower_is_better)
    if spec.extras:
        aggs = {out: (col, how) for out, (col, how) in spec.extras.items() if col in df}
        extra = df.groupby(group_cols, dropna=False, sort=False).agg(**aggs).reset_index()
        for out in spec.extras:
            if out not in extra:
                extra[out] = pd.NA
        selected = selected.merge(extra, on=group_cols, how="left")
    per_cell = {"command": _row_commands(df, group_cols),
                "deterministic": _per_cell(selected, group_cols, "deterministic")}
    selected = selected.rename(columns={c: short(c) for c in group_cols})
    table = spec.join_paper(selected)
    return _reattach(table, [short(c) for c in group_cols], per_cell)


def _coordinate(value: Any) -> str:
    """A cell coordinate compared across the selected and the rendered frame (where a table
    may have turned ``"1000"`` into ``1000.0``)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        return repr(float(value))
    except (TypeError, ValueError):
        return str(value)


def _row_commands(df: pd.DataFrame, group_cols: list[str]) -> dict[tuple[str, ...], str]:
    """Per cell, the command(s) its records were made by (``; ``-joined when several)."""
    if "command" not in df:
        return {}
    out = {}
    for group, part in df.groupby(group_cols, dropna=False, sort=False):
        keys = group if isinstance(group, tuple) else (group,)
        commands = sorted({str(c) for c in part["command"] if isinstance(c, str) and c})
        out[tuple(_coordinate(k) for k in keys)] = " ; ".join(commands)
    return out


def _per_cell(selected: pd.DataFrame, group_cols: list[str], col: str) -> dict[tuple[str, ...], Any]:
    return {tuple(_coordinate(v) for v in row[:-1]): row[-1]
            for row in selected[[*group_cols, col]].itertuples(index=False, name=None)}


#: per-cell facts every tidy table carries whatever columns its ``join_paper`` keeps, and their
#: value on a row with no records of ours (the paper's published-only baselines)
CELL_FACTS = {"deterministic": False, "command": ""}


def _reattach(table: pd.DataFrame, cols: list[str],
              per_cell: dict[str, dict[tuple[str, ...], Any]]) -> pd.DataFrame:
    """The tidy table with ``deterministic`` (for the seed-count marks) and ``command`` (the
    command that reproduces the row) looked up by each row's cell coordinates."""
    table = table.copy()
    coords = ([tuple(_coordinate(v) for v in row)
               for row in table[cols].itertuples(index=False, name=None)]
              if all(c in table for c in cols) else [None] * len(table))
    for col, empty in CELL_FACTS.items():
        if col == "command" or col not in table:
            table[col] = [per_cell[col].get(c, empty) if c is not None else empty
                          for c in coords]
    return table


def append_commands(path: Path, table: pd.DataFrame, cols: list[str]) -> Path:
    """Add a "Commands" section to a rendered markdown table: each row's cell coordinates and
    the command that reproduces it (the renderers lay out the numbers; this says where they
    come from)."""
    rows = table[table["command"].astype(str) != ""]
    text = path.read_text()
    if rows.empty or all(str(c) in text for c in rows["command"]):  # the renderer shows them
        return path
    shown = [c for c in cols if c in rows and rows[c].astype(str).str.len().gt(0).any()]
    lines = ["", "### Commands", "",
             "Every row comes from the records of one command of the table's plan:", "",
             "| " + " | ".join([*shown, "command"]) + " |",
             "|" + "---|" * (len(shown) + 1)]
    for r in rows.itertuples(index=False):
        cmd = str(r.command).replace("|", "\\|")
        lines.append("| " + " | ".join([*(str(getattr(r, c)) for c in shown), f"`{cmd}`"]) + " |")
    with open(path, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def write_table(name: str, store_root: str | Path, out_dir: str | Path,
                cells: Sequence[Any] | None = None) -> list[Path]:
    """Render table ``name`` from the store into ``out_dir``; returns the files written.

    This is the one entry point for the CLI and for the runner (after a sweep). Raises
    :class:`NoRecords` (a ``LookupError``) when the store has nothing for the table, and
    :class:`~riembench.core.errors.UnknownEntry` for a name that is not registered.
    """
    spec = TABLES.get(name)
    table = build_table(name, store_root, cells)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [render(table, out) for render in spec.renderers]
    for path in paths:
        if path.suffix == ".md":
            append_commands(path, table, [short(c) for c in spec.group_cols])
    return paths
