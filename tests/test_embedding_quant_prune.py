"""RieM / Lp-norm at "8/16" (stored numbers rounded after fitting, inputs at 16 bits), RieM after
structured pruning (table 3), and Neuron Merging: what each promises, checked on small nets."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from riembench.compression.compact import EmbeddedLayer, embedded_layers, load_compact, save_compact
from riembench.compression.fake_quant import INPUT_QUANT
from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.methods.prune import prune_structured_info
from riembench.compression.network import select_layers
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS
from riembench.core.errors import RiembenchError
from riembench.sizing.cost import model_cost


class ConvNet(nn.Module):
    """conv-bn-relu-conv-bn-relu-pool-fc: BN statistics for every input but the image's."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(24)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


def convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = ConvNet()
    with torch.no_grad():  # non-trivial BN statistics, as a trained net has
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    return net.eval()


def method(name: str, **overrides):
    base = {"name": name}
    if name in ("riem", "lpnorm"):
        base.update({"progress": False, "fit": {"steps": 30, "eval_every": 10}})
    cfg = OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(overrides))
    return METHODS.get(name)(typed_group(cfg, METHODS))


def compress(meth, model: nn.Module, budget: int, seeds=(0,)):
    layers = select_layers(model, "all")
    model, _ = meth.prepare(model, layers)
    job = NetworkJob(model, layers, SizeTarget(budget), list(seeds), torch.device("cpu"),
                     torch.zeros(1, 3, 8, 8))
    return meth.compress(job)


@pytest.mark.parametrize("name", ["riem", "lpnorm"])
def test_w8_rounds_every_stored_number_and_cost_counts_eight_bits(name):
    model = convnet()
    (float_out,) = compress(method(name), model, budget=1500)
    (q_out,) = compress(method(name, w_bits=8), model, budget=1500)
    q = q_out.model
    layers = embedded_layers(q)
    assert set(layers) == {"conv1", "conv2", "fc"} and q_out.info["w_bits"] == 8
    for layer in layers.values():
        assert layer.field_bits == 8
        for pname, p in layer.field.named_parameters(recurse=False):
            if pname in type(layer.field).READOUT:
                continue  # kept at 32 bits and re-solved (compact.quantize_embedded)
            if pname in ("P", "R"):  # per feature column: at most 2^8 values in each
                cols = p.detach().reshape(-1, p.shape[-1])
                assert max(len(torch.unique(cols[:, j])) for j in range(cols.shape[1])) <= 256
            else:
                assert len(torch.unique(p.detach())) <= 256
        # the materialized weight is rebuilt from the rounded numbers
        assert torch.equal(layer.weight, layer.generated_weight())
    # 8 bits cost little fidelity against the original weights (the read-out is re-solved)
    for n, layer in layers.items():
        target = model.get_submodule(n).weight.detach()
        ref = embedded_layers(float_out.model)[n].weight
        err_float = (ref - target).norm() / target.norm()
        err_q = (layer.weight - target).norm() / target.norm()
        assert not torch.equal(layer.weight, ref) and err_q < err_float * 1.02 + 1e-3, (
            n, float(err_float), float(err_q))
    # cost: each embedded layer's positions and metric at 8 bits; read-out, bias, BN at 32
    embedded_bits = sum((m.field_numel() - m.field.readout_numel()) * 8
                        + (m.field.readout_numel() + (m.bias.numel() if m.bias is not None else 0))
                        * 32 for m in layers.values())
    rest_bits = sum(t.numel() * 32 for k, t in q.state_dict().items()
                    if not k.split(".")[0] in layers and not k.endswith("num_batches_tracked"))
    rest_bits += sum(t.numel() * 64 for k, t in q.state_dict().items()
                     if k.endswith("num_batches_tracked"))
    cost = model_cost(q, torch.zeros(1, 3, 8, 8), q_out.info["bits_by_param"], flops=False)
    assert cost["stored_bytes"] * 8 == pytest.approx(embedded_bits + rest_bits)
    float_cost = model_cost(float_out.model, torch.zeros(1, 3, 8, 8), flops=False)
    assert cost["stored_bytes"] < float_cost["stored_bytes"]


