"""Table 1: FC-layer compression of LeNet-5 and ResNet-9 (top-1 %, higher is better).

Each row is one (backbone, dataset, method, size) cell: our top-1 (mean over the best 3 of the
seeds by dev accuracy, on the test split) with the parameter count of the compressed layers,
beside the paper's row for the same backbone, method and dataset. Two comparisons are given
because they answer different questions:

* ``ours - paper``: only meaningful on the same data (MNIST, CIFAR-100 with the paper's
  architectures); on ``digits`` (the embedded stand-in for MNIST) it compares different tasks,
  and the table says so on every such row;
* ``delta vs original``: compressed minus the original model of the same table, ours and the
  paper's: what compression costs, comparable across datasets.

When the paper has two sizes for a method (RieM on ResNet-9: 33.4K and 51.5K), our row is
matched with the paper's size closest to our parameter count.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from riembench.report.fmt import label, missing, tex_escape, too_few_seeds
from riembench.report.paper import load_paper_table
from riembench.report.tables import TableSpec, register

#: our datasets -> the paper's dataset they stand for
PAPER_DATASET = {"mnist": "mnist", "cifar100": "cifar100", "digits": "mnist"}
METHOD_ORDER = ["original", "lpnorm-p1", "lpnorm-p2", "lpnorm-p3", "riem", "svd"]
KEYS = ["backbone", "dataset", "method", "variant", "paper_method", "size"]
COLUMNS = KEYS + ["params", "ours_mean", "ours_std", "n_seeds", "n_selected", "n_failed",
                  "selected_seeds", "paper_dataset", "paper_params", "paper", "ours_minus_paper",
                  "ours_delta_vs_original", "paper_delta_vs_original", "same_data",
                  "record_keys", "git_revs"]
K = 3


def parse_count(text: object) -> float:
    """'59.3K' -> 59300.0 (the paper's way of writing parameter counts)."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return math.nan
    match = re.fullmatch(r"\s*([\d.]+)\s*([KM]?)\s*", str(text))
    if not match:
        return math.nan
    scale = {"": 1, "K": 1e3, "M": 1e6}[match.group(2)]
    return float(match.group(1)) * scale


def count_text(x: object) -> str:
    """59134 -> '59.1K', as the paper prints counts."""
    if missing(x):
        return "--"
    x = float(x)
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}K"


def join_paper(selected: pd.DataFrame) -> pd.DataFrame:
    paper = load_paper_table("table1")
    paper["paper_params"] = paper["fc_params"].map(parse_count)
    df = selected.rename(columns={"mean": "ours_mean", "std": "ours_std"}).copy()
    df["variant"] = df["variant"].fillna("").astype(str)
    df["params"] = pd.to_numeric(df["params"], errors="coerce")
    df["paper_dataset"] = df["dataset"].map(PAPER_DATASET).fillna("")
    df["same_data"] = df["dataset"] == df["paper_dataset"]
    matched = [_match(row, paper) for row in df.itertuples()]
    df["paper_params"] = [m[0] for m in matched]
    df["paper"] = [m[1] for m in matched]
    df["ours_minus_paper"] = df["ours_mean"] - df["paper"]
    ours_orig = _original(df, "ours_mean")
    paper_orig = {(r.backbone, r.dataset): r.top1 for r in paper[paper["method"] == "original"].itertuples()}
    df["ours_delta_vs_original"] = [
        row.ours_mean - ours_orig.get((row.backbone, row.dataset), math.nan)
        if row.paper_method != "original" else math.nan for row in df.itertuples()]
    df["paper_delta_vs_original"] = [
        row.paper - paper_orig.get((row.backbone, row.paper_dataset), math.nan)
        if row.paper_method != "original" else math.nan for row in df.itertuples()]
    df["_order"] = df["paper_method"].map(lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99)
    df = df.sort_values(["backbone", "dataset", "_order", "params"], kind="mergesort")
    return df[COLUMNS].reset_index(drop=True)


def _match(row, paper: pd.DataFrame) -> tuple[float, float]:
    """The paper's (params, top-1) for our row: same backbone/method/dataset, closest size."""
    cand = paper[(paper["backbone"] == row.backbone) & (paper["method"] == row.paper_method)
                 & (paper["dataset"] == row.paper_dataset)]
    if cand.empty:
        return math.nan, math.nan
    if len(cand) > 1 and pd.notna(row.params):
        cand = cand.iloc[(cand["paper_params"] - row.params).abs().argsort()[:1]]
    first = cand.iloc[0]
    return float(first["paper_params"]), float(first["top1"])


