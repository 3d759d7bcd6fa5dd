"""The paper's published numbers, read from the copy vendored in ``report/paper/``.

Why vendored: the numbers were transcribed into ``shared/paper_tables/`` next to the project,
but a user's clone has no ``../shared``; the reporter must still put the paper's value beside
ours. The copy is byte for byte (a test compares it with ``shared/`` when that exists), so the
transcription has one source of truth. Read through :mod:`importlib.resources` so it also
works from an installed package, not only from a checkout.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable

import pandas as pd

from riembench.core.errors import UnknownEntry

#: Folder (inside the ``riembench.report`` package) holding the vendored CSVs and README.
PAPER_DIR = "paper"


def paper_dir() -> Traversable:
    """The vendored folder as a resource (a plain path in a checkout or editable install)."""
    return resources.files("riembench.report").joinpath(PAPER_DIR)


def paper_files() -> dict[str, Traversable]:
    """Vendored CSVs by table name (``table5`` for ``table5_synthetic_matrix.csv``)."""
    out: dict[str, Traversable] = {}
    for entry in sorted(paper_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".csv"):
            out[entry.name.split("_", 1)[0]] = entry
    return out


def load_paper_table(name: str) -> pd.DataFrame:
    """One published table as a DataFrame, as transcribed (one measured value a row).

    ``name`` is the table name (``"table5"``), the file stem (``"table5_synthetic_matrix"``) or
    the file name. Values are read with pandas' defaults, so ``1.22E-01`` becomes a float and
    an empty citation becomes NaN.
    """
    files = paper_files()
    stem = name.removesuffix(".csv")
    for short, entry in files.items():
        if stem in (short, entry.name.removesuffix(".csv")):
            with entry.open("r", encoding="utf-8") as fh:
                return pd.read_csv(fh)
    raise UnknownEntry(f"no published table '{name}'; vendored: {', '.join(files)}")
