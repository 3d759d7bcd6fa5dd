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
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd

from riembench.report.fmt import label, missing, too_few_seeds
from riembench.report.fmt import tex_escape as _tex_escape
from riembench.report.paper import load_paper_table
from riembench.report.tables import TableSpec, register

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


# ---------------------------------------------------------------------------------- helpers

def sci(x: object) -> str:
    """Scientific notation as the paper prints it (``2.20E-04``); ``--`` for a missing value."""
    if missing(x):
        return "--"
    return f"{float(x):.2E}"


def columns(df: pd.DataFrame) -> list[tuple[int, float]]:
    """The (N, ratio) pairs present, sorted: the table's columns and the plot's panels."""
    return sorted({(int(n), float(r)) for n, r in zip(df["n"], df["ratio"])})


def families(df: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(df["family"]))


def _rows(df: pd.DataFrame, family: str) -> Iterator[tuple[str, dict[tuple[int, float], pd.Series]]]:
    """Rows of one family block in table order: (label, {(N, ratio): table row})."""
    part = df[df["family"] == family]
    for (method, variant), rows in part.groupby(["method", "variant"], sort=False):
        yield label(method, variant), {(int(r.n), float(r.ratio)): r for r in rows.itertuples()}


def _best(df: pd.DataFrame, family: str) -> dict[tuple[int, float], float]:
    """Our best (lowest) mean per column within a family: the bold cell."""
    part = df[df["family"] == family]
    out = {}
    for (n, r), col in part.groupby(["n", "ratio"]):
        if col["ours_mean"].notna().any():
            out[(int(n), float(r))] = float(col["ours_mean"].min())
    return out


def _marks(row) -> tuple[str, str]:
    """Footnote marks (LaTeX, markdown): a failed seed (dagger), fewer than K selected (star)."""
    tex, md = "", ""
    if row.n_failed > 0:
        tex, md = tex + r"\dagger", md + "†"
    if too_few_seeds(row.deterministic, row.n_selected, 0, K):
        tex, md = tex + "*", md + "*"
    return (f"$^{{{tex}}}$" if tex else ""), md


def _seed_note(df: pd.DataFrame) -> tuple[int, int]:
    """Most seeds any cell had (ok + failed) and K, for the caption's statement of the rule."""
    total = (df["n_seeds"] + df["n_failed"]).max()
    return int(total) if pd.notna(total) else 0, K


# ---------------------------------------------------------------------------------- renderers

def write_csv(df: pd.DataFrame, out: Path) -> Path:
    """Tidy CSV, one row per cell; 10 significant digits (exact enough, still readable)."""
    path = out / "table5.csv"
    df.to_csv(path, index=False, float_format="%.10g")
    return path


def write_tex(df: pd.DataFrame, out: Path) -> Path:
    """Booktabs table: a block per family, a column per (N, ratio), cells ``ours / paper``."""
    cols = columns(df)
    ns = list(dict.fromkeys(n for n, _ in cols))
    n_cols = len(cols) + 1
    fams = families(df)
    max_seeds, k = _seed_note(df)
    head1, rules, pos = ["Method"], [], 2
    for n in ns:
        width = sum(1 for c in cols if c[0] == n)
        head1.append(rf"\multicolumn{{{width}}}{{c}}{{$N = {n}$}}")
        rules.append(rf"\cmidrule(lr){{{pos}-{pos + width - 1}}}")
        pos += width
    head2 = [r"ratio"] + [f"{r:g}" for _, r in cols]
    lines = [
        "% generated by `python -m riembench.report table5` from run records; do not edit",
        "% needs \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\setlength{\tabcolsep}{4pt}",
        r"\begin{tabular}{l" + "c" * len(cols) + "}",
        r"\toprule",
        " & ".join(head1) + r" \\",
        "".join(rules),
        " & ".join(head2) + r" \\",
    ]
    for family in fams:
        best = _best(df, family)
        lines += [r"\midrule",
                  rf"\multicolumn{{{n_cols}}}{{l}}{{\textit{{family: {_tex_escape(family)}}}}} \\"]
        for row_label, cells in _rows(df, family):
            out_cells = _cell_texts(cells, cols, best, lambda t: rf"\textbf{{{t}}}", mark=0, with_std=False)
            lines.append(_tex_escape(row_label) + " & " + " & ".join(out_cells) + r" \\")
    fam_text = ", ".join(rf"\texttt{{{_tex_escape(f)}}}" for f in fams)
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{Table 5: normalized matrix-vector product error " + ERROR_TEX + " over test "
        r"probe vectors $x_k$ (lower is better), budget $\mathrm{ratio} \times N^2$ stored parameters. "
        rf"Matrix families: {fam_text}. Each cell is ours / paper; ours is the mean over the "
        rf"best {k} of {max_seeds} seeds ranked by the error on separate dev probes. The paper "
        r"does not state its matrix family, so its value is repeated in every family block. "
        r"Bold: our best value per column within a family. "
        r"$^{\dagger}$: some seeds failed (excluded, counted in the CSV); "
        rf"$^{{*}}$: fewer than {k} usable seeds. ``(fast)'': CPU-sized fit.}}",
        r"\label{tab:table5}",
        r"\end{table}",
    ]
    path = out / "table5.tex"
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell_texts(cells: dict, cols: list, best: dict, bold: Callable[[str], str], mark: int,
                with_std: bool) -> list[str]:
    """'ours / paper' per column for one row, our best per column in bold (LaTeX or markdown)."""
    texts = []
    for c in cols:
        row = cells.get(c)
        if row is None:
            texts.append("")
            continue
        ours = sci(row.ours_mean)
        if with_std and pd.notna(row.ours_std):
            ours += f" ± {row.ours_std:.1E}"
        if c in best and pd.notna(row.ours_mean) and float(row.ours_mean) == best[c]:
            ours = bold(ours)
        texts.append(f"{ours}{_marks(row)[mark]} / {sci(row.paper)}")
    return texts


