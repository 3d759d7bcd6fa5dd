"""The paper's seed rule: per cell, the top k seeds by a dev metric; mean and std on test.

Why a dev metric: choosing seeds on the reported (test) metric would bias the table downwards;
the paper picks the best three of ten runs, so we pick on held-out dev probes and report test.
The rule is generic (any group columns, any direction) so tables 1-4 reuse it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

#: columns of the result besides the group columns, in order
RESULT_COLUMNS = ["mean", "std", "n_seeds", "n_selected", "n_failed", "selected_seeds",
                  "record_keys", "git_revs", "deterministic"]


def select_top_k(df: pd.DataFrame, group_cols: Sequence[str], dev_col: str, test_col: str,
                 k: int = 3, lower_is_better: bool = True, *, seed_col: str = "seed",
                 status_col: str = "status", key_col: str = "key",
                 rev_col: str = "git_rev", det_col: str = "deterministic") -> pd.DataFrame:
    """One row per group: ``mean``/``std`` of ``test_col`` over the k best seeds by ``dev_col``.

    - A record counts as usable ("ok") when its status is ``"ok"`` and both metrics are finite;
      everything else (failed seeds, or an ok status without metrics) is never selected but is
      counted in ``n_failed``, so a diverging method shows in the table instead of vanishing.
    - ``n_seeds`` counts usable records; a group with fewer than k of them uses what it has and
      ``n_selected`` says how many (0 gives NaN mean/std: the cell exists but has no number).
    - Ties on the dev metric are broken by the lower seed, so the selection is deterministic.
    - ``std`` is the sample std (ddof=1) of the selected test values, NaN for a single seed
      (one value says nothing about spread; 0 would claim it does).
    - ``selected_seeds``, ``record_keys`` and ``git_revs`` are comma-joined (in selection order
      for seeds and keys), so every number in a table points back at the records behind it.
    - ``deterministic``: every record of the cell says its method's result does not depend on
      the seed (the runner then ran one seed): one seed is then the whole cell, not "too few".
      Read from the records, so a table never asks the method registry what a run was.
    """
    group_cols = list(group_cols)
    rows: list[dict] = []
    if df.empty:
        return pd.DataFrame(columns=group_cols + RESULT_COLUMNS)
    for group, part in df.groupby(group_cols, dropna=False, sort=False):
        dev = _numeric(part, dev_col)
        test = _numeric(part, test_col)
        status_ok = part[status_col] == "ok" if status_col in part else True
        usable = status_ok & dev.map(_finite) & test.map(_finite)
        ok = part[usable].assign(_dev=dev[usable], _test=test[usable])
        ok = ok.sort_values(["_dev", seed_col], ascending=[lower_is_better, True], kind="mergesort")
        top = ok.head(k)
        values = top["_test"].astype(float)
        keys = group if isinstance(group, tuple) else (group,)
        rows.append({
            **dict(zip(group_cols, keys)),
            "mean": float(values.mean()) if len(values) else math.nan,
            "std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
            "n_seeds": len(ok),
            "n_selected": len(top),
            "n_failed": int(len(part) - len(ok)),
            "selected_seeds": ",".join(str(int(s)) for s in top[seed_col]),
            "record_keys": ",".join(str(x) for x in top[key_col]) if key_col in top else "",
            "git_revs": ",".join(sorted({str(x) for x in top[rev_col]})) if rev_col in top else "",
            "deterministic": bool(det_col in part and part[det_col].map(_true).all()),
        })
    return pd.DataFrame(rows, columns=group_cols + RESULT_COLUMNS)


def _numeric(part: pd.DataFrame, col: str) -> pd.Series:
    """A metric column as floats; NaN where it is missing (failed records carry no metrics)."""
    if col not in part:
        return pd.Series(math.nan, index=part.index, dtype=float)
    return pd.to_numeric(part[col], errors="coerce").astype(float)


def _true(x: object) -> bool:
    """A record's ``deterministic`` flag; a record written before the runner recorded it
    (missing, NaN) counts as seed-dependent."""
    return x is True or (isinstance(x, (int, float)) and not isinstance(x, bool) and x == 1) \
        or str(x).lower() == "true"


def _finite(x: object) -> bool:
    try:
        return math.isfinite(float(x))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
