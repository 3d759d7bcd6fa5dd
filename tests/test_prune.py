"""Magnitude pruning: which channels/weights go, that the structured result is a smaller dense
model whose FLOPs really drop, and that ResNet residual shapes stay valid."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.methods.prune import n_kept, prune_structured, prune_unstructured
from riembench.compression.network import select_layers
from riembench.config.methods import METHODS
from riembench.core.errors import RiembenchError
from riembench.sizing.cost import model_cost

CPU = torch.device("cpu")
X32 = torch.zeros(1, 3, 32, 32)


def prune(**overrides):
    return METHODS.get("prune")(METHODS.schema("prune")(**overrides))


def job_for(model: nn.Module, layers: str = "all") -> NetworkJob:
    return NetworkJob(model, select_layers(model, layers), SizeTarget(None), [0, 1], CPU, X32)


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    torch.manual_seed(0)
    return tvm.resnet18().eval()


def test_n_kept_by_hand():
    assert n_kept(64, 0.1) == 58  # 6.4 removed -> 6
    assert n_kept(64, 0.3) == 45  # 19.2 -> 19
    assert n_kept(10, 0.25) == 7  # 2.5 rounds half up -> 3
    assert n_kept(2, 0.9) == 1  # never empty


def test_structured_resnet18_prunes_only_block_inner_convs_and_flops_drop(resnet18):
    before = copy.deepcopy(resnet18.state_dict())
    [net, other] = prune(ratio=0.3).compress(job_for(resnet18))
    for k, v in resnet18.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert net.model is not other.model
    pruned = net.model
    for i, width in zip(range(1, 5), (64, 128, 256, 512), strict=True):
        for j in range(2):
            block = pruned.get_submodule(f"layer{i}.{j}")
            keep = n_kept(width, 0.3)
            assert block.conv1.out_channels == keep and block.bn1.num_features == keep
            assert block.conv2.in_channels == keep and block.conv2.out_channels == width
    assert set(net.info["pruned_channels"]) == {f"layer{i}.{j}.conv1" for i in range(1, 5)
                                                for j in range(2)}
    assert "add" in net.info["skipped"]["layer1.0.conv2"]
    assert "2 consumers" in net.info["skipped"]["conv1"]
    y = pruned(torch.randn(2, 3, 32, 32))
    assert y.shape == (2, 1000)
    full, small = model_cost(resnet18, X32), model_cost(pruned, X32)
    assert small["params"] < 0.8 * full["params"]
    assert small["flops"] < 0.8 * full["flops"]
    assert small["file_bytes"] < 0.8 * full["file_bytes"]


def test_structured_bottleneck_prunes_conv1_and_conv2_not_conv3():
    torch.manual_seed(0)
    model = ResNet(Bottleneck, [1, 1, 1, 1], num_classes=10).eval()
    pruned = prune_structured(model, 0.5, select_layers(model, "all"))
    block = pruned.layer2[0]
    assert (block.conv1.out_channels, block.conv2.in_channels) == (64, 64)
    assert (block.conv2.out_channels, block.conv3.in_channels) == (64, 64)
    assert block.conv3.out_channels == 512 and block.downsample[0].out_channels == 512
    assert pruned(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_structured_removes_lowest_l1_filters_exactly():
    """Filters 2 and 5 of the first conv are zero (and so is its bias): removing a quarter of
    its 8 channels must remove exactly those, leaving the function unchanged."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    with torch.no_grad():
        model[0].weight[[2, 5]] = 0
        model[0].bias[[2, 5]] = 0
        model[0].weight[1] *= 0.05  # small but not zero: must survive (only 2 go)
    pruned = prune_structured(model, 0.25, ["0", "2"])
    assert pruned[0].out_channels == 6 and pruned[2].in_channels == 6
    kept = [0, 1, 3, 4, 6, 7]
    assert torch.equal(pruned[0].weight, model[0].weight[kept])
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.allclose(pruned(x), model(x), atol=1e-6)
    assert model[0].out_channels == 8  # the input model is untouched


def test_structured_refuses_when_nothing_is_prunable(resnet18):
    with pytest.raises(RiembenchError, match="none of the selected layers"):
        prune(ratio=0.3).compress(job_for(resnet18, "layer1.0.conv2,fc"))


def test_unstructured_layer_scope_removes_exact_fraction_of_smallest(resnet18):
    pruned, info = prune_unstructured(resnet18, 0.4, ["layer1.0.conv1", "fc"])
    for name in ("layer1.0.conv1", "fc"):
        w0 = resnet18.get_submodule(name).weight.detach()
        w = pruned.get_submodule(name).weight.detach()
        removed = w == 0
        assert int(removed.sum()) == int(0.4 * w0.numel())
        assert float(w0[removed].abs().max()) <= float(w0[~removed].abs().min())
        assert torch.equal(w[~removed], w0[~removed])
    assert info["sparsity"] == pytest.approx(0.4, abs=1e-4)
    # untouched elsewhere, shape and file size unchanged
    assert torch.equal(pruned.layer1[0].conv2.weight, resnet18.layer1[0].conv2.weight)
    assert pruned.layer1[0].conv1.weight.shape == resnet18.layer1[0].conv1.weight.shape


def test_unstructured_global_scope_prunes_small_layers_more(resnet18):
    """One global threshold: a layer of tiny weights goes first, whole, before any other."""
    model = copy.deepcopy(resnet18)
    with torch.no_grad():
        model.fc.weight.mul_(1e-6)  # every fc weight is now below every conv weight
    names = ["layer1.0.conv1", "fc"]
    pruned, info = prune_unstructured(model, 0.5, names, scope="global")
    n_conv, n_fc = model.layer1[0].conv1.weight.numel(), model.fc.weight.numel()
    zeros = {n: int((pruned.get_submodule(n).weight == 0).sum()) for n in names}
    assert zeros["layer1.0.conv1"] == 0
    assert zeros["fc"] == int(0.5 * (n_conv + n_fc))
    assert info["sparsity"] == pytest.approx(0.5, abs=1e-5)
    layer, _ = prune_unstructured(model, 0.5, names, scope="layer")
    assert int((layer.layer1[0].conv1.weight == 0).sum()) == int(0.5 * n_conv)
