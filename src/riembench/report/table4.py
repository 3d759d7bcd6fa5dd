"""Table 4: DETR-R50 on COCO val2017, the AP suite per (method, size), higher is better.

Each row is one (backbone, dataset, method, size) cell: our AP, AP50, AP75, APs, APm, APl (the
test split, mean over the best 3 seeds by dev AP; deterministic methods have one seed) and
their change against *our* original DETR, beside the paper's row. The paper prints absolute
numbers for the original DETR only and deltas for every other row (its CSV says so per
value), so the table carries both the paper's delta and the absolute value it implies
(published original + delta).

Why the other five metrics need care: the generic seed rule selects seeds on one metric (dev
AP) and averages one test metric. The others must come from the *same* selected records, not
from all seeds of the cell, so the spec collects each cell's record keys and metric values
(in the same row order) and :func:`join_paper` averages the selected keys' values.

Sizes: ``size`` / ``size_mb`` are the *setting* (the target a run was given); ``stored_mb`` is
the packed artifact on disk (``cost.stored_mb``, :mod:`riembench.artifact`; ``cost.formula_mb``
is the bit count: every stored tensor at its bit-width, frozen BatchNorm buffers included), so a reader sees both the target
and what was actually stored. Records written before the runner recorded it show "--".

A paper row is matched only at the same setting: the original with the original, quant with
the paper's 8-bit quant row (same weight bits), svd/riem with the paper's row of the same size
in MB (within 0.05). Rows at other sizes (or sized by ratio, as in the tests) get no paper
value rather than the nearest one. The paper's baselines that need data (T-DETR) are not run
here; their published rows are shown beside ours (``paper_only``), as for every table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from riembench.report.fmt import label, missing, tex_escape, too_few_seeds
from riembench.report.paper import load_paper_table
from riembench.report.tables import TableSpec, register

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
#: our method name -> the paper's row name in table4_coco_detr.csv
PAPER_METHOD = {"original": "detr", "quant": "quant", "svd": "svd", "riem": "riem"}
METHOD_ORDER = ["original", "t-detr", "quant", "svd", "riem"]
KEYS = ["backbone", "dataset", "method", "variant", "paper_method", "size"]
SIZE_TOL_MB = 0.05
K = 3
COLUMNS = (KEYS + ["paper_only", "size_mb", "size_unit", "size_bits", "w_bits", "stored_mb",
                   "artifact_mb", "params",
                   "model_params", "n_seeds", "n_selected", "n_failed", "selected_seeds",
                   "paper_size_mb", "paper_w_bits"]
           + [f"ours_{m}" for m in METRICS] + ["ours_std_AP"]
           + [f"ours_delta_{m}" for m in METRICS] + [f"paper_{m}" for m in METRICS]
           + [f"paper_delta_{m}" for m in METRICS] + ["record_keys", "git_revs"])

#: per-cell aggregates beside the seed rule's AP: sizes, and the raw per-record values of the
#: other metrics with the record keys in the same order (see the module docstring)
EXTRAS: dict[str, tuple[str, Any]] = {
    "params": ("cost.params", "max"),
    "model_params": ("cost.model_params", "max"),
    "stored_mb": ("cost.stored_mb", "max"),
    "artifact_mb": ("cost.artifact_mb", "max"),  # the packed artifact on disk (docs/sizes.md)
    "size_unit": ("config.size.unit", "first"),
    "size_mb": ("config.size.mb", "first"),
    "size_bits": ("config.size.bits", "first"),
    "w_bits": ("config.method.w_bits", "first"),
    "_keys": ("key", list),
    **{f"_test_{m}": (f"metrics.test_{m}", list) for m in METRICS[1:]},
}


def selected_mean(keys: Any, values: Any, selected: str) -> float:
    """Mean of ``values`` over the records whose key is in the comma-joined ``selected``."""
    if not isinstance(keys, list) or not isinstance(values, list) or not selected:
        return math.nan
    by_key = dict(zip(keys, values, strict=True))
    picked = [float(by_key[k]) for k in selected.split(",") if k in by_key]
    picked = [v for v in picked if not math.isnan(v)]
    return sum(picked) / len(picked) if picked else math.nan


def paper_rows() -> pd.DataFrame:
    """The paper's table 4 wide: one row per (method, size, bits), absolute values and deltas."""
    paper = load_paper_table("table4")
    wide = paper.pivot_table(index=["method", "size_mb", "w_bits"], columns="metric",
                             values="value", aggfunc="first").reset_index()
    delta = paper.groupby(["method", "size_mb", "w_bits"])["is_delta_vs_original"].max()
    wide["is_delta"] = [bool(delta[(r.method, r.size_mb, r.w_bits)]) for r in wide.itertuples()]
    original = wide[wide["method"] == "detr"].iloc[0]
    for m in METRICS:
        wide[f"delta_{m}"] = wide[m].where(wide["is_delta"])
        wide[f"abs_{m}"] = wide[m].where(~wide["is_delta"], original[m] + wide[m])
    return wide


