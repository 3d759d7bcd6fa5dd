"""FLOPs from torch.utils.flop_counter: exact multiply-add counts by hand, per-module names that
are the model's own, a structurally pruned model's FLOPs and size dropping exactly where its
structure does, and a clear error where a model cannot run."""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.methods.prune import n_kept
from riembench.compression.network import select_layers
from riembench.config.methods import METHODS
from riembench.core.errors import RiembenchError
from riembench.sizing.cost import count_flops, model_cost
from riembench.sizing.measure import model_size_and_flops

CPU = torch.device("cpu")


def test_multiply_adds_by_hand_and_per_module_names():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 5))
    total, by_module = count_flops(model, torch.zeros(2, 3, 10, 10))
    conv = 2 * 8 * 10 * 10 * 3 * 9  # batch x out channels x positions x (in x kernel)
    depthwise = 2 * 8 * 10 * 10 * 9  # one input channel per output channel
    linear = 2 * 8 * 5
    assert by_module["0"] == conv and by_module["2"] == depthwise and by_module["5"] == linear
    assert total == conv + depthwise + linear == by_module[""]


def test_structured_pruning_drops_flops_and_size_exactly_where_channels_go():
    torch.manual_seed(0)
    model = tvm.resnet18().eval()
    x = torch.zeros(1, 3, 64, 64)
    job = NetworkJob(model, select_layers(model, "all"), SizeTarget(None), [0], CPU, x)
    [net] = METHODS.get("prune")(METHODS.schema("prune")(ratio=0.3)).compress(job)
    full, small = model_cost(model, x), model_cost(net.model, x)
    _, before = count_flops(model, x)
    _, after = count_flops(net.model, x)
    for name in ("layer1.0.conv1", "layer1.0.conv2", "layer3.1.conv1", "layer3.1.conv2"):
        width = model.get_submodule(name).weight.shape[0 if name.endswith("conv1") else 1]
        assert after[name] * width == before[name] * n_kept(width, 0.3), name
    untouched = ("conv1", "layer2.0.downsample.0", "fc")
    assert all(after[n] == before[n] for n in untouched)
    assert small["flops"] == full["flops"] - sum(before[n] - after[n] for n in before
                                                 if n.count(".") == 2)  # only block convs
    assert small["flops"] < 0.8 * full["flops"]
    assert small["stored_bytes"] < 0.8 * full["stored_bytes"]
    # unstructured pruning keeps the dense shapes: the dense FLOPs do not change
    [sparse] = METHODS.get("prune")(METHODS.schema("prune")(ratio=0.3, mode="unstructured")
                                    ).compress(job)
    assert model_cost(sparse.model, x)["flops"] == full["flops"]


def test_quantized_models_keep_flops_and_bops_multiply_their_bits():
    torch.manual_seed(0)
    model = tvm.resnet18().eval()
    x = torch.zeros(1, 3, 32, 32)
    job = NetworkJob(model, select_layers(model, "all"), SizeTarget(None), [0], CPU, x,
                     input_range=(-2.1, 2.6))
    [q] = METHODS.get("quant")(METHODS.schema("quant")(w_bits=4, a_bits=8)).compress(job)
    full, cost = model_cost(model, x), model_cost(q.model, x, q.info["bits_by_param"])
    assert cost["flops"] == full["flops"]  # the rounding ops are not counted
    assert cost["bops"] == cost["layer_flops"] * 4 * 8  # every layer input quantized at 8
    assert full["bops"] == full["layer_flops"] * 32 * 32


def test_a_model_that_cannot_run_gets_sizes_and_a_clear_flops_error():
    class NeedsTwo(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x, y):
            return self.fc(x + y)

    with pytest.raises(RiembenchError, match="does not run on a"):
        count_flops(NeedsTwo(), torch.zeros(1, 4))
    cost = model_size_and_flops(NeedsTwo(), torch.zeros(1, 4), {})
    assert cost["total_params"] == 10 and "flops" not in cost
    assert "NeedsTwo does not run" in cost["flops_error"]