def test_a16_quantizes_inputs_that_batchnorm_describes(tmp_path):
    model = convnet()
    (out,) = compress(method("riem", w_bits=8, a_bits=16), model, budget=1500)
    q = out.model
    assert out.info["a_bits"] == 16
    assert set(out.info["act_ranges"]) == {"conv2", "fc"}  # their inputs follow a BN + ReLU
    assert "conv1" in out.info["act_float"]  # the image: no statistics without data
    for name in ("conv2", "fc"):
        quant = getattr(q.get_submodule(name), INPUT_QUANT)
        assert quant.bits == 16 and float(quant.lo) >= 0  # after a ReLU
    x = torch.randn(4, 3, 8, 8)
    (w8,) = compress(method("riem", w_bits=8), model, budget=1500)
    # 16-bit inputs are close to float inputs
    assert torch.allclose(q(x), w8.model(x), atol=1e-2, rtol=1e-2)
    # a compact checkpoint keeps the bit-width (what cost reports after loading)
    save_compact(q, tmp_path / "q.pt")
    loaded = load_compact(tmp_path / "q.pt", convnet(seed=5))
    assert all(m.field_bits == 8 for m in embedded_layers(loaded).values())


def test_prune_ratio_prunes_before_sizing_and_converting():
    model = convnet()
    meth = method("riem", prune_ratio=0.25)
    layers = select_layers(model, "all")
    pruned, info = meth.prepare(model, layers)
    # conv2 feeds pool + flatten + fc: a reshaped output keeps its channels (methods/prune.py)
    assert info["pruned"]["pruned_channels"] == {"conv1": [16, 12]}
    assert pruned.conv2.in_channels == 12 and model.conv2.in_channels == 16  # model untouched
    (out,) = compress(meth, model, budget=1200)
    conv2 = out.model.get_submodule("conv2")
    assert isinstance(conv2, EmbeddedLayer) and conv2.weight_shape == (24, 12, 3, 3)
    assert out.model(torch.randn(2, 3, 8, 8)).shape == (2, 10)
    with pytest.raises(RiembenchError, match="prune_ratio"):
        method("riem", prune_ratio=1.0)


def test_bits_out_of_range_are_refused():
    with pytest.raises(RiembenchError, match="w_bits"):
        method("lpnorm", w_bits=1)
    with pytest.raises(RiembenchError, match="w_bits"):
        method("riem", a_bits=40)


def _duplicated_channel_net() -> nn.Module:
    """Channel 5 of conv1 is exactly 3x channel 2 after BN (filter and bias): removing it and
    merging into channel 2 must be exact."""
    net = convnet()
    with torch.no_grad():
        bn = net.bn1
        a2 = bn.weight[2] / torch.sqrt(bn.running_var[2] + bn.eps)
        net.conv1.weight[5] = net.conv1.weight[2] * 1e-3  # tiny L1 norm: pruned first
        # choose bn5 so that a5 * w5 = 3 a2 w2 and its shifted bias = 3 x channel 2's
        a5 = 3 * a2 / 1e-3
        bn.running_var[5] = 1.0 - bn.eps
        bn.weight[5] = a5
        bn.running_mean[5] = 0.0
        bn.bias[5] = 3 * (bn.bias[2] - a2 * bn.running_mean[2])
    return net


def test_neuron_merge_is_exact_for_a_scaled_duplicate_and_plain_pruning_is_not():
    net = _duplicated_channel_net()
    x = torch.randn(8, 3, 8, 8)
    ref = net(x)
    ratio = 1 / 16  # one channel of conv1 (round half up: 1), one of conv2's 24 (1.5 -> 2)
    merged, info = prune_structured_info(net, ratio, ["conv1"], merge_threshold=0.9)
    plain, _ = prune_structured_info(net, ratio, ["conv1"])
    assert info["pruned_channels"]["conv1"] == [16, 15] and info["merged_channels"]["conv1"] == 1
    assert torch.allclose(merged(x), ref, atol=1e-4)
    assert not torch.allclose(plain(x), ref, atol=1e-2)
    # a threshold above every similarity merges nothing: the same as plain pruning
    none, info = prune_structured_info(net, ratio, ["conv1"], merge_threshold=1.01)
    assert info["merged_channels"]["conv1"] == 0 and torch.allclose(none(x), plain(x))


def test_neuron_merge_method_through_the_registry():
    net = convnet()
    meth = method("neuron_merge", ratio=0.25)
    layers = select_layers(net, "all")
    (out,) = meth.compress(NetworkJob(copy.deepcopy(net), layers, SizeTarget(None), [0],
                                      torch.device("cpu"), torch.zeros(1, 3, 8, 8)))
    assert out.info["merged_channels"] and out.model.conv2.in_channels == 12
    with pytest.raises(RiembenchError, match="structured"):
        method("neuron_merge", mode="unstructured")
