"""Size settings: units are explicit (decimal MB vs MiB), size.bits follows the method's storage
bits or is refused, and a run records the artifact it wrote as its stored size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from riembench.backbones.lenet5 import LeNet5
from riembench.compression.network import select_layers
from riembench.config.datasets import DigitsConfig
from riembench.config.identity import typed_group
from riembench.config.methods import QuantConfig, RiemConfig, SvdConfig
from riembench.config.sizes import SIZES, MbSizeConfig, resolve_bits
from riembench.core.errors import RiembenchError
from riembench.data.images import build_digits
from riembench.harness.evaluate import accuracy, predict
from riembench.sizing.artifact import load_artifact, read_artifact
from riembench.sizing.budgets import network_target


def test_unset_bits_follow_the_method():
    size = MbSizeConfig(mb=0.1)
    resolve_bits(size, SvdConfig())
    assert size.bits == 32  # float32 factors
    size = MbSizeConfig(mb=0.1)
    resolve_bits(size, RiemConfig(w_bits=8))
    assert size.bits == 8
    size = MbSizeConfig(mb=0.1, bits=8)
    resolve_bits(size, SvdConfig(w_bits=8))
    assert size.bits == 8


def test_bits_that_disagree_with_the_method_are_refused():
    with pytest.raises(RiembenchError, match=r"size.bits=8 but method 'svd' stores .* 32 bits"):
        resolve_bits(MbSizeConfig(mb=0.1, bits=8), SvdConfig())
    with pytest.raises(RiembenchError, match="method.w_bits=6"):
        resolve_bits(MbSizeConfig(mb=0.1, bits=8), RiemConfig(w_bits=6))
    resolve_bits(MbSizeConfig(mb=0.1, bits=8), QuantConfig(w_bits=4))  # unsized: ignored


def test_mib_and_mb_are_different_budgets():
    model = LeNet5(10, 1, 32)
    layers = select_layers(model, "all")
    mb = network_target(MbSizeConfig(mb=0.05, unit="mb", bits=8), model, layers)
    mib = network_target(MbSizeConfig(mb=0.05, unit="mib", bits=8), model, layers)
    assert mib.budget - mb.budget == int(0.05 * 2 ** 20) - int(0.05 * 1e6)
    with pytest.raises(RiembenchError, match=r"expected one of \[mb, mib\]"):
        typed_group(OmegaConf.create({"name": "mb", "unit": "MB"}), SIZES)


def test_unresolved_bits_cannot_size_a_network():
    model = LeNet5(10, 1, 32)
    with pytest.raises(RiembenchError, match="resolve_bits"):
        network_target(MbSizeConfig(mb=0.05), model, select_layers(model, "all"))


def _cli(args, tmp_path, env):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_a_run_records_its_artifact_as_its_stored_size(tmp_path):
    """Through the CLI on the embedded digits: the record's stored size is the file on disk,
    the file loads into a LeNet-5 that predicts what the run evaluated, a 4-bit model's file is
    about an eighth of the float weights, and size=bytes gives a file of about those bytes."""
    store, cache = tmp_path / "runs", tmp_path / "cache"
    env = {**os.environ, "RIEMBENCH_STORE": str(store), "RIEMBENCH_CACHE": str(cache),
           "WANDB_MODE": "disabled"}
    _cli(["riembench.harness.training", "backbone=lenet5", "dataset=digits", "train.epochs=1",
          "train.progress=false", "train.threads=1"], tmp_path, env)
    common = ["riembench.cli.main", "backbone=lenet5", "dataset=digits", "threads=1",
              "progress=false", "seeds=[0]"]
    _cli(common + ["method=quant", "method.w_bits=4"], tmp_path, env)
    _cli(common + ["method=svd", "size=bytes", "size.bytes=30000", "method.w_bits=8"], tmp_path,
         env)
    records = {r["method"]: r for r in
               (json.loads(p.read_text()) for p in (store / "table1").glob("*.json"))}
    assert set(records) == {"quant", "svd"}
    for rec in records.values():
        cost = rec["cost"]
        assert os.path.getsize(cost["artifact_path"]) == cost["stored_bytes"] == cost["artifact_bytes"]
        assert cost["stored_mb"] == cost["stored_bytes"] / 1e6
        assert cost["stored_mib"] == cost["stored_bytes"] / 2 ** 20
        assert "formula_mb" in cost
    assert records["svd"]["config"]["size"]["bits"] == 8  # resolved from method.w_bits
    # equal bytes: the budget is the file (its container measured on a probe), up to the
    # rounding of the rank
    assert 0.9 * 30000 <= records["svd"]["cost"]["stored_bytes"] <= 30000
    assert "measured" in records["svd"]["cost"]["size_note"]
    fp32_bytes = 4 * sum(p.numel() for p in LeNet5(10, 1, 32).parameters())
    ratio = records["quant"]["cost"]["stored_bytes"] / fp32_bytes
    assert 0.12 < ratio < 0.16  # 4 of 32 bits, plus biases, scales and the header
    _, meta = read_artifact(records["quant"]["cost"]["artifact_path"])
    assert meta["meta"]["method"] == "quant"
    assert {v["kind"] for v in meta["layers"].values()} == {"uniform"}
    loaded = load_artifact(records["quant"]["cost"]["artifact_path"], LeNet5(10, 1, 32))
    logits, labels = predict(loaded, build_digits(DigitsConfig()).test)
    assert accuracy(logits, labels) == pytest.approx(records["quant"]["metrics"]["test_acc"])


@pytest.mark.parametrize("method_name,overrides", [
    ("svd", {"w_bits": 8}),
    ("riem", {"w_bits": 8, "progress": False, "fit": {"steps": 3, "eval_every": 3}}),
])
def test_a_measured_byte_budget_is_the_file(tmp_path, method_name, overrides):
    """size=bytes with overhead=measured: the probe's container bytes come off the budget, so
    the real artifact is at most the budget; unbudgeted, the same cell's file is above it."""
    import torch
    from omegaconf import OmegaConf

    from riembench.compression.methods.base import NetworkJob
    from riembench.config.identity import typed_group
    from riembench.config.methods import METHODS
    from riembench.config.sizes import BytesSizeConfig
    from riembench.sizing.artifact import save_artifact
    from riembench.sizing.byte_budget import measured_bytes_target

    torch.manual_seed(0)
    model = LeNet5(10, 1, 32).eval()
    layers = select_layers(model, "all")
    cfg = OmegaConf.merge(OmegaConf.create({"name": method_name}), OmegaConf.create(overrides))
    method = METHODS.get(method_name)(typed_group(cfg, METHODS))
    sizes = {}
    for overhead in ("unbudgeted", "measured"):
        size = BytesSizeConfig(bytes=30_000, overhead=overhead)
        resolve_bits(size, method.cfg)
        job = NetworkJob(model, layers, network_target(size, model, layers), [0],
                         torch.device("cpu"), torch.zeros(1, 1, 32, 32))
        job.size = measured_bytes_target(size, method, job, {})
        (out,) = method.compress(job)
        sizes[overhead] = save_artifact(out.model, tmp_path / f"{overhead}.safetensors",
                                        out.info, layers, model)
    assert sizes["unbudgeted"] > 30_000
    assert 0.85 * 30_000 <= sizes["measured"] <= 30_000, sizes
