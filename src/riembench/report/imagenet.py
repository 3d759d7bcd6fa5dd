"""Tables 2 and 3: ImageNet-1k top-1 of compressed ResNets / DenseNet (higher is better).

Table 2 compares data-free methods at equal size (decimal MB at the stored bit-width, and the
W/A bits); table 3 adds structured pruning (prune ratio 10% / 30%, RieM at 6 bits after
pruning) and the compressed model's GFLOPs. Both go through one join and one set of renderers,
which differ only in the columns a table shows (:class:`ImageNetTable`).

Each row is one (backbone, dataset, method, size) cell: our top-1 on the test split (mean over
the best 3 seeds by dev top-1; one seed for deterministic methods) with the *measured* cost of
the compressed model (``stored_mb``: its packed artifact on disk, ``riembench.sizing.artifact``;
``formula_mb`` the bit count of ``riembench.sizing.cost``; ``gflops``: fvcore's multiply-adds) beside the paper's row at the same
setting. A paper row is matched only at the same setting, never the nearest one:

* the original with the original;
* a sized method (riem, lpnorm, svd: ``size=mb``) with the paper's row of the same method whose
  size is within 0.05 MB of our size setting (and, in table 3, the same prune ratio);
* an unsized quantizer (dfq, quant) with the paper's row of the same method at the same weight
  and activation bits;
* Neuron Merging (unsized) with the paper's row at the same prune ratio.

The paper's baselines that we do not run (UDFC, SQuant, GDFQ, DSG, DDAQ, OMSE, Neuron Merge)
are shown from its CSV as ``paper only`` rows, with whether they need data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import pandas as pd

from riembench.report import fmt
from riembench.report.fmt import Text, missing, too_few_seeds
from riembench.report.paper import load_paper_table
from riembench.report.render import Figure, Presentation, renderers, size_points
from riembench.report.tables import TableSpec

KEYS = ["backbone", "dataset", "method", "variant", "protocol", "paper_method", "size"]
K = 3
SIZE_TOL_MB = 0.05
#: our method name -> the paper's row name (Lp-norm rows are "lpnorm-p2" etc. in table 1)
PAPER_METHOD = {"lpnorm-p1": "lpnorm", "lpnorm-p2": "lpnorm", "lpnorm-p3": "lpnorm"}
UNSIZED_QUANT = ("dfq", "quant")
#: methods whose own ``ratio`` is a prune ratio
PRUNERS = ("prune", "neuron_merge")
METHOD_ORDER = ["original", "quant", "dfq", "omse", "gdfq", "squant", "ddaq", "dsg", "udfc",
                "neuron_merge", "prune", "svd", "lpnorm", "riem"]

#: per-cell aggregates beside the seed rule (all equal within a cell but the measured ones,
#: where ``max`` reports the largest: a size claim should not understate)
EXTRAS: dict[str, tuple[str, Any]] = {
    "params": ("cost.params", "max"),
    "total_params": ("cost.total_params", "max"),
    "stored_mb": ("cost.stored_mb", "max"),
    "artifact_mb": ("cost.artifact_mb", "max"),  # the packed artifact on disk (docs/sizes.md)
    "formula_mb": ("cost.formula_mb", "max"),
    "size_unit": ("config.size.unit", "first"),
    "file_mb": ("cost.file_mb", "max"),
    "gflops": ("cost.gflops", "max"),
    "size_mb": ("config.size.mb", "first"),
    "size_bits": ("config.size.bits", "first"),
    "w_bits": ("config.method.w_bits", "first"),
    "a_bits": ("config.method.a_bits", "first"),
    "prune_ratio": ("config.method.prune_ratio", "first"),
    "ratio": ("config.method.ratio", "first"),
    "mode": ("config.method.mode", "first"),
    # agreement with the original model's predictions (test split), over every seed of the cell
    "agree_all_seeds": ("metrics.test_agree", "mean"),
    "out_rel_err_all_seeds": ("metrics.test_out_rel_err", "mean"),
    # the starting model: its library, file, the top-1 its library publishes for it, the
    # paper row it stands for, and the evaluation preprocessing used (riembench.backbones)
    "original_source": ("fit.weights.source", "first"),
    "original_file": ("fit.weights.file", "first"),
    "original_expected_top1": ("fit.weights.expected_top1", "first"),
    "original_expected_top1_from": ("fit.weights.expected_top1_from", "first"),
    "paper_backbone": ("fit.weights.paper_backbone", "first"),
    "preprocessing": ("fit.weights.preprocessing.origin", "first"),
}


@dataclass(frozen=True)
class ImageNetTable:
    """What differs between table 2 and table 3."""

    name: str
    title: str
    #: the paper's prune ratio is part of a row's setting (table 3)
    pruning: bool
    #: extra columns of the markdown/LaTeX rows: (header, formatter of a row)
    columns: tuple[tuple[str, Callable[[Any], str]], ...]


def _num(x: Any, digits: int = 2, signed: bool = False) -> str:
    if missing(x):
        return "--"
    return f"{float(x):+.{digits}f}" if signed else f"{float(x):.{digits}f}"


def _bits(w: Any, a: Any) -> str:
    """'8/16' as the paper writes W/A bits; 32 where a side is float."""
    w_txt = "32" if missing(w) else str(int(w))
    a_txt = "32" if missing(a) else str(int(a))
    return f"{w_txt}/{a_txt}"


def our_prune_ratio(row: Any) -> float:
    """The fraction of channels a row's model lost: RieM's ``prune_ratio``, or the prune
    baseline's own ``ratio`` (structured mode only: unstructured keeps every channel)."""
    if row.paper_method in PRUNERS:
        return float(row.ratio) if not missing(row.ratio) and row.mode == "structured" else math.nan
    return float(row.prune_ratio) if not missing(row.prune_ratio) else 0.0


