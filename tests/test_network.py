"""Network conversion: layer selection, neuron chains, converted layers, sizes, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from riembench.backbones import LeNet5, TaskShape, build_backbone
from riembench.compression.compact import EmbeddedLayer, embedded_layers, load_compact, save_compact
from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.network import find_chains, select_layers, weight_matrix
from riembench.config.backbones import LeNet5Config
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS
from riembench.config.sizes import DimsSizeConfig, ParamsSizeConfig, RatioSizeConfig
from riembench.core.errors import ImpossibleBudget, RiembenchError
from riembench.engine.embeddings import LpNormEmbedding, RiemEmbedding
from riembench.harness.evaluate import evaluate_accuracy
from riembench.sizing.budgets import network_target
from riembench.sizing.measure import layer_numel

CPU = torch.device("cpu")


def method(name: str, **over):
    node = OmegaConf.create({"name": name, "progress": False, **over})
    return METHODS.get(name)(typed_group(node, METHODS))


def lenet(classes: int = 10) -> LeNet5:
    torch.manual_seed(0)
    return build_backbone(LeNet5Config(), TaskShape(classes, 1, 32)).eval()


def job(model: nn.Module, layers: list[str], target: SizeTarget, seeds=(0, 1)) -> NetworkJob:
    return NetworkJob(model, layers, target, list(seeds), CPU, torch.zeros(1, 1, 32, 32))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.c(self.b(h) + h)  # the add breaks the b -> c chain; a feeds two users


def test_select_layers_and_errors():
    m = lenet()
    assert select_layers(m, "fc") == ["fc1", "fc2", "fc3"]
    assert select_layers(m, "conv") == ["conv1", "conv2"]
    assert select_layers(m, "all") == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert select_layers(m, "fc*, conv2") == ["conv2", "fc1", "fc2", "fc3"]
    with pytest.raises(RiembenchError, match="selects no Linear/Conv2d"):
        select_layers(m, "nothing.*")


def test_chains_follow_elementwise_ops_only():
    m = lenet()
    assert find_chains(m, select_layers(m, "all")) == [["conv1"], ["conv2"], ["fc1", "fc2", "fc3"]]
    assert find_chains(Residual(), ["a", "b", "c"]) == [["a"], ["b"], ["c"]]


def test_lenet_fc_parameter_count_matches_closed_form():
    m = lenet()
    layers = select_layers(m, "fc")
    riem = method("riem", init="random", fit={"steps": 1, "warmup": 0})
    (out,) = riem.compress(job(m, layers, SizeTarget(None, dims={"d": 10, "d_mu": 4}), seeds=[0]))
    s, d, d_mu = 6, 10, 4
    neurons = 400 + 120 + 84 + 10
    closed = neurons * d + 3 * (s * (d * d_mu + d_mu) + d_mu + 1) + (120 + 84 + 10)
    assert layer_numel(out.model, layers) == closed
    # the tensors agree: every distinct stored tensor of the FC layers, counted once
    seen = {id(p): p.numel() for n in layers for p in out.model.get_submodule(n).parameters()}
    assert sum(seen.values()) == closed
    lp = method("lpnorm", heads=2, fit={"steps": 1, "warmup": 0})
    (out,) = lp.compress(job(m, layers, SizeTarget(None, dims={"d": 10}), seeds=[0]))
    assert layer_numel(out.model, layers) == neurons * 10 + 3 * (2 + 1) + 214


def test_converted_layer_reproduces_low_rank_weight():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 5)).eval()
    with torch.no_grad():  # a rank-3 weight: what a 30 x 40 RieM of modest size can hold
        net[0].weight.copy_(torch.randn(30, 3) @ torch.randn(3, 40) / 3)
    riem = method("riem", init="svd", fit={"steps": 150, "lr": 3e-3})
    outs = riem.compress(NetworkJob(net, ["0"], SizeTarget(None, dims={"d": 12, "d_mu": 7}),
                                    [0, 1], CPU, torch.zeros(1, 40)))
    w = net[0].weight
    for out in outs:
        layer = out.model[0]
        assert isinstance(layer, EmbeddedLayer)
        rel = ((layer.weight - w).square().mean() / w.var()).item()
        assert rel < 0.02, rel
        assert out.info["layers"]["0"]["init"]["init"] == "svd"
        x = torch.randn(16, 40)
        assert torch.allclose(out.model(x), net(x), atol=0.15 * net(x).abs().max().item())


def test_lpnorm_fits_its_own_family_on_a_network_layer():
    field = LpNormEmbedding([7], 24, 18, d=4, heads=2, p=2.0)
    target = field.reconstruct()[0].detach()
    net = nn.Sequential(nn.Linear(18, 24)).eval()
    with torch.no_grad():
        net[0].weight.copy_(target)
    lp = method("lpnorm", heads=2, fit={"steps": 600, "lr": 2e-2})
    (out,) = lp.compress(NetworkJob(net, ["0"], SizeTarget(None, dims={"d": 4}), [0], CPU,
                                    torch.zeros(1, 18)))
    rel = ((out.model[0].weight - target).square().mean() / target.var()).item()
    assert rel < 0.05, rel


def test_equal_shape_layers_batch_and_seeds_are_reproducible():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.Flatten()).eval()
    riem = method("riem", share=False, fit={"steps": 20})
    plan = riem.plan(job(net, ["0", "2"], SizeTarget(None, dims={"d": 6})))
    assert len(plan) == 1 and plan[0].layers == ["0", "2"]  # one stacked fit for both layers
    both = riem.compress(job(net, ["0", "2"], SizeTarget(None, dims={"d": 6}), seeds=[3, 4]))
    alone = riem.compress(job(net, ["0", "2"], SizeTarget(None, dims={"d": 6}), seeds=[4]))
    w_both = both[1].model[2].weight
    assert torch.allclose(w_both, alone[0].model[2].weight, atol=1e-4)
    assert not torch.allclose(both[0].model[2].weight, w_both)  # seeds differ


def test_size_targets_and_impossible_sizes():
    m = lenet()
    layers = select_layers(m, "fc")
    assert network_target(RatioSizeConfig(ratio=0.1), m, layers).budget == int(0.1 * 58920)
    assert network_target(ParamsSizeConfig(params=7200), m, layers).budget == 7200 - 214
    assert network_target(DimsSizeConfig(d=10), m, layers).dims == {"d": 10}
    with pytest.raises(ImpossibleBudget, match="leaves"):
        network_target(ParamsSizeConfig(params=100), m, layers)
    riem = method("riem")
    with pytest.raises(ImpossibleBudget, match="need at least"):
        riem.plan(job(m, layers, SizeTarget(700)))
    with pytest.raises(ImpossibleBudget, match="d=10"):
        riem.plan(job(m, layers, SizeTarget(2000, dims={"d": 10})))


def test_compact_checkpoint_roundtrip_and_size(tmp_path: Path):
    m = lenet()
    layers = select_layers(m, "fc")
    riem = method("riem", fit={"steps": 3, "warmup": 0})
    (out,) = riem.compress(job(m, layers, SizeTarget(6986), seeds=[0]))
    path = tmp_path / "lenet-riem.pt"
    size = save_compact(out.model, path, meta={"seed": 0})
    loaded = load_compact(path, lenet())
    x = torch.randn(3, 1, 32, 32)
    assert torch.allclose(loaded(x), out.model(x), atol=1e-6)
    assert set(embedded_layers(loaded)) == set(layers)
    assert loaded.fc2.field.R is loaded.fc1.field.P  # the chain is shared again after loading
    # the file holds the stored numbers once (fp32) plus the unconverted convs and pickle overhead
    convs = sum(p.numel() for n in ("conv1", "conv2") for p in m.get_submodule(n).parameters())
    numbers = layer_numel(out.model, layers) + convs
    assert 4 * numbers < size < 4 * numbers + 40_000
    dense = tmp_path / "dense.pt"
    torch.save(m.state_dict(), dense)
    assert size < dense.stat().st_size / 3
    with pytest.raises(RiembenchError, match="not a riembench compact checkpoint"):
        load_compact(dense, lenet())


def test_converted_model_keeps_accuracy_on_digits(tmp_path: Path):
    """A small MLP trained on digits, FC layers converted by RieM at 80% of their size, stays
    within 3 points of its accuracy (at 50% it does not: docs/table1.md explains why)."""
    from riembench.config.datasets import DigitsConfig
    from riembench.data.images import build_digits

    task = build_digits(DigitsConfig(image_size=8), tmp_path)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    xs = torch.stack([task.train[i][0] for i in range(len(task.train))])
    ys = torch.tensor([task.train[i][1] for i in range(len(task.train))])
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xs), ys).backward()
        opt.step()
    net.eval()
    base = evaluate_accuracy(net, task.test)
    assert base > 90
    riem = method("riem", share=False, d_mu_ratio=0.5)  # the default start and fit
    layers = select_layers(net, "fc")
    outs = riem.compress(NetworkJob(net, layers, SizeTarget(int(0.8 * (64 * 48 + 48 * 10))),
                                    [0, 1], CPU, torch.zeros(1, 1, 8, 8)))
    for out in outs:
        acc = evaluate_accuracy(out.model, task.test)
        assert acc > base - 3, (acc, base)


def test_riem_embedding_count_matches_tensors():
    field = RiemEmbedding([0], 12, 9, d=5, d_mu=3, shifts=[0, 1, 2])
    assert field.params_per_matrix == field.tensor_params_per_matrix()
    assert weight_matrix(nn.Conv2d(3, 8, 3)).shape == (8, 27)
