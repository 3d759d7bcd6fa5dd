"""The reporter: paper tables from run records only (CSV, LaTeX, markdown, plots).

Why records only: every number in a table must trace back to a run (its record key and git
revision are in the CSV), never to a constant typed into the reporter. The paper's numbers come
from the vendored transcription (:mod:`riembench.report.paper`).

Each table module keeps its own paper join and says which cells and points to show; the files
(tidy CSV, LaTeX through pandas' Styler, markdown, a figure) are written by the one renderer,
:mod:`riembench.report.render`.

Public API: :func:`write_table` (render one table; used by the CLI and the runner),
:func:`build_table` (the tidy DataFrame without writing), :func:`select_top_k` (the seed rule),
:func:`load_paper_table`, and the spec registry :data:`TABLES` / :func:`register`.
"""

from riembench.report import imagenet, table1, table4, table5, table_bytes  # noqa: F401  (each registers)
from riembench.report.paper import load_paper_table
from riembench.report.select import select_top_k
from riembench.report.tables import TABLES, NoRecords, TableSpec, build_table, register, write_table

__all__ = ["TABLES", "NoRecords", "TableSpec", "build_table", "load_paper_table", "register",
           "select_top_k", "write_table"]
