"""Table 5: normalized matrix-vector product error on synthetic matrices (lower is better).

Outputs (``table5.csv``, ``.tex``, ``.md``, ``.png``) put our value beside the paper's for each
(method, N, ratio). The paper does not say which matrix family it used, so its value is shown
beside every family we run; the family is named on every row/block so the comparison is read
for what it is. Methods the paper does not have (e.g. ``svd``) get an empty paper value, and a
variant (e.g. ``riem (fast)``, a CPU-sized fit) is compared with the paper's method of the same
name but labelled as such.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from riembench.report import fmt
from riembench.report.fmt import Text, too_few_seeds
from riembench.report.paper import load_paper_table
from riembench.report.render import Figure, Presentation, renderers, size_points
from riembench.report.tables import TableSpec

#: the paper's row order; methods it does not have (e.g. svd) follow, alphabetically
PAPER_ORDER = ["isomap", "autoencoder", "deep_autoencoder", "lle", "nystroem", "kernel_pca",
               "lpnorm", "riem"]
KEYS = ["family", "method", "variant", "n", "ratio"]
COLUMNS = KEYS + ["ours_mean", "ours_std", "n_seeds", "n_selected", "n_failed", "selected_seeds",
                  "params", "budget", "paper", "ours_over_paper", "beats_paper", "record_keys",
                  "git_revs"]
K = 3
ERROR_TEX = r"$\frac{1}{K}\sum_k \|\hat A x_k - A x_k\|_2 / (\|A x_k\|_2 \sqrt{N})$"
ERROR_MD = "mean_k ‖Â x_k − A x_k‖₂ / (‖A x_k‖₂ √N)"


def _ratio_key(x: float) -> float:
    """Ratios compared after rounding, so 0.1 from YAML and 0.1 from the CSV always match."""
    return round(float(x), 6)


def join_paper(selected: pd.DataFrame) -> pd.DataFrame:
    """Our selected values plus the paper's, their ratio, and the table's row order."""
    paper = load_paper_table("table5").rename(
        columns={"matrix_n": "n", "compute_ratio": "ratio", "error": "paper"})
    paper["n"] = paper["n"].astype(int)
    paper["ratio"] = paper["ratio"].map(_ratio_key)
    df = selected.rename(columns={"mean": "ours_mean", "std": "ours_std"}).copy()
    df["variant"] = df["variant"].fillna("").astype(str)
    df["n"] = df["n"].astype(int)
    df["ratio"] = df["ratio"].map(_ratio_key)
    df = df.merge(paper[["method", "n", "ratio", "paper"]], on=["method", "n", "ratio"], how="left")
    df["ours_over_paper"] = df["ours_mean"] / df["paper"]
    beats = pd.array([pd.NA] * len(df), dtype="boolean")
    both = df["ours_mean"].notna() & df["paper"].notna()
    beats[both.to_numpy()] = (df["ours_mean"] < df["paper"])[both].to_numpy()
    df["beats_paper"] = beats
    for col in ("params", "budget"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["_order"] = df["method"].map(lambda m: PAPER_ORDER.index(m) if m in PAPER_ORDER else len(PAPER_ORDER))
    df = df.sort_values(["family", "_order", "method", "variant", "n", "ratio"], kind="mergesort")
    return df[COLUMNS].reset_index(drop=True)


# ------------------------------------------------------------------------------ presentation

def columns(df: pd.DataFrame) -> list[tuple[int, float]]:
    """The (N, ratio) pairs present, sorted: the table's columns."""
    return sorted({(int(n), float(r)) for n, r in zip(df["n"], df["ratio"])})


def families(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["family"]))


def _best(df: pd.DataFrame) -> dict[tuple[str, int, float], float]:
    """Our best (lowest) mean per (family, N, ratio): the bold cell."""
    out = {}
    for (family, n, r), col in df.groupby(["family", "n", "ratio"]):
        if col["ours_mean"].notna().any():
            out[(family, int(n), float(r))] = float(col["ours_mean"].min())
    return out