def paper_backbone(row: Any) -> str:
    """The paper's backbone row a row of ours is compared with: the architecture its weights
    record (a hub backbone, ``pytorchcv:resnet18-...``), else its own name (torchvision's)."""
    arch = getattr(row, "paper_backbone", None)  # rows built before hub sources have none
    return row.backbone if missing(arch) else cast(str, arch)  # a present cell is a name


def _method_rank(paper_method: str) -> int:
    """A row's place in the paper's method order (:data:`METHOD_ORDER`; other methods last)."""
    method = PAPER_METHOD.get(paper_method, paper_method)
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def match_paper(row: Any, paper: pd.DataFrame, pruning: bool) -> pd.Series | None:
    """The paper's row at our row's setting (module docstring), or None."""
    method = PAPER_METHOD.get(row.paper_method, row.paper_method)
    cand = paper[(paper["backbone"] == paper_backbone(row)) & (paper["method"] == method)]
    if cand.empty:
        return None
    if method == "original":
        return cand.iloc[0]
    if pruning:
        ratio = our_prune_ratio(row)
        cand = cand[(cand["prune_ratio"] - ratio).abs() < 1e-9] if not missing(ratio) else cand.iloc[0:0]
    if method in PRUNERS:  # unsized: the prune ratio (matched above) is its whole setting
        return cand.iloc[0] if len(cand) == 1 else None
    if method in UNSIZED_QUANT:
        same = (cand["w_bits"] == row.w_bits)
        if "a_bits" in cand:
            same &= cand["a_bits"] == (32 if missing(row.a_bits) else row.a_bits)
        cand = cand[same] if not missing(row.w_bits) else cand.iloc[0:0]
    else:
        if missing(row.size_mb):
            return None
        cand = cand[(cand["size_mb"] - float(row.size_mb)).abs() <= SIZE_TOL_MB]
    return cand.iloc[0] if len(cand) == 1 else None


