"""End to end: table 2 through the CLI on a pytorchcv and a timm backbone. A tiny ImageFolder in
ImageNet's val layout (1000 class folders, one small JPEG each); random ResNet-18 weights saved
where each library keeps its downloads: pytorchcv's model store under the paper ResNet-18's file
name (the ``pcv_resnet18`` preset), timm's Hugging Face hub cache for ``resnet18.a1_in1k``; one
sweep per method over both backbones. Every method family runs (original, svd, quant, dfq, prune, riem with one fit step), the reporter
writes table 2, and each original row shows its library and that library's top-1 beside the
paper's."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from pytorchcv.model_provider import get_model as ptcv_get_model
from safetensors.torch import save_file

HUB_ID = "timm/resnet18.a1_in1k"


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> None:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _weights(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    store = tmp_path / "torch_models"  # pytorchcv's model store (~/.torch/models)
    store.mkdir()
    torch.save(ptcv_get_model("resnet18", pretrained=False).state_dict(),
               store / "resnet18-0982-0126861b.pth")
    hub = tmp_path / "hf_hub"  # the Hugging Face hub cache (HF_HUB_CACHE)
    repo = hub / f"models--{HUB_ID.replace('/', '--')}"
    rev = "b" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    (repo / "snapshots" / rev).mkdir(parents=True)
    save_file(timm.create_model("resnet18.a1_in1k", pretrained=False).state_dict(),
              repo / "snapshots" / rev / "model.safetensors")
    return store, hub


@pytest.mark.slow
def test_table2_on_pytorchcv_and_timm_backbones(tmp_path, imagenet_val_root):
    data = imagenet_val_root
    store, hub = _weights(tmp_path)
    runs, out = tmp_path / "runs", tmp_path / "tables"
    # the paper's ResNet-18 preset, pointed at the fixture's model store; the random file is
    # not pytorchcv's, so its hash check is off (a user's config dir, added to Hydra's path)
    presets = tmp_path / "conf" / "backbone"
    presets.mkdir(parents=True)
    (presets / "fixture_pcv_resnet18.yaml").write_text(
        f"defaults:\n  - pcv_resnet18\n  - _self_\n\nstore_dir: {store}\ncheck_hash: false\n")
    env = {**os.environ, "RIEMBENCH_STORE": str(runs), "WANDB_MODE": "disabled",
           "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1"}
    # both backbones in every sweep: pytorchcv at its own 224 px (its head pools a 7x7 map),
    # timm's resnet18.a1_in1k (default model of backbone=timm) with timm's own data config
    base = ["riembench.cli.main", "-m", "experiment=table2", f"data.root={data}",
            f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
            "backbone=fixture_pcv_resnet18,timm", "dataset.dev_size=4", "dataset.limit=8",
            "threads=1", "hydra.launcher.n_jobs=1", "seeds=[0]"]
    # pytorchcv's and timm's names of the first block (quoted: a bare comma would sweep)
    first_block = "method.layers='features.stage1.unit1.*,layer1.0.*'"
    _run(base + ["method=original"], tmp_path, env)
    _run(base + ["method=dfq,quant", "method.w_bits=6", "method.a_bits=6"], tmp_path, env)
    # svd stores float32 (size.bits follows it) and table 2 states sizes in MiB: ResNet-18's
    # 11,699,132 stored numbers are 44.63 MiB, so 44.49 MiB leaves its first block about half
    # of its 73,728 weights (everything else is counted as stored)
    _run(base + ["method=svd", "size.mb=44.49", first_block], tmp_path, env)
    _run(base + ["method=prune", "method.ratio=0.25"], tmp_path, env)
    _run(base + ["method=riem", "size.mb=40", first_block, "method.fit.steps=1",
                 "method.fit.eval_every=1", "method.fit.warmup=1", "method.w_bits=8",
                 "method.a_bits=16"], tmp_path, env)

    records = [json.loads(p.read_text()) for p in (runs / "table2").glob("*.json")]
    assert all(r["status"] == "ok" for r in records), [r.get("error") for r in records]
    by = {(r["cell"]["backbone"], r["method"]): r for r in records}
    pcv, tm = "pytorchcv:resnet18-0982-0126861b", "timm:resnet18.a1_in1k"
    methods = {"original", "dfq", "quant", "svd", "prune", "riem"}
    assert set(by) == {(b, m) for b in (pcv, tm) for m in methods}
    for backbone in (pcv, tm):
        original, pruned = by[backbone, "original"], by[backbone, "prune"]
        assert original["metrics"]["test_agree"] == 100  # the original is its own reference
        assert pruned["cost"]["gflops"] < original["cost"]["gflops"]  # fx found the groups
        assert len(by[backbone, "dfq"]["fit"]["eq_pairs"]) == 8  # one per basic block
        assert by[backbone, "riem"]["cost"]["gflops"] > 0
        assert all(by[backbone, m]["fit"]["weights"]["paper_backbone"] == "resnet18"
                   for m in methods)
    prep_pcv = by[pcv, "original"]["fit"]["weights"]["preprocessing"]
    assert (prep_pcv["crop_size"], prep_pcv["resize_size"], prep_pcv["interpolation"]) == (
        224, 256, "bilinear") and "pytorchcv" in prep_pcv["origin"]
    prep_timm = by[tm, "original"]["fit"]["weights"]["preprocessing"]  # resolve_data_config's
    assert (prep_timm["crop_size"], prep_timm["resize_size"], prep_timm["interpolation"]) == (
        224, 235, "bicubic") and "timm" in prep_timm["origin"] and not prep_timm["overridden"]

    # fixture backbones and a first-block layer choice are not cells of table 2's plan
    _run(["riembench.cli.report", "table2", "--store", str(runs), "--out", str(out),
          "--all-records"], tmp_path, env)
    with open(out / "table2.csv") as fh:
        rows = [r for r in csv.DictReader(fh) if r["paper_only"] == "False"]
    originals = {r["backbone"]: r for r in rows if r["paper_method"] == "original"}
    assert float(originals[pcv]["paper_top1"]) == 71.47  # the paper's ResNet-18 row
    assert float(originals[pcv]["original_expected_top1"]) == 71.47  # pytorchcv's own table
    assert originals[pcv]["original_source"] == "pytorchcv"
    assert originals[tm]["original_source"] == "timm"
    assert float(originals[tm]["paper_top1"]) == 71.47  # same architecture, same paper row
    assert originals[tm]["original_expected_top1"] == ""  # timm's package has no table
    md = (out / "table2.md").read_text()
    assert pcv in md and tm in md and "Original's top-1 (library)" in md
