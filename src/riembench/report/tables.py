"""Table specs: what a paper table groups by, which metric selects seeds, how it is rendered.

Why a registry of specs: every paper table goes through the same steps (load records, keep the
current config of each cell, select seeds, join the paper's numbers, render), and only the
what differs per table. Adding table 1-4 is therefore one module that registers a
:class:`TableSpec`; :func:`write_table` does the rest, and ``python -m riembench.report all``
picks it up without further wiring.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from riembench.errors import RiembenchError
from riembench.registry import Registry
from riembench.store import RunStore, identity

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


TABLES: Registry[TableSpec] = Registry("table")


def register(spec: TableSpec) -> TableSpec:
    """Register a spec under its name (a second spec with the same name is an error)."""
    return TABLES.register(spec.name)(spec)


def short(col: str) -> str:
    """``cell.family`` -> ``family``: record columns as they are named in the output tables."""
    return col.rsplit(".", 1)[-1]


def config_version(config: dict[str, Any]) -> str:
    """Hash of a record's identity without its seed: records of one cell made with different
    settings (e.g. before and after a default changed) get different versions."""
    ident = identity(config, 0)
    ident.pop("seed")
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]


def current_records(store_root: str | Path, table: str, group_cols: Sequence[str]) -> pd.DataFrame:
    """All records of ``table``, keeping per cell only the newest config version.

    Why: the store is append-only, so after a default changes a cell holds runs of both the old
    and the new setting; mixing them in one mean would describe neither. Older records are left
    out with a warning that says how many.
    """
    group_cols = list(group_cols)
    records = list(RunStore(store_root).iter_records(table))
    if not records:
        return pd.DataFrame()
    for rec in records:
        rec["config_version"] = config_version(rec.get("config") or {})
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


def build_table(name: str, store_root: str | Path) -> pd.DataFrame:
    """The tidy table ``name`` from the records in ``store_root`` (raises :class:`NoRecords`)."""
    from riembench.report.select import select_top_k

    spec = TABLES.get(name)
    group_cols = list(spec.group_cols)
    df = current_records(store_root, spec.record_table, group_cols)
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
    selected = selected.rename(columns={c: short(c) for c in group_cols})
    return spec.join_paper(selected)


def write_table(name: str, store_root: str | Path, out_dir: str | Path) -> list[Path]:
    """Render table ``name`` from the store into ``out_dir``; returns the files written.

    This is the one entry point for the CLI and for the runner (after a sweep). Raises
    :class:`NoRecords` (a ``LookupError``) when the store has nothing for the table, and
    :class:`~riembench.errors.UnknownEntry` for a name that is not registered.
    """
    spec = TABLES.get(name)
    table = build_table(name, store_root)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [render(table, out) for render in spec.renderers]