def _original(df: pd.DataFrame, col: str) -> dict[tuple[str, str], float]:
    orig = df[df["paper_method"] == "original"]
    return {(r.backbone, r.dataset): getattr(r, col) for r in orig.itertuples()}


# ---------------------------------------------------------------------------------- renderers

def _pct(x: object, signed: bool = False) -> str:
    if missing(x):
        return "--"
    return f"{float(x):+.2f}" if signed else f"{float(x):.2f}"


def _ours(row, pm: str) -> str:
    text = _pct(row.ours_mean)
    if pd.notna(row.ours_std):
        text += f" {pm} {row.ours_std:.2f}"
    if too_few_seeds(row.deterministic, row.n_selected, row.n_failed, K):
        text += "*"
    return text


def write_csv(df: pd.DataFrame, out: Path) -> Path:
    path = out / "table1.csv"
    df.to_csv(path, index=False, float_format="%.6g")
    return path


def write_md(df: pd.DataFrame, out: Path) -> Path:
    lines = [
        "<!-- generated by `python -m riembench.report table1` from run records; do not edit -->",
        "# Table 1: FC-layer compression, top-1 % (ours / paper)",
        "",
        (f"Ours: mean ± std over the best {K} seeds by dev accuracy, on the test split "
         "(original: one trained model). Params: stored numbers of the compressed (FC) layers, "
         "biases included. Δ: compressed minus the original of the same table. "
         "`digits` is the embedded stand-in for MNIST (scikit-learn's 8x8 digits upscaled): its "
         "paper column is the paper's MNIST value, a different task; compare the Δ columns. "
         "*: fewer than 3 usable seeds or failed seeds (see table1.csv)."),
        "",
        ("| backbone | data | method | size | params (ours / paper) | top-1 ours | top-1 paper "
        "| Δ ours | Δ paper |"),
        "|:--|:--|:--|:--|--:|--:|--:|--:|--:|",
    ]
    for row in df.itertuples():
        data = row.dataset if row.same_data else f"{row.dataset} (paper: {row.paper_dataset})"
        lines.append(
            f"| {row.backbone} | {data} | {label(row.paper_method, row.variant)} | {row.size or '--'} "
            f"| {count_text(row.params)} / {count_text(row.paper_params)} | {_ours(row, '±')} "
            f"| {_pct(row.paper)} | {_pct(row.ours_delta_vs_original, True)} "
            f"| {_pct(row.paper_delta_vs_original, True)} |")
    path = out / "table1.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tex(df: pd.DataFrame, out: Path) -> Path:
    lines = [
        "% generated by `python -m riembench.report table1` from run records; do not edit",
        "% needs \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{lllrrrrr}",
        r"\toprule",
        (r"Backbone & Data & Method & Params (ours/paper) & Ours & Paper & $\Delta$ ours & "
        r"$\Delta$ paper \\"),
    ]
    previous = None
    for row in df.itertuples():
        block = (row.backbone, row.dataset)
        if block != previous:
            lines.append(r"\midrule")
            previous = block
        data = row.dataset if row.same_data else f"{row.dataset}$^\\ddagger$"
        lines.append(" & ".join([
            tex_escape(row.backbone), data, tex_escape(label(row.paper_method, row.variant)),
            f"{count_text(row.params)} / {count_text(row.paper_params)}",
            _ours(row, r"$\pm$"), _pct(row.paper), _pct(row.ours_delta_vs_original, True),
            _pct(row.paper_delta_vs_original, True)]) + r" \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        (rf"\caption{{Table 1: top-1 accuracy (\%) with the FC layers compressed. Ours: mean "
        rf"$\pm$ std over the best {K} seeds by dev accuracy, on the test split. Params: stored "
        r"numbers of the FC layers, biases included. $\Delta$: minus the original of the same "
        r"table. $^\ddagger$: scikit-learn digits, the embedded stand-in for MNIST; its paper "
        r"column is MNIST (a different task). *: fewer than 3 usable seeds.}"),
        r"\label{tab:table1}",
        r"\end{table}",
    ]
    path = out / "table1.tex"
    path.write_text("\n".join(lines) + "\n")
    return path


TABLE1 = register(TableSpec(
    name="table1",
    record_table="table1",
    group_cols=tuple(f"cell.{k}" for k in KEYS),
    dev_col="metrics.dev_acc",
    test_col="metrics.test_acc",
    lower_is_better=False,
    k=K,
    join_paper=join_paper,
    renderers=(write_csv, write_tex, write_md),
    extras={"params": ("cost.params", "max")},
    run_hint="run `make table1` first",
    description="FC-layer compression of LeNet-5 and ResNet-9 (top-1)",
))
