"""Formatting shared by every table's renderers (row labels, LaTeX escaping)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


def missing(x: Any) -> bool:
    """A cell with no number (None, pandas' NA, NaN): rendered as "--", never as 0."""
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def too_few_seeds(deterministic: bool, n_selected: int, n_failed: int, k: int) -> bool:
    """Whether a cell's number deserves a "*": failed seeds, or fewer than ``k`` usable seeds
    of a method whose seeds differ. A deterministic cell (its records say so: the runner ran
    one seed of original, quant, dfq, prune, svd, ...) needs one seed, and one is not "too
    few"."""
    return n_failed > 0 or (not (deterministic is True) and n_selected < k)


def label(method: str, variant: str) -> str:
    """Row label: ``riem (fast)`` for a variant, so a shortened fit is never read as the full one."""
    return f"{method} ({variant})" if isinstance(variant, str) and variant else method


def tex_escape(text: str) -> str:
    """Method and family names carry underscores; LaTeX needs them (and friends) escaped."""
    out = text.replace("\\", "\x00")
    for a, b in (("_", r"\_"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("$", r"\$"),
                 ("{", r"\{"), ("}", r"\}")):
        out = out.replace(a, b)
    return out.replace("\x00", r"\textbackslash{}")