def join(selected: pd.DataFrame, table: ImageNetTable) -> pd.DataFrame:
    """Our selected cells beside the paper's rows, plus the paper-only baselines."""
    paper = load_paper_table(table.name)
    df = selected.rename(columns={"mean": "ours_mean", "std": "ours_std"}).copy()
    for col in EXTRAS:
        if col not in df:
            df[col] = pd.NA
    df["variant"] = df["variant"].fillna("").astype(str)
    df["protocol"] = df["protocol"].map(fmt.protocol_of) if "protocol" in df else "strict"
    for col in ("params", "total_params", "stored_mb", "file_mb", "gflops", "size_mb",
                "size_bits", "w_bits", "a_bits", "prune_ratio", "ratio", "agree_all_seeds",
                "out_rel_err_all_seeds", "original_expected_top1"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    # a hub backbone (pytorchcv:..., timm:...) is compared with the paper's row of its
    # architecture; a torchvision backbone's name is that row's name
    df["paper_backbone"] = df["paper_backbone"].where(df["paper_backbone"].notna(), df["backbone"])
    # an unsized method (original, quant, dfq, prune) still carries the experiment's size
    # config in its record; it is not that row's size
    unsized = df["size"].fillna("").astype(str) == ""
    df.loc[unsized, ["size_mb", "size_bits"]] = math.nan
    df["our_prune_ratio"] = [our_prune_ratio(r) for r in df.itertuples()]
    matched = [match_paper(r, paper, table.pruning) for r in df.itertuples()]
    for col in ("size_mb", "w_bits", "a_bits", "top1", "gflops", "citation", "data_free"):
        df[f"paper_{col}"] = [p[col] if p is not None and col in p else math.nan for p in matched]
    df["paper_only"] = False
    df["ours_minus_paper"] = df["ours_mean"] - df["paper_top1"]
    df["same_data"] = df["dataset"] == "imagenet"
    originals = {(r.backbone, r.dataset): r.ours_mean
                 for r in df[df["paper_method"] == "original"].itertuples()}
    paper_orig = {r.backbone: r.top1 for r in paper[paper["method"] == "original"].itertuples()}
    df["ours_delta_vs_original"] = [
        r.ours_mean - originals.get((r.backbone, r.dataset), math.nan)
        if r.paper_method != "original" else math.nan for r in df.itertuples()]
    df["paper_delta_vs_original"] = [
        r.paper_top1 - paper_orig.get(r.paper_backbone, math.nan)
        if r.paper_method != "original" else math.nan for r in df.itertuples()]
    df = pd.concat([df, _paper_only(df, paper)], ignore_index=True)
    df["_order"] = df["paper_method"].map(_method_rank)
    df["_ratio"] = df["our_prune_ratio"].fillna(0.0)
    df["_size"] = -df["size_mb"].fillna(df["paper_size_mb"]).fillna(math.inf)
    df = df.sort_values(["backbone", "dataset", "_ratio", "_order", "_size", "size"],
                        kind="mergesort")
    return df.drop(columns=["_order", "_ratio", "_size"]).reset_index(drop=True)


def _paper_only(df: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows of the methods we do not run, for each (backbone, dataset) we ran."""
    ours = {PAPER_METHOD.get(m, m) for m in df["paper_method"]} | {"original"}
    rows = []
    cells = df[["backbone", "dataset", "paper_backbone"]].drop_duplicates(["backbone", "dataset"])
    for backbone, dataset, arch in cells.itertuples(index=False):
        for p in paper[(paper["backbone"] == arch) & ~paper["method"].isin(ours)].itertuples():
            rows.append({"backbone": backbone, "dataset": dataset, "paper_backbone": arch,
                         "method": p.method,
                         "variant": "", "paper_method": p.method, "size": "", "paper_only": True,
                         "our_prune_ratio": getattr(p, "prune_ratio", 0.0),
                         "paper_size_mb": p.size_mb, "paper_w_bits": p.w_bits,
                         "paper_a_bits": getattr(p, "a_bits", math.nan), "paper_top1": p.top1,
                         "paper_gflops": getattr(p, "gflops", math.nan),
                         "paper_citation": p.citation,
                         "paper_data_free": getattr(p, "data_free", math.nan),
                         "n_seeds": 0, "n_selected": 0, "n_failed": 0, "selected_seeds": "",
                         "record_keys": "", "git_revs": ""})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------- renderers

def _ours(row: Any) -> Text:
    if row.paper_only:
        return fmt.DASH
    show = fmt.shows_std(row.ours_std, row.ours_mean, row.n_selected,
                         getattr(row, "deterministic", None))
    few = too_few_seeds(getattr(row, "deterministic", False), row.n_selected, row.n_failed, K)
    return fmt.mean_std(row.ours_mean, row.ours_std, show) + fmt.marks(few=few)


def _method(row: Any) -> Text:
    name = fmt.method_name(row.paper_method, row.variant, row.protocol)
    if row.paper_only:
        cite = "" if missing(row.paper_citation) else f", {row.paper_citation}"
        needs = ", needs data" if row.paper_data_free == 0 else ""
        return name + f" (paper only{needs}{cite})"
    return name


def _our_bits(row: Any) -> str:
    if row.paper_only or row.paper_method == "original":
        return "--" if row.paper_only else "32/32"
    if row.paper_method == "svd" or row.paper_method in PRUNERS:
        return "32/32"
    return _bits(row.w_bits, row.a_bits)


def _paper_bits(row: Any) -> str:
    if missing(row.paper_w_bits):
        return "--"
    return _bits(row.paper_w_bits, row.paper_a_bits) if not missing(row.paper_a_bits) \
        else str(int(row.paper_w_bits))


def _ratio(row: Any) -> str:
    return "--" if missing(row.our_prune_ratio) else f"{float(row.our_prune_ratio):.0%}"


TABLE2_COLUMNS = (("W/A bits (ours / paper)", lambda r: f"{_our_bits(r)} / {_paper_bits(r)}"),)
TABLE3_COLUMNS = (("Prune", _ratio),
                  ("W/A bits (ours / paper W)", lambda r: f"{_our_bits(r)} / {_paper_bits(r)}"),
                  ("GFLOPs (ours / paper)",
                   lambda r: f"{_num(r.gflops)} / {_num(r.paper_gflops)}"))


def _block(row: Any) -> Text:
    return fmt.backbone_name(row.backbone) + " on " + fmt.dataset_name(row.dataset)


NOTE = ("Ours: top-1 on the test split, mean ± std over the best {k} seeds by dev top-1 (one "
        "seed, no std, for deterministic methods). MB (ours): the packed artifact's size on "
        "disk, in decimal MB (`stored_mb`; docs/sizes.md); MB (paper): in the paper's unit "
        "(table 2: MiB, table 3: decimal MB), the paper's figure at the matched setting. "
        "Original's top-1 (library): what the starting model's library publishes for its "
        "weights (torchvision's metadata, pytorchcv's model table). Δ: minus the original of "
        "the same block. A block on data other than ImageNet-1k (a test fixture) compares "
        "different tasks: read the Δ columns. *: failed seeds or fewer than {k} usable seeds "
        "(see {name}.csv). Rows marked dev-guided let dev top-1 pick each seed's checkpoint "
        "during the fit (the paper's protocol); the others fit the weights only.")


def presenter(table: ImageNetTable) -> Callable[[pd.DataFrame], Presentation]:
    """The cells of ``table``: a block per (backbone, dataset), a row per (method, setting)."""

    def present(df: pd.DataFrame) -> Presentation:
        headers = ["Method", *[h for h, _ in table.columns], "MB (ours / paper)", "Top-1 ours",
                   "Top-1 paper", "Original's top-1 (library)", "Δ ours", "Δ paper"]
        rows = [[_method(r), *[cell(r) for _, cell in table.columns],
                 fmt.join([fmt.DASH if r.paper_only else fmt.number(r.stored_mb),
                           fmt.number(r.paper_size_mb)]),
                 _ours(r), fmt.number(r.paper_top1), fmt.number(r.original_expected_top1),
                 fmt.number(r.ours_delta_vs_original, signed=True),
                 fmt.number(r.paper_delta_vs_original, signed=True)] for r in df.itertuples()]
        label, _, title = table.title.partition(": ")
        return Presentation(label, Text.plain(title), Text.plain(NOTE.format(k=K, name=table.name)),
                            pd.DataFrame(rows, columns=headers), "l" + "r" * (len(headers) - 1),
                            [_block(r) for r in df.itertuples()], [[i] for i in range(len(df))])

    return present


def plot(df: pd.DataFrame) -> Figure:
    """Top-1 against the stored size (MB), a panel per (backbone, dataset), the paper's rows
    (those we run and the paper-only baselines) as hollow points."""
    points = size_points(df, lambda r: _block(r).md, ("stored_mb", "ours_mean", "ours_std"),
                         ("paper_size_mb", "paper_top1"))
    return Figure(points, "stored size (decimal MB, log)", "top-1 (%)")


def register_table(table: ImageNetTable, run_hint: str) -> TableSpec:
    return (TableSpec(
        name=table.name,
        record_table=table.name,
        group_cols=tuple(f"cell.{k}" for k in KEYS),
        dev_col="metrics.dev_acc",
        test_col="metrics.test_acc",
        lower_is_better=False,
        k=K,
        join_paper=lambda selected: join(selected, table),
        renderers=renderers(table.name, presenter(table), plot),
        extras=EXTRAS,
        run_hint=run_hint,
        description=table.title,
    ))


TABLE2 = register_table(
    ImageNetTable("table2", "Table 2: data-free compression on ImageNet-1k at equal size, top-1 %",
                  pruning=False, columns=TABLE2_COLUMNS),
    run_hint="run `make table2` first (needs ImageNet val and torchvision weights)")
TABLE3 = register_table(
    ImageNetTable("table3", "Table 3: structured pruning on ImageNet-1k, top-1 %",
                  pruning=True, columns=TABLE3_COLUMNS),
    run_hint="run `make table3` first (needs ImageNet val and torchvision weights)")
