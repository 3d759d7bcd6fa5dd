"""The reporter: paper tables from run records only (CSV, LaTeX, markdown, plots).

Why records only: every number in a table must trace back to a run (its record key and git
revision are in the CSV), never to a constant typed into the reporter. The paper's numbers come
from the vendored transcription (:mod:`riembench.report.paper`).

Each table module keeps its own paper join and says which cells and points to show; the files
(tidy CSV, LaTeX through pandas' Styler, markdown, a figure) are written by the one renderer,
:mod:`riembench.report.render`. :data:`riembench.report.registry.TABLES` names every table's spec;
:func:`riembench.report.tables.write_table` renders one, :func:`~riembench.report.tables.build_table`
gives its tidy frame, :func:`riembench.report.select.select_top_k` is the seed rule.
"""
