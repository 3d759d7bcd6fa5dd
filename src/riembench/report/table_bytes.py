"""The equal-bytes table: the paper's central comparison (RieM ahead of the quantization
baselines at equal size) on the embedded default, every row at the same bytes *on disk*.

LeNet-5 and ResNet-9 on scikit-learn's digits, all layers. Each byte budget is the measured
artifact of uniform quantization at 4 or 8 bits (``budget`` b4 / b8); every other row is made to
fit it: DFQ at the same weight bits, SVD with int8 factors and RieM / Lp-norm at "8/16" through
``size=bytes``, magnitude pruning (bitmask + float32 values) at the ratio whose sparse artifact
fits. A row's size is its own artifact's bytes (``artifact_bytes``), so the table shows how close
to the budget each method really lands (``bytes_vs_budget``), including the container's header,
scales and zero points that no formula budgets.

The recipe that makes the records is :mod:`riembench.cli.equal_bytes`
(``python -m riembench.cli.equal_bytes run``).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from riembench.report.tables import TableSpec

log = logging.getLogger("riembench.report")

NAME = "equal_bytes"
K = 3
BACKBONES = ("lenet5", "resnet9")
#: budget label -> weight bits of the uniform quantization whose artifact defines it
BUDGETS = {"b4": 4, "b8": 8}
METHOD_ORDER = ["original", "quant", "dfq", "svd", "prune", "lpnorm", "riem"]
COLUMNS = ["backbone", "budget", "method", "init", "paper_method", "size", "ours_mean", "ours_std",
           "n_seeds", "n_selected", "n_failed", "budget_bytes", "artifact_bytes", "artifact_mb",
           "artifact_mib", "bytes_vs_budget", "formula_bytes", "w_bits", "a_bits", "fit_steps", "solver", "width",
           "test_agree", "record_keys", "git_revs"]


# --------------------------------------------------------------------------------------------
# the table


def join_paper(selected: pd.DataFrame) -> pd.DataFrame:
    """Our rows only (the paper has no digits table), with each row's bytes against its budget
    (the quantization row's artifact of the same backbone and budget)."""
    df = selected.rename(columns={"mean": "ours_mean", "std": "ours_std",
                                  "variant": "budget"}).copy()
    for col in ("artifact_bytes", "formula_bytes", "w_bits", "a_bits", "fit_steps", "width",
                "test_agree"):
        df[col] = pd.to_numeric(df.get(col), errors="coerce")
    quant = df[df["method"] == "quant"].set_index(["backbone", "budget"])["artifact_bytes"]
    df["budget_bytes"] = [quant.get((r.backbone, r.budget), math.nan) for r in df.itertuples()]
    df.loc[df["method"] == "original", "budget_bytes"] = math.nan
    df["artifact_mb"] = df["artifact_bytes"] / 1e6
    df["artifact_mib"] = df["artifact_bytes"] / 2 ** 20
    df["bytes_vs_budget"] = df["artifact_bytes"] / df["budget_bytes"]
    df["_b"] = df["backbone"].map(lambda b: BACKBONES.index(b) if b in BACKBONES else 9)
    df["_m"] = df["method"].map(lambda m: METHOD_ORDER.index(m) if m in METHOD_ORDER else 99)
    df["_k"] = df["budget"].map(lambda b: list(BUDGETS).index(b) if b in BUDGETS else -1)
    if "init" not in df:
        df["init"] = ""
    df = df.sort_values(["_b", "_k", "_m", "init"]).reset_index(drop=True)
    return df[[c for c in COLUMNS if c in df]]


def write_csv(df: pd.DataFrame, out: Path) -> Path:
    path = out / f"{NAME}.csv"
    df.to_csv(path, index=False)
    return path


NOTES = (
    "Top-1 % on the digits test split (mean ± std over the best {k} seeds by dev accuracy; "
    "deterministic methods: one seed; a failed (diverged) seed counts in `run`, not in `used`). "
    "Every layer compressed. Sizes are each row's packed "
    "artifact on disk (safetensors: integer codes packed below a byte, scales, zero points, "
    "header), in kB = 1000 bytes; `vs budget` is that size over the budget, the artifact of "
    "uniform quantization at 4 (b4) or 8 (b8) bits per tensor with 8-bit inputs. DFQ: the same "
    "weight bits, with its own inputs at 8 bits. SVD: int8 factors per output channel. Pruning: "
    "magnitude per layer at the ratio whose bitmask + float32 values fit. RieM / Lp-norm: "
    "8/16 (numbers at 8 bits, read-out float32, inputs at 16 bits) sized by `size=bytes`, "
    "top {k} of their seeds. Sized rows aim at the budget minus their container overhead "
    "(scales, ranges, header), measured by packing a cheap probe of the same cell (one fit "
    "step). Inputs are "
    "quantized only where a BatchNorm gives a data-free range (LeNet-5 has no BatchNorm: its "
    "inputs stay float in every row, whatever the A bits say)."
)


def _fit_text(df: pd.DataFrame) -> str:
    steps = sorted({int(s) for s in df["fit_steps"].dropna()}) if "fit_steps" in df else []
    return (f"the default method configs (at most 2000 steps, RieM from the spectral start, "
            f"Lp-norm from MDS) except where a row says otherwise "
            f"({'/'.join(map(str, steps))} steps here); varpro = variable projection with its "
            "convergence test (the default solver), adam = the earlier plain-Adam fits"
            if steps else "the default method configs")


def _row_label(r: Any) -> str:
    """``riem (svd start, varpro, 300 steps)``: a fitted method's start, solver and length,
    else its name. A record without a solver predates variable projection: it is Adam's."""
    init = getattr(r, "init", "")
    if not (isinstance(init, str) and init):
        return r.method
    solver = getattr(r, "solver", None)
    solver = solver if isinstance(solver, str) and solver else "adam"
    steps = "" if pd.isna(r.fit_steps) else f", {int(r.fit_steps)} steps"
    return f"{r.method} ({init} start, {solver}{steps})"


def write_md(df: pd.DataFrame, out: Path) -> Path:
    lines = [("<!-- generated by `python -m riembench.report equal_bytes` from run records; "
              "do not edit -->"),
             "# Equal bytes: LeNet-5 and ResNet-9 on digits, every row at the same bytes on disk",
             "", NOTES.format(k=K), ""]
    for backbone in [b for b in BACKBONES if b in set(df["backbone"])]:
        part = df[df["backbone"] == backbone]
        width = part["width"].dropna().unique() if "width" in part else []
        title = backbone + (f" (width {width[0]:g})" if len(width) and width[0] != 1 else "")
        lines += [f"## {title}", "", f"RieM / Lp-norm fit: {_fit_text(part)}.", "",
                  "| budget | method | top-1 % | seeds used/run | artifact kB | vs budget | bits W/A |",
                  "|:---|:---|---:|---:|---:|---:|:---|"]
        for r in part.itertuples():
            acc = "--" if pd.isna(r.ours_mean) else (
                f"{r.ours_mean:.2f}" + ("" if pd.isna(r.ours_std) or r.n_selected < 2
                                        else f" ± {r.ours_std:.2f}"))
            kb = "--" if pd.isna(r.artifact_bytes) else f"{r.artifact_bytes / 1e3:.1f}"
            vs = "--" if pd.isna(r.bytes_vs_budget) else f"{r.bytes_vs_budget:.3f}"
            wa = "/".join("32" if pd.isna(b) else str(int(b)) for b in (r.w_bits, r.a_bits))
            budget = r.budget or "--"
            method = _row_label(r)
            runs = int(r.n_seeds) + int(0 if pd.isna(r.n_failed) else r.n_failed)
            lines.append(f"| {budget} | {method} | {acc} | {r.n_selected}/{runs} | {kb} | "
                         f"{vs} | {wa} |")
        lines.append("")
    path = out / f"{NAME}.md"
    path.write_text("\n".join(lines))
    return path


def write_png(df: pd.DataFrame, out: Path) -> Path:
    """Accuracy against artifact bytes, one panel per backbone (log bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backbones = [b for b in BACKBONES if b in set(df["backbone"])]
    fig, axes = plt.subplots(1, len(backbones), figsize=(5.2 * len(backbones), 4.0), squeeze=False)
    markers = dict(zip(METHOD_ORDER, "*osv^Dp", strict=False))
    for ax, backbone in zip(axes[0], backbones, strict=True):
        part = df[df["backbone"] == backbone]
        labels = [_row_label(r) for r in part.itertuples()]
        for name in dict.fromkeys(labels):
            rows = part[[lab == name for lab in labels]].sort_values("artifact_bytes")
            ax.errorbar(rows["artifact_bytes"] / 1e3, rows["ours_mean"],
                        yerr=rows["ours_std"].fillna(0),
                        marker=markers.get(rows["method"].iloc[0], "o"), capsize=3, label=name,
                        ls="-" if len(rows) > 1 else "none")
        for b in part["budget_bytes"].dropna().unique():
            ax.axvline(b / 1e3, color="gray", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("artifact size on disk (kB, log)")
        ax.set_ylabel("top-1 % (digits test)")
        ax.set_title(f"{backbone}: equal bytes (dotted: budgets)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"{NAME}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


TABLE = (TableSpec(
    name=NAME,
    record_table=NAME,
    group_cols=("cell.backbone", "cell.method", "cell.variant", "cell.paper_method",
                "cell.size", "config.method.init"),
    dev_col="metrics.dev_acc",
    test_col="metrics.test_acc",
    lower_is_better=False,
    k=K,
    join_paper=join_paper,
    renderers=(write_csv, write_md, write_png),
    extras={"artifact_bytes": ("cost.artifact_bytes", "max"),
            "formula_bytes": ("cost.formula_bytes", "max"),
            "w_bits": ("config.method.w_bits", "first"),
            "a_bits": ("config.method.a_bits", "first"),
            "fit_steps": ("config.method.fit.steps", "first"),
            "solver": ("config.method.fit.solver", "first"),
            "width": ("config.backbone.width", "first"),
            "test_agree": ("metrics.test_agree", "mean")},
    run_hint="run `python -m riembench.cli.equal_bytes run` first",
    description="equal bytes on disk: LeNet-5 / ResNet-9 on digits, every method's artifact",
))