def write_md(df: pd.DataFrame, out: Path) -> Path:
    """The same table as GitHub markdown (one table per family), with std for browsing."""
    cols = columns(df)
    max_seeds, k = _seed_note(df)
    lines = [
        "<!-- generated by `python -m riembench.report table5` from run records; do not edit -->",
        "# Table 5: normalized matrix-vector product error (ours / paper, lower is better)",
        "",
        (f"Error: {ERROR_MD} over test probe vectors; budget ratio × N² stored parameters. "
         f"Ours: mean ± std over the best {k} of {max_seeds} seeds ranked by the error on separate "
         "dev probes. The paper does not state its matrix family, so its value is repeated in "
         "every family. **Bold**: our best per column within a family. †: some seeds failed "
         f"(excluded; see table5.csv); *: fewer than {k} usable seeds. (fast): CPU-sized fit."),
        "",
    ]
    for family in families(df):
        best = _best(df, family)
        lines += [f"## family: `{family}`", "",
                  "| method | " + " | ".join(f"N={n}, ratio {r:g}" for n, r in cols) + " |",
                  "|:---" + "|---:" * len(cols) + "|"]
        for row_label, cells in _rows(df, family):
            out_cells = _cell_texts(cells, cols, best, lambda t: f"**{t}**", mark=1, with_std=True)
            lines.append(f"| {row_label} | " + " | ".join(out_cells) + " |")
        lines.append("")
    path = out / "table5.md"
    path.write_text("\n".join(lines))
    return path


def write_png(df: pd.DataFrame, out: Path) -> Path:
    """One panel per (family, N, ratio): ours (mean ± std) and the paper's value, log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    fams, cols = families(df), columns(df)
    n_rows = {f: df[df["family"] == f].groupby(["method", "variant"]).ngroups for f in fams}
    heights = [max(2.0, 0.32 * n_rows[f] + 1.2) for f in fams]
    fig, axes = plt.subplots(len(fams), len(cols), figsize=(max(3.6 * len(cols) + 1.2, 8.0), sum(heights)),
                             squeeze=False, gridspec_kw={"height_ratios": heights}, sharey="row")
    for i, family in enumerate(fams):
        labels = [lab for lab, _ in _rows(df, family)]
        ypos = {lab: y for y, lab in enumerate(labels)}
        for j, (n, r) in enumerate(cols):
            ax = axes[i][j]
            part = df[(df["family"] == family) & (df["n"] == n) & (df["ratio"] == r)]
            for row in part.itertuples():
                y = ypos[label(row.method, row.variant)]
                if pd.notna(row.ours_mean):
                    std = float(row.ours_std) if pd.notna(row.ours_std) else 0.0
                    lo = min(std, 0.9 * float(row.ours_mean))  # a log axis has no room below 0
                    ax.errorbar(row.ours_mean, y, xerr=[[lo], [std]], fmt="o", color="tab:blue",
                                ms=5, capsize=3, zorder=3)
                if pd.notna(row.paper):
                    ax.plot(row.paper, y, marker="D", mfc="none", mec="tab:red", ms=7, mew=1.5,
                            ls="none", zorder=4)
            ax.axvline(1 / math.sqrt(n), color="gray", ls="--", lw=1)
            ax.set_xscale("log")
            ax.set_yticks(range(len(labels)), labels, fontsize=8)
            ax.set_ylim(len(labels) - 0.5, -0.5)
            ax.grid(axis="x", which="major", alpha=0.3)
            ax.tick_params(axis="x", labelsize=8)
            ax.set_title(f"{family}: N={n}, ratio {r:g}", fontsize=9)
            if i == len(fams) - 1:
                ax.set_xlabel("matvec error (log, lower is better)", fontsize=8)
    handles = [
        Line2D([], [], marker="o", color="tab:blue", ls="none", label=f"ours (mean ± std, best {K} seeds by dev)"),
        Line2D([], [], marker="D", mfc="none", mec="tab:red", ls="none", label="paper"),
        Line2D([], [], color="gray", ls="--", label="zero predictor (1/√N)"),
    ]
    fig.legend(handles=handles, loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    path = out / "table5.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


TABLE5 = register(TableSpec(
    name="table5",
    record_table="table5",
    group_cols=("cell.family", "cell.method", "cell.variant", "cell.n", "cell.ratio"),
    dev_col="metrics.dev_error",
    test_col="metrics.test_error",
    lower_is_better=True,
    k=K,
    join_paper=join_paper,
    renderers=(write_csv, write_tex, write_md, write_png),
    extras={"params": ("cost.params", "max"), "budget": ("cost.budget", "max")},
    run_hint="run `make table5` or `riembench experiment=table5` first",
    description="normalized matrix-vector product error on synthetic N x N matrices",
))