def _seed_note(df: pd.DataFrame) -> int:
    """Most seeds any cell had (ok + failed), for the caption's statement of the rule."""
    total = (df["n_seeds"] + df["n_failed"]).max()
    return int(total) if pd.notna(total) else 0


def _cell(row: Any, best: dict) -> Text:
    """``ours ± std / paper``, ours in bold where it is the family's best in the column."""
    ours = fmt.mean_std(row.ours_mean, row.ours_std,
                        fmt.shows_std(row.ours_std, row.ours_mean, row.n_selected,
                                      getattr(row, "deterministic", None)),
                        scientific=True, std_digits=1)
    if best.get((row.family, int(row.n), float(row.ratio))) == row.ours_mean:
        ours = fmt.bold(ours)
    few = too_few_seeds(getattr(row, "deterministic", False), row.n_selected, 0, K)
    return fmt.join([ours + fmt.marks(row.n_failed > 0, few), fmt.sci(row.paper)])


def present(df: pd.DataFrame) -> Presentation:
    """A block per matrix family, a row per method, a column per (N, ratio)."""
    cols = columns(df)
    best = _best(df)
    headers = [(Text("", ""), Text.plain("Method"))] + [
        (Text(f"N = {n}", f"$N = {n}$"), Text.plain(f"ratio {r:g}")) for n, r in cols]
    rows, blocks, sources = [], [], []
    for (family, method, variant), part in df.groupby(["family", "method", "variant"], sort=False):
        cells = {(int(r.n), float(r.ratio)): r for r in part.itertuples()}
        rows.append([fmt.method_name(method, variant)]
                    + [_cell(cells[c], best) if c in cells else fmt.EMPTY for c in cols])
        blocks.append(Text("family: ", "family: ") + fmt.family_name(family))
        sources.append(list(df.index.get_indexer(part.index)))  # positions in the tidy frame
    body = pd.DataFrame(rows, columns=pd.MultiIndex.from_tuples(headers))
    note = (Text(f"Error: {ERROR_MD}", f"Error {ERROR_TEX}")
            + Text.plain(" over test probe vectors (lower is better); budget ratio × N² stored "
                         "parameters. Each cell is ours / paper; ours is the mean ± std over the "
                         f"best {K} of {_seed_note(df)} seeds ranked by the error on separate dev "
                         "probes (no std where the seeds give the same matrix). The paper does "
                         "not state its matrix family, so its value is repeated in every family. ")
            + fmt.bold(Text.plain("Bold")) + Text.plain(
                ": our best per column within a family. †: some seeds failed (excluded; "
                f"see table5.csv); *: fewer than {K} usable seeds. (fast): a CPU-sized fit."))
    return Presentation("Table 5", Text.plain("normalized matrix-vector product error, ours / "
                                              "paper"), note, body, "l" + "r" * len(cols),
                        blocks, sources)


def plot(df: pd.DataFrame) -> Figure:
    """Error against the compute ratio, a panel per (family, N), the paper's points beside."""
    panel = lambda r: f"{r.family}: N={int(r.n)}"
    hlines = {panel(r): [(1 / math.sqrt(int(r.n)), "zero predictor (1/√N)")]
              for r in df.itertuples()}
    points = size_points(df, panel, ("ratio", "ours_mean", "ours_std"), ("ratio", "paper"))
    return Figure(points, "compute ratio (budget / N²)", "matvec error (log, lower is better)",
                  logx=False, logy=True, hlines=hlines)


TABLE5 = (TableSpec(
    name="table5",
    record_table="table5",
    group_cols=("cell.family", "cell.method", "cell.variant", "cell.n", "cell.ratio"),
    dev_col="metrics.dev_error",
    test_col="metrics.test_error",
    lower_is_better=True,
    k=K,
    join_paper=join_paper,
    renderers=renderers("table5", present, plot, float_format="%.10g"),
    extras={"params": ("cost.params", "max"), "budget": ("cost.budget", "max")},
    run_hint="run `make table5` or `riembench experiment=table5` first",
    description="normalized matrix-vector product error on synthetic N x N matrices",
))
