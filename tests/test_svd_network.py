"""SVD on networks: ranks from each layer's budget share (worked out by hand), the conv
factorization is exact on exactly low-rank weights, and fidelity/size move with the budget."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.methods.svd import plan_ranks
from riembench.compression.network import dense_weight_count, select_layers
from riembench.config.methods import METHODS
from riembench.core.errors import ImpossibleBudget
from riembench.sizing.cost import model_cost

CPU = torch.device("cpu")


def svd(**overrides):
    return METHODS.get("svd")(METHODS.schema("svd")(**overrides))


def small_net() -> nn.Module:
    """conv 16 x (4*3*3) = 576 weights, fc1 32 x 16 = 512, fc2 10 x 32 = 320: 1408 in all."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(4, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10)).eval()


def job_for(model: nn.Module, budget: int | None, example: torch.Tensor,
            layers: str = "all") -> NetworkJob:
    return NetworkJob(model, select_layers(model, layers), SizeTarget(budget), [0, 1], CPU, example)


def test_ranks_from_budget_shares_by_hand():
    model = small_net()
    names = select_layers(model, "all")
    assert dense_weight_count(model, names) == 1408
    # budget 704: shares 288, 256, 160 -> ranks 288 // 52 = 5, 256 // 48 = 5, 160 // 42 = 3
    plan, dense = plan_ranks(model, names, 704, None)
    assert plan == {"0": 5, "4": 5, "6": 3} and dense == {}
    # budget 1408 (ratio 1): shares equal the dense sizes; ranks 11, 10, 7 would not be
    # smaller than dense (572 < 576 is, 480 < 512 is, 294 < 320 is), ranks 12/11/8 are not
    plan, dense = plan_ranks(model, names, 1408, None)
    assert plan == {"0": 11, "4": 10, "6": 7}
    plan, dense = plan_ranks(model, names, None, 12)
    assert set(dense) == {"0", "4", "6"}  # 12 * 52 = 624 >= 576 etc.: all kept dense
    with pytest.raises(ImpossibleBudget):
        plan_ranks(model, names, 100, None)  # conv share 40 < 52 = rank 1
    with pytest.raises(ImpossibleBudget):
        plan_ranks(model, names, 500, 5)  # 260 + 240 + 210 = 710 > 500


def test_factorized_layers_are_exact_on_rank_2_weights():
    """Weights of rank 2: a rank-2 factorization must reproduce the network (conv included:
    the first conv's filters are rows of V^T, the 1x1 conv is U S)."""
    model = small_net()
    with torch.no_grad():
        for layer in (model[0], model[4], model[6]):
            m, n = layer.weight.shape[0], layer.weight[0].numel()
            low = torch.randn(m, 2) @ torch.randn(2, n)
            layer.weight.copy_(low.reshape(layer.weight.shape))
    x = torch.randn(8, 4, 6, 6)
    [net, other] = svd(rank=2).compress(job_for(model, None, x[:1]))
    assert net.info["ranks"] == {"0": 2, "4": 2, "6": 2}
    conv = net.model[0]
    assert isinstance(conv, nn.Sequential)
    assert (conv[0].out_channels, conv[0].kernel_size, conv[0].padding) == (2, (3, 3), (1, 1))
    assert conv[0].bias is None and conv[1].kernel_size == (1, 1)
    with torch.no_grad():
        assert torch.allclose(net.model(x), model(x), rtol=1e-4, atol=1e-5)
    assert net.info["stored_weights"] == 2 * (52 + 48 + 42)
    assert net.model is not other.model


def test_resnet18_fidelity_and_size_follow_the_budget():
    """Stages 1-2 and the classifier (about 40% of the FLOPs at 32 x 32; the exact SVD of the
    larger stages would dominate the test's time)."""
    torch.manual_seed(0)
    model = tvm.resnet18().eval()
    x = torch.randn(8, 3, 32, 32)
    layers = "layer1.*,layer2.*,fc"
    names = select_layers(model, layers)
    total = dense_weight_count(model, names)
    before = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        ref = model(x)
    errors, params, flops = {}, {}, {}
    for ratio in (0.1, 0.3, 0.6):
        budget = int(ratio * total)
        [net, _] = svd(solver="exact", dtype="float32", allocation="proportional").compress(
            job_for(model, budget, x[:1], layers))
        assert net.info["stored_weights"] <= budget
        with torch.no_grad():
            errors[ratio] = float((net.model(x) - ref).norm() / ref.norm())
        cost = model_cost(net.model, x[:1])
        params[ratio], flops[ratio] = cost["params"], cost["flops"]
    assert errors[0.1] > errors[0.3] > errors[0.6]
    dense_cost = model_cost(model, x[:1])
    assert params[0.1] < params[0.3] < params[0.6] < dense_cost["params"]
    assert dense_cost["params"] - params[0.1] > 0.85 * total  # ~90% of the selected weights go
    assert flops[0.1] < 0.75 * dense_cost["flops"]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_network_svd_needs_a_budget_or_rank():
    model = small_net()
    with pytest.raises(ImpossibleBudget):
        svd().compress(job_for(model, None, torch.zeros(1, 4, 6, 6)))


def test_energy_allocation_feeds_small_layers_and_keeps_exact_low_rank():
    """The default network allocation spends the budget by singular-value energy: a small layer
    is never starved (proportional shares give LeNet-5's 10 x 84 layer less than rank 1 at
    table 1's size), and a layer of exact rank 2 gets exactly rank 2."""
    from riembench.backbones import TaskShape, build_backbone
    from riembench.config.backbones import LeNet5Config

    torch.manual_seed(0)
    lenet = build_backbone(LeNet5Config(), TaskShape(10, 1, 32)).eval()
    with torch.no_grad():
        lenet.fc1.weight.copy_(torch.randn(120, 2) @ torch.randn(2, 400))
    names = select_layers(lenet, "fc")
    budget = 6300 - 214  # table 1's Lp-norm size for LeNet-5, biases excluded
    with pytest.raises(ImpossibleBudget):
        svd(allocation="proportional").compress(job_for(lenet, budget, torch.zeros(1, 1, 32, 32), "fc"))
    [net, _] = svd(allocation="energy").compress(job_for(lenet, budget, torch.zeros(1, 1, 32, 32), "fc"))
    ranks = net.info["ranks"]
    assert net.info["stored_weights"] <= budget
    assert ranks["fc1"] == 2
    assert all(r >= 1 for r in ranks.values()) and set(ranks) | set(net.info["kept_dense"]) == set(names)
    w = lenet.fc1.weight
    assert torch.allclose((net.model.fc1[1].weight @ net.model.fc1[0].weight).detach(), w.detach(), atol=1e-4 * float(w.abs().max()))


def test_uniform_rank_is_the_largest_common_rank_that_fits():
    from riembench.backbones import TaskShape, build_backbone
    from riembench.config.backbones import LeNet5Config

    lenet = build_backbone(LeNet5Config(), TaskShape(10, 1, 32)).eval()
    budget = 7200 - 214
    [net, _] = svd().compress(job_for(lenet, budget, torch.zeros(1, 1, 32, 32), "fc"))
    # rank r costs r * (520 + 204) for fc1, fc2 and min(r * 94, 840) for fc3: r = 8 fits (6632)
    assert net.info["ranks"] == {"fc1": 8, "fc2": 8, "fc3": 8}
    assert net.info["stored_weights"] == 8 * (520 + 204 + 94) <= budget
    assert 9 * (520 + 204) + 840 > budget