def match_paper(row: Any, paper: pd.DataFrame) -> pd.Series | None:
    """The paper's row for our cell at the same setting (see the module docstring), or None."""
    method = PAPER_METHOD.get(row.paper_method)
    cand = paper[paper["method"] == method] if method else paper.iloc[0:0]
    if cand.empty:
        return None
    if row.paper_method == "original":
        return cand.iloc[0]
    if row.paper_method == "quant":
        cand = cand[cand["w_bits"] == row.w_bits] if not missing(row.w_bits) else cand.iloc[0:0]
        return cand.iloc[0] if len(cand) == 1 else None
    if missing(row.size_mb):
        return None
    close = cand[(cand["size_mb"] - float(row.size_mb)).abs() <= SIZE_TOL_MB]
    return close.iloc[0] if len(close) else None


def paper_only_rows(df: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows of methods we do not run (T-DETR needs data), once per table block."""
    ours = set(PAPER_METHOD.values())
    rows = []
    for backbone, dataset in df[["backbone", "dataset"]].drop_duplicates().itertuples(index=False):
        for p in paper[~paper["method"].isin(ours)].itertuples():
            row: dict[str, Any] = {"backbone": backbone, "dataset": dataset, "method": p.method,
                                   "variant": "", "paper_method": p.method, "size": "",
                                   "paper_only": True, "paper_size_mb": p.size_mb,
                                   "paper_w_bits": p.w_bits, "stored_mb": math.nan,
                                   "n_seeds": 0, "n_selected": 0, "n_failed": 0,
                                   "selected_seeds": "", "record_keys": "", "git_revs": ""}
            for m in METRICS:
                row[f"paper_{m}"] = getattr(p, f"abs_{m}")
                row[f"paper_delta_{m}"] = getattr(p, f"delta_{m}")
            rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def join_paper(selected: pd.DataFrame) -> pd.DataFrame:
    df = selected.copy()
    for col in EXTRAS:
        if col not in df:
            df[col] = pd.NA
    df["variant"] = df["variant"].fillna("").astype(str)
    for col in ("params", "model_params", "stored_mb", "size_mb", "size_bits", "w_bits"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    # a method without a size target (original, quant) still carries the experiment's size
    # config in its record; it is not that row's size
    unsized = df["size"].fillna("").astype(str) == ""
    df.loc[unsized, ["size_mb", "size_bits"]] = math.nan
    df["ours_AP"] = df["mean"]
    df["ours_std_AP"] = df["std"]
    for m in METRICS[1:]:
        df[f"ours_{m}"] = [selected_mean(k, v, keys) for k, v, keys in
                           zip(df["_keys"], df[f"_test_{m}"], df["record_keys"], strict=True)]
    originals = df[df["paper_method"] == "original"]
    for m in METRICS:
        base = {(r.backbone, r.dataset): getattr(r, f"ours_{m}") for r in originals.itertuples()}
        df[f"ours_delta_{m}"] = [
            getattr(r, f"ours_{m}") - base.get((r.backbone, r.dataset), math.nan)
            if r.paper_method != "original" else math.nan for r in df.itertuples()]
    paper = paper_rows()
    matched = [match_paper(r, paper) for r in df.itertuples()]
    df["paper_size_mb"] = [p["size_mb"] if p is not None else math.nan for p in matched]
    df["paper_w_bits"] = [p["w_bits"] if p is not None else math.nan for p in matched]
    for m in METRICS:
        df[f"paper_{m}"] = [p[f"abs_{m}"] if p is not None else math.nan for p in matched]
        df[f"paper_delta_{m}"] = [p[f"delta_{m}"] if p is not None else math.nan for p in matched]
    df["paper_only"] = False
    df = pd.concat([df, paper_only_rows(df, paper)], ignore_index=True)
    df["_order"] = df["paper_method"].map(
        lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else len(METHOD_ORDER))
    df["_size"] = -df["size_mb"].fillna(df["paper_size_mb"]).fillna(math.inf)
    df = df.sort_values(["backbone", "dataset", "_order", "_size", "size"], kind="mergesort")
    return df[COLUMNS].reset_index(drop=True)


# ---------------------------------------------------------------------------------- renderers

def _num(x: Any, signed: bool = False, digits: int = 1) -> str:
    if missing(x):
        return "--"
    return f"{float(x):+.{digits}f}" if signed else f"{float(x):.{digits}f}"


def _mb(x: Any) -> str:
    """A measured size in MB: 4 significant digits (166.5, 33.38, 0.1005)."""
    return "--" if missing(x) else f"{float(x):.4g}"


def _size(row: Any) -> str:
    if row.paper_only:
        return "--"
    if not missing(row.size_mb):
        bits = "" if missing(row.size_bits) else f" @{int(row.size_bits)}b"
        return f"{float(row.size_mb):g} MB{bits}"
    if row.paper_method == "quant" and not missing(row.w_bits):
        return f"W{int(row.w_bits)}"
    return row.size or "fp32"


def _flag(row: Any) -> str:
    if row.paper_only:
        return " (paper only: needs data)"
    few = too_few_seeds(row.method, row.n_selected, row.n_failed, K)
    return "*" if few else ""


def _cells(row: Any) -> list[str]:
    """Per metric 'ours (Δ ours) / paper-Δ' (the original row: absolute values both)."""
    out = []
    for m in METRICS:
        ours = getattr(row, f"ours_{m}")
        if row.paper_method == "original":
            out.append(f"{_num(ours)} / {_num(getattr(row, f'paper_{m}'))}")
        else:
            out.append(f"{_num(ours)} ({_num(getattr(row, f'ours_delta_{m}'), True)}) / "
                       f"{_num(getattr(row, f'paper_delta_{m}'), True)}")
    return out


def write_csv(df: pd.DataFrame, out: Path) -> Path:
    path = out / "table4.csv"
    df.to_csv(path, index=False, float_format="%.6g")
    return path


def write_md(df: pd.DataFrame, out: Path) -> Path:
    lines = [
        "<!-- generated by `python -m riembench.report table4` from run records; do not edit -->",
        "# Table 4: DETR-R50 on COCO val2017, AP % (ours (Δ ours) / Δ paper)",
        "",
        (f"Ours: COCOeval bbox metrics on the test split (val2017 minus the dev images), mean "
         f"over the best {K} seeds by dev AP (one seed for deterministic methods). Δ: minus our "
         "original DETR; the paper's rows other than the original are published as Δ against "
         "its original (40.1 AP). Size: the size setting (in its unit, MiB for the paper's "
         "rows, with every stored number at the bit-width shown); stored MB: the packed "
         "artifact on disk in decimal MB (docs/sizes.md); "
         "params: stored numbers of the compressed layers. "
         "*: failed seeds or fewer than 3 usable seeds (see table4.csv)."),
        "",
        "| backbone | method | size (ours / paper) | stored MB | params | " + " | ".join(METRICS)
        + " |",
        "|:--|:--|:--|--:|--:|" + "--:|" * len(METRICS),
    ]
    for row in df.itertuples():
        paper_size = ("--" if missing(row.paper_size_mb)
                      else f"{row.paper_size_mb:g} MB @{int(row.paper_w_bits)}b")
        params = "--" if missing(row.params) else f"{int(row.params):,}"
        lines.append(f"| {row.backbone} | {label(row.paper_method, row.variant)}{_flag(row)} "
                     f"| {_size(row)} / {paper_size} | {_mb(row.stored_mb)} | {params} | "
                     + " | ".join(_cells(row))
                     + " |")
    path = out / "table4.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_tex(df: pd.DataFrame, out: Path) -> Path:
    lines = [
        "% generated by `python -m riembench.report table4` from run records; do not edit",
        "% needs \\usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{llr" + "r" * len(METRICS) + "}",
        r"\toprule",
        r"Method & Size & MB & AP & AP$_{50}$ & AP$_{75}$ & AP$_S$ & AP$_M$ & AP$_L$ \\",
    ]
    previous = None
    for row in df.itertuples():
        block = (row.backbone, row.dataset)
        if block != previous:
            lines.append(r"\midrule")
            previous = block
        cells = [c.replace("/", r"\,/\,") for c in _cells(row)]
        lines.append(" & ".join([tex_escape(label(row.paper_method, row.variant)) + _flag(row),
                                 tex_escape(_size(row)), _mb(row.stored_mb), *cells]) + r" \\")
    lines += [
        r"\bottomrule",
        r"\end{tabular}",
        (rf"\caption{{Table 4: DETR-R50 on COCO val2017 (AP \%). Each cell: ours (our $\Delta$ "
         r"vs.\ our original) / the paper's $\Delta$; original row: ours / paper. Size: the size "
         r"setting; MB: the size measured on the model as stored. Ours: COCOeval "
         rf"on the test split (val2017 minus the dev images), best {K} seeds by dev AP. "
         r"*: failed or fewer than 3 usable seeds.}"),
        r"\label{tab:table4}",
        r"\end{table}",
    ]
    path = out / "table4.tex"
    path.write_text("\n".join(lines) + "\n")
    return path


TABLE4 = register(TableSpec(
    name="table4",
    record_table="table4",
    group_cols=tuple(f"cell.{k}" for k in KEYS),
    dev_col="metrics.dev_AP",
    test_col="metrics.test_AP",
    lower_is_better=False,
    k=K,
    join_paper=join_paper,
    renderers=(write_csv, write_tex, write_md),
    extras=EXTRAS,
    run_hint="run `make table4` first (needs COCO val2017 and the DETR weights)",
    description="DETR-R50 on COCO val2017 (AP suite)",
))
