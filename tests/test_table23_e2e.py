"""End to end: a small `make table2` / `make table3` on CPU. A tiny ImageFolder of generated JPEGs
in ImageNet's val layout (1000 class folders, one image each), torchvision's resnet18 with random weights saved where the loader
expects the real file, two seeds; the real CLI runs every method family of the two tables and
the reporter writes both tables' files, our values beside the paper's."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

#: RieM converts these layers only (the whole network at CPU-test speed would take minutes)
RIEM_LAYERS = "layer1.0.*"


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, check=False, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _mb_for(model: torch.nn.Module, layers: list[str], budget: int, bits: int) -> float:
    """A size.mb that leaves ``budget`` numbers for ``layers``' weights (riembench.sizing.budgets)."""
    stored = sum(p.numel() for p in model.parameters()) + sum(
        b.numel() for m in model.modules() for n, b in m._buffers.items()
        if b is not None and n not in m._non_persistent_buffers_set)
    weights = sum(model.get_submodule(n).weight.numel() for n in layers)
    return round((stored - weights + budget) * bits / 8 / 1e6, 6)


@pytest.mark.slow
def test_small_tables_2_and_3_through_cli_and_reporter(tmp_path, imagenet_val_root):
    data, store, out = imagenet_val_root, tmp_path / "runs", tmp_path / "tables"
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    hub = tmp_path / "torch" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(model.state_dict(), hub / "resnet18-f37072fd.pth")
    env = {**os.environ, "RIEMBENCH_STORE": str(store), "TORCH_HOME": str(tmp_path / "torch"),
           "WANDB_MODE": "disabled"}
    common = ["data.root=" + str(data), "backbone=resnet18", "backbone.check_hash=false",
              "dataset.image_size=32", "dataset.resize_size=36", "dataset.dev_size=16",
              "dataset.limit=32", "threads=1", "hydra.launcher.n_jobs=1"]
    fast = ["method.fit.steps=2", "method.fit.eval_every=1", "method.fit.warmup=1",
            f"method.layers={RIEM_LAYERS}", "seeds=[0,1]"]
    layers = [n for n, m in model.named_modules()
              if n.startswith("layer1.0.") and isinstance(m, torch.nn.Conv2d)]
    mb8 = _mb_for(model, layers, budget=12_000, bits=8)
    mb6 = _mb_for(model, layers, budget=9_000, bits=6)  # after pruning: fewer weights, any budget

    t2 = ["riembench.cli.main", "-m", "experiment=table2", *common, "size.unit=mb"]  # _mb_for: 1e6 B
    # the experiment sweeps size.mb over two values: an unsized method must still run once
    _run(t2 + ["method=original", "size.mb=8.36,5.58", "seeds=[0]"], tmp_path, env)
    _run(t2 + ["method=dfq,quant", "method.w_bits=6", "method.a_bits=6", "seeds=[0]"],
         tmp_path, env)
    _run(t2 + ["method=riem", f"size.mb={mb8}", "method.w_bits=8", "method.a_bits=16", *fast],
         tmp_path, env)
    _run(t2 + ["method=svd", f"size.mb={mb8}", "method.w_bits=8", f"method.layers={RIEM_LAYERS}",
               "seeds=[0]"],
         tmp_path, env)
    t3 = ["riembench.cli.main", "-m", "experiment=table3", *common]
    _run(t3 + ["method=original", "seeds=[0]"], tmp_path, env)
    for name in ("prune", "neuron_merge"):  # method.ratio is not riem's: one method a call
        _run(t3 + [f"method={name}", "method.ratio=0.25", "seeds=[0]"], tmp_path, env)
    _run(t3 + ["method=riem", "method.prune_ratio=0.25", f"size.mb={mb6}", "method.w_bits=6",
               *fast], tmp_path, env)

    recs = {t: [json.loads(p.read_text()) for p in (store / t).glob("*.json")]
            for t in ("table2", "table3")}
    assert len(recs["table2"]) == 1 + 2 + 2 + 1 and len(recs["table3"]) == 1 + 2 + 2
    assert all(r["status"] == "ok" for rs in recs.values() for r in rs), [
        r.get("error") for rs in recs.values() for r in rs]
    riem2 = [r for r in recs["table2"] if r["method"] == "riem"]
    original2 = next(r for r in recs["table2"] if r["method"] == "original")
    for r in riem2:  # 8/16 within the budget; sizes and FLOPs from riembench.sizing.cost
        assert r["fit"]["w_bits"] == 8 and r["fit"]["a_bits"] == 16
        assert set(r["fit"]["act_ranges"]) == set(layers)
        assert r["cost"]["params"] <= 12_000 and r["cost"]["gflops"] > 0
        # the unconverted layers stay float32 (only a whole conversion meets size.mb at 8 bits)
        saved = sum(model.get_submodule(n).weight.numel() for n in layers) * 4 / 1e6
        stored = original2["cost"]["formula_mb"] - saved + r["cost"]["params"] / 1e6
        assert r["cost"]["formula_mb"] == pytest.approx(stored, abs=0.01)
        # the artifact on disk is the recorded stored size
        assert Path(r["cost"]["artifact_path"]).stat().st_size == r["cost"]["stored_bytes"]
    # fidelity to the original's outputs: exact for the original, measured for the others
    assert original2["metrics"]["test_agree"] == 100 and original2["metrics"]["test_out_rel_err"] == 0
    for r in recs["table2"] + recs["table3"]:
        assert 0 <= r["metrics"]["test_agree"] <= 100 and r["metrics"]["dev_out_rel_err"] >= 0
    dfq = next(r for r in recs["table2"] if r["method"] == "dfq")
    assert 0 < dfq["metrics"]["test_out_rel_err"] < 1  # 6-bit DFQ: close, not equal
    riem3 = [r for r in recs["table3"] if r["method"] == "riem"]
    assert all(r["fit"]["pruned"]["pruned_channels"] for r in riem3)
    pruned = next(r for r in recs["table3"] if r["method"] == "prune")
    original = next(r for r in recs["table3"] if r["method"] == "original")
    assert pruned["cost"]["gflops"] < original["cost"]["gflops"]  # structured: FLOPs drop
    assert pruned["cost"]["stored_mb"] < original["cost"]["stored_mb"]

    for table in ("table2", "table3"):
        _run(["riembench.cli.report", table, "--store", str(store), "--out", str(out), "--all-records"], tmp_path, env)
        for suffix in ("csv", "tex", "md"):
            assert (out / f"{table}.{suffix}").stat().st_size > 0
    with open(out / "table2.csv") as fh:
        rows2 = list(csv.DictReader(fh))
    by_method = {r["paper_method"]: r for r in rows2 if r["paper_only"] == "False"}
    assert set(by_method) == {"original", "dfq", "quant", "riem", "svd"}
    assert float(by_method["original"]["paper_top1"]) == 71.47  # the paper's ResNet-18 row
    assert float(by_method["dfq"]["paper_top1"]) == 66.30  # matched at the same W6/A6
    assert by_method["riem"]["n_seeds"] == "2" and by_method["riem"]["n_selected"] == "2"
    assert by_method["riem"]["paper_top1"] == ""  # our size is not the paper's: no match
    published = {r["paper_method"] for r in rows2 if r["paper_only"] == "True"}
    assert {"udfc", "ddaq", "dsg"} <= published  # the paper's baselines we do not run
    assert "paper only" in (out / "table2.md").read_text()
    with open(out / "table3.csv") as fh:
        rows3 = {r["paper_method"]: r for r in csv.DictReader(fh)}
    assert float(rows3["riem"]["our_prune_ratio"]) == 0.25
    assert float(rows3["prune"]["gflops"]) < float(rows3["original"]["gflops"])
    assert float(rows3["original"]["agree_all_seeds"]) == 100
