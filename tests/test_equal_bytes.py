"""The equal-bytes recipe: its budgets become the bytes they name, and its table reads them."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from riembench.backbones.lenet5 import LeNet5
from riembench.cli.equal_bytes import prune_ratio_for, quant_cell, sized_cells
from riembench.compression.methods.prune import prune_unstructured
from riembench.compression.network import select_layers
from riembench.report.table_bytes import join_paper, write_md, write_png
from riembench.sizing.artifact import save_artifact


def lenet() -> LeNet5:
    torch.manual_seed(0)
    return LeNet5(10, 1, 32).eval()


@pytest.mark.parametrize("budget", [35_000, 65_000])
def test_the_pruning_ratio_fills_the_budget_with_its_sparse_artifact(tmp_path, budget):
    model = lenet()
    layers = select_layers(model, "all")
    ratio = prune_ratio_for(budget, model, layers)
    pruned, info = prune_unstructured(model, ratio, layers)
    size = save_artifact(pruned, tmp_path / "p.safetensors", {**info, "mode": "unstructured"},
                         layers, lenet())
    assert budget <= size <= budget + 4_000  # the header is what the formula leaves out


def test_a_budget_too_small_for_the_mask_is_refused():
    model = lenet()
    with pytest.raises(ValueError, match="leaves nothing"):
        prune_ratio_for(1_000, model, select_layers(model, "all"))


def test_cells_size_every_row_to_the_budget_and_label_it():
    model = lenet()
    rows = sized_cells("b4", 30_000, model, select_layers(model, "all"), 200, [0, 1, 2])
    assert set(rows) == {"dfq", "svd", "prune", "lpnorm", "riem"}
    assert all("method.label=b4" in r for r in rows.values())
    for name in ("svd", "lpnorm", "riem"):
        assert "size=bytes" in rows[name] and "size.bytes=30000" in rows[name]
    assert "method.fit.steps=200" in rows["riem"] and "seeds=[0,1,2]" in rows["riem"]
    assert "method.w_bits=4" in rows["dfq"] and "method.w_bits=4" in quant_cell("b4")


def test_the_table_puts_each_row_against_its_quantization_budget(tmp_path):
    selected = pd.DataFrame([
        {"backbone": "lenet5", "method": m, "variant": v, "paper_method": m, "size": "",
         "mean": acc, "std": 0.5, "n_seeds": 3, "n_selected": 3, "n_failed": 0,
         "artifact_bytes": size, "formula_bytes": size, "w_bits": 8, "a_bits": 16,
         "fit_steps": 100, "width": None, "test_agree": 90.0, "record_keys": "", "git_revs": ""}
        for m, v, acc, size in [("original", "", 98.0, 250_000), ("quant", "b4", 97.0, 34_000),
                                ("riem", "b4", 95.0, 35_700)]])
    df = join_paper(selected)
    riem = df[df["method"] == "riem"].iloc[0]
    assert riem["budget_bytes"] == 34_000 and riem["bytes_vs_budget"] == pytest.approx(1.05)
    assert pd.isna(df[df["method"] == "original"].iloc[0]["budget_bytes"])
    md = write_md(df, tmp_path).read_text()
    assert "| b4 | riem | 95.00 ± 0.50 | 3/3 | 35.7 | 1.050 | 8/16 |" in md
    assert "100 steps" in md
    assert write_png(df, tmp_path).stat().st_size > 0
