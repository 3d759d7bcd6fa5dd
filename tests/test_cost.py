"""Cost accounting: the paper's original sizes, the checkpoint convention that reproduces them,
stored numbers and bytes at bit-widths (by hand), FLOPs and BOPs."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from riembench.compression.fake_quant import FakeQuantAct, attach_input_quant
from riembench.sizing.cost import (
    PAPER_ORIGINAL_WEIGHTS,
    model_cost,
    paper_original_mb,
    paper_quantized_mb,
    stored_tensors,
    torchvision_checkpoint_bytes,
    torchvision_file_mb,
)

#: table 2/3 "original" sizes (paper_tables/*.csv), decimal MB
PAPER_MB = {"resnet18": 46.83, "resnet34": 87.32, "resnet50": 102.53, "resnet101": 178.81,
            "densenet121": 32.34}
#: torchvision's file names: the zip records inside a file are named after it
FILE_STEM = {"resnet18": "resnet18-f37072fd", "resnet34": "resnet34-b627a593",
             "resnet50": "resnet50-0676ba61", "resnet101": "resnet101-63fe2227"}


def random_model(arch: str) -> nn.Module:
    """Architecture with arbitrary weights, allocated without running the initializers (file
    sizes do not depend on the values: torch.save stores tensors uncompressed)."""
    with torch.device("meta"):
        model = tvm.get_model(arch)
    return model.to_empty(device="cpu")


def test_paper_original_sizes_are_torchvision_files():
    assert set(PAPER_ORIGINAL_WEIGHTS) == set(PAPER_MB)
    for arch, mb in PAPER_MB.items():
        assert round(paper_original_mb(arch), 2) == mb, arch
    # ResNet-101 is the one whose paper size is the V2 file, not V1's
    assert round(torchvision_file_mb("resnet101", "IMAGENET1K_V1"), 2) == 178.79


@pytest.mark.parametrize("arch", list(FILE_STEM))
def test_fresh_save_in_torchvision_v1_convention_reproduces_the_file_size(arch):
    """Zip format, no num_batches_tracked, records named after the file: the V1 ResNet files to
    2 decimals (what the paper prints for resnet18/34/50; resnet101's V1 file is 178.79)."""
    model = random_model(arch)
    size = torchvision_checkpoint_bytes(model, FILE_STEM[arch])
    assert round(size / 1e6, 2) == round(torchvision_file_mb(arch), 2)
    assert abs(size - torchvision_file_mb(arch) * 1e6) < 4000  # metadata is +-524 B itself


def test_densenet121_file_is_older_than_any_fresh_save():
    """densenet121-a639ec97.pth is a 2017 legacy-format pickle: a fresh zip save is ~140 kB
    larger, which is why paper_original_mb reads torchvision's metadata instead."""
    model = random_model("densenet121")
    fresh = torchvision_checkpoint_bytes(model, "densenet121-a639ec97") / 1e6
    assert fresh - PAPER_MB["densenet121"] > 0.1


def test_paper_quantized_convention():
    assert round(paper_quantized_mb(46.83, 4), 2) == 5.58  # table 2, ResNet-18 4-bit rows
    assert round(paper_quantized_mb(102.53, 4), 2) == 12.22  # (the table's 12.28 is not this)
    assert round(paper_quantized_mb(78.8, 6, unit="MB"), 1) == 14.8  # table 3, ResNet-34 10%
    assert round(paper_quantized_mb(61.6, 6, unit="MB"), 1) == 11.6


def test_resnet18_flops_at_224_are_1_81_g_multiply_adds():
    torch.manual_seed(0)
    cost = model_cost(tvm.resnet18().eval(), torch.zeros(1, 3, 224, 224))
    assert cost["gflops"] == pytest.approx(1.82, abs=0.01)  # torchvision's "GFLOPS": 1.81
    assert cost["flops"] == 1_814_073_344  # convs + fc; the counter's own 3_628_146_688 / 2
    assert cost["params"] == 11_689_512  # torchvision's num_params
    assert cost["stored_numel"] == 11_689_512 + 9_620  # + BN running stats and counters


class Embedded(nn.Module):
    """Stands in for a RieM layer: tensors it does not store, and its own count."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = nn.Parameter(torch.zeros(7, 3))
        self.register_buffer("materialized", torch.zeros(100, 100), persistent=False)

    def stored_numel(self) -> int:
        return 25

    def stored_bits(self) -> float:
        return 25 * 16.0  # e.g. an embedding stored at 16 bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def test_stored_numbers_and_bytes_by_hand():
    model = nn.Sequential(nn.Linear(10, 5), nn.BatchNorm1d(5), Embedded())
    params, stored, bits = stored_tensors(model)
    # linear 55 params, BN 10 params + 10 running stats + 1 int64 counter, embedded reports 25
    assert params == 55 + 10 + 25
    assert stored == 55 + 10 + 11 + 25
    assert bits == (55 + 10 + 10) * 32 + 25 * 16 + 64
    _, _, bits8 = stored_tensors(model, {"0.weight": 8, "2": 8})
    assert bits8 == bits - 50 * 24  # a self-counting layer reports its own bits
    cost = model_cost(model, torch.zeros(2, 10), {"0.weight": 8}, flops=False)
    assert cost["stored_bytes"] == (bits - 50 * 24) / 8


def test_bops_use_weight_and_input_bits():
    model = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 3))
    attach_input_quant(model[2], FakeQuantAct(0.0, 1.0, bits=6))
    cost = model_cost(model, torch.zeros(1, 10), {"0.weight": 4, "2.weight": 8}, a_bits=8)
    # 50 and 15 multiply-adds; 50 * 4 * 8 (default input bits) + 15 * 8 * 6 (attached)
    assert cost["layer_flops"] == 65
    assert cost["bops"] == 50 * 4 * 8 + 15 * 8 * 6
    assert cost["stored_numel"] == 55 + 18 + 2  # the quantizer's range counts as stored
