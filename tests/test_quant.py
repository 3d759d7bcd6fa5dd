"""The shared quantizer (grids worked out by hand), data-free activation statistics, and the
plain uniform quantization method on a randomly initialized ResNet-18."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from riembench.compression.act_ranges import ActStats, input_stats
from riembench.compression.fake_quant import FakeQuantAct, quantize_tensor
from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.network import select_layers
from riembench.config.methods import METHODS
from riembench.core.errors import RiembenchError

CPU = torch.device("cpu")


def calibrated_resnet18(seed: int = 0) -> nn.Module:
    """Random ResNet-18 whose BN running statistics are those of its own activations on
    standard-normal 32x32 inputs (as a trained model's are of its data), with random BN
    scales and shifts, so the BN-implied statistics mean something for these inputs."""
    torch.manual_seed(seed)
    model = tvm.resnet18()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.uniform_(0.3, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
            mod.momentum = None  # cumulative average over the calibration batches
            mod.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(32, 3, 32, 32))
    return model.eval()


def job_for(model: nn.Module, layers: str = "all", bits: int = 32) -> NetworkJob:
    return NetworkJob(model, select_layers(model, layers), SizeTarget(None, bits=bits), [0, 1], CPU,
                      torch.zeros(1, 3, 32, 32))


def rel_err(model: nn.Module, ref_model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref = ref_model(x)
        return float((model(x) - ref).norm() / ref.norm())


# ---------------------------------------------------------------------------------------------
# quantize_tensor


def test_asymmetric_grid_by_hand():
    # range [-1, 2] at 2 bits: scale 1, zero point 1, levels -1, 0, 1, 2
    x = torch.tensor([-1.0, 0.0, 0.4, 0.6, 1.7, 2.0])
    out = quantize_tensor(x, 2, per_channel=False, symmetric=False)
    assert out.tolist() == [-1.0, 0.0, 0.0, 1.0, 2.0, 2.0]


def test_asymmetric_range_contains_zero_and_zero_is_exact():
    # all-positive values: the range is widened to [0, 3]; 0.0 itself must map to 0.0
    x = torch.tensor([0.0, 1.4, 3.0])
    out = quantize_tensor(x, 2, per_channel=False, symmetric=False)
    assert out.tolist() == [0.0, 1.0, 3.0]


def test_symmetric_narrow_range_by_hand():
    # abs-max 3 at 3 bits: q in [-3, 3], scale 1
    x = torch.tensor([-3.0, -1.2, 0.4, 1.6, 3.0])
    out = quantize_tensor(x, 3, per_channel=False, symmetric=True)
    assert out.tolist() == [-3.0, -1.0, 0.0, 2.0, 3.0]
    with pytest.raises(RiembenchError):
        quantize_tensor(x, 1, per_channel=False, symmetric=True)


def test_minmax_grid_without_zero_point_keeps_end_points():
    """exact_zero=False (RieM positions in [0, 1)): the grid is lo + k (hi - lo) / (2^b - 1)."""
    x = torch.tensor([0.3, 0.42, 0.58, 0.9])
    out = quantize_tensor(x, 2, per_channel=False, symmetric=False, exact_zero=False)
    assert torch.allclose(out, torch.tensor([0.3, 0.5, 0.5, 0.9]))


def test_levels_and_error_bound_at_b_bits():
    torch.manual_seed(0)
    x = torch.randn(64, 50)
    for bits in (2, 4, 8):
        out = quantize_tensor(x, bits, per_channel=False, symmetric=False)
        assert out.unique().numel() <= 2 ** bits
        scale = float(x.max() - x.min()) / (2 ** bits - 1)
        # the zero point is rounded, which shifts the grid by up to half a step
        assert float((out - x).abs().max()) <= scale * (1 + 1e-4)


def test_per_channel_ranges_follow_the_axis():
    x = torch.stack([torch.linspace(-1, 1, 33), 100 * torch.linspace(-1, 1, 33)])
    per_tensor = quantize_tensor(x, 4, per_channel=False, symmetric=True)
    per_row = quantize_tensor(x, 4, per_channel=True, symmetric=True, axis=0)
    per_col = quantize_tensor(x.T, 4, per_channel=True, symmetric=True, axis=1).T
    assert torch.equal(per_row, per_col)
    # the small row is wiped out by the per-tensor grid (step 100/7) but not by its own grid
    assert float(per_tensor[0].abs().max()) == 0.0
    assert float((per_row[0] - x[0]).abs().max()) <= 1 / 7 / 2 + 1e-6


def test_straight_through_gradient():
    x = torch.randn(10, requires_grad=True)
    quantize_tensor(x, 3, per_channel=False, symmetric=False).sum().backward()
    assert torch.equal(x.grad, torch.ones(10))


# ---------------------------------------------------------------------------------------------
# data-free activation statistics


def test_clipped_normal_moments_match_monte_carlo():
    mu, sigma = torch.tensor([-1.0, 0.0, 2.0]), torch.tensor([1.0, 2.0, 0.5])
    stats = ActStats.gaussian(mu, sigma).after_relu()
    torch.manual_seed(0)
    samples = torch.relu(mu + sigma * torch.randn(400_000, 3)).double()
    assert torch.allclose(stats.mean(), samples.mean(0), atol=5e-3)
    assert torch.allclose(stats.var(), samples.var(0), atol=1e-2)


def test_fake_quant_act_range_from_stats():
    stats = ActStats.gaussian(torch.tensor([1.0, 2.0]), torch.tensor([0.5, 1.0])).after_relu()
    quant = FakeQuantAct.from_stats(stats, bits=8, k=6.0)
    # lo: max(0, 1 - 3, 2 - 6) = 0; hi: 2 + 6 * 1 = 8
    assert (float(quant.lo), float(quant.hi)) == (0.0, 8.0)
    out = quant(torch.tensor([-1.0, 0.0, 4.0, 20.0]))
    assert out[0] == 0 and out[1] == 0 and out[3] == 8.0
    assert abs(float(out[2]) - 4.0) <= 8 / 255 / 2 + 1e-6


def test_input_stats_predict_the_measured_means():
    """On a model whose BN statistics describe its inputs, the BN-propagated means of the
    layers' inputs (after ReLU / residual adds) match the measured ones."""
    model = calibrated_resnet18()
    report = input_stats(model)
    assert "no BatchNorm determines the network input" in report.missing["conv1"]
    seen: dict[str, torch.Tensor] = {}
    hooks = [get.register_forward_pre_hook(
        lambda mod, args, n=name: seen.__setitem__(n, args[0].detach()))
        for name, get in model.named_modules() if name in ("layer1.0.conv2", "layer3.1.conv1")]
    with torch.no_grad():
        model(torch.randn(64, 3, 32, 32))
    for h in hooks:
        h.remove()
    for name, act in seen.items():
        measured = act.transpose(0, 1).reshape(act.shape[1], -1).mean(1).double()
        predicted = report.inputs[name].mean()
        assert float((predicted - measured).norm() / measured.norm()) < 0.15, name


# ---------------------------------------------------------------------------------------------
# the method


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return calibrated_resnet18()


def test_quant_error_grows_as_bits_shrink_and_per_channel_helps(resnet):
    x = torch.randn(32, 3, 32, 32)
    schema = METHODS.schema("quant")
    errs = {}
    for bits in (8, 6, 4):
        [net, _] = METHODS.get("quant")(schema(w_bits=bits)).compress(job_for(resnet))
        errs[bits] = rel_err(net.model, resnet, x)
    [pc, _] = METHODS.get("quant")(schema(w_bits=4, per_channel=True)).compress(job_for(resnet))
    assert errs[8] < errs[6] < errs[4]
    assert errs[8] < 0.25
    assert rel_err(pc.model, resnet, x) < errs[4]


def test_quant_records_bits_and_attaches_activation_quantizers(resnet):
    before = copy.deepcopy(resnet.state_dict())
    schema = METHODS.schema("quant")
    nets = METHODS.get("quant")(schema(w_bits=6, a_bits=6)).compress(job_for(resnet))
    for k, v in resnet.state_dict().items():  # the pretrained model is untouched
        assert torch.equal(v, before[k]), k
    net = nets[0]
    layers = select_layers(resnet, "all")
    bits = net.info["bits_by_param"]
    assert {k: v for k, v in bits.items() if k.endswith(".weight")} == {
        f"{n}.weight": 6 for n in layers}
    # every bias (BN folding gave each conv one) at the default 16 bits
    assert {k: v for k, v in bits.items() if k.endswith(".bias")} == {
        f"{n}.bias": 16 for n in layers}
    # the job gives no input range, so the image stays in float, and says why
    assert set(net.info["act_float"]) == {"conv1"}
    assert "range is unknown" in net.info["act_float"]["conv1"]
    quantized = [n for n, m in net.model.named_modules() if isinstance(m, FakeQuantAct)]
    # every other layer's input, and both inputs of the 8 residual adds (the skip path too)
    assert len(quantized) == len(layers) - 1 + 2 * 8
    assert sum(k.startswith("add") for k in net.info["act_ranges"]) == 16
    # 6-bit per-tensor weights: at most 64 distinct values per layer
    assert net.model.get_submodule("layer2.0.conv1").weight.unique().numel() <= 64
    assert nets[0].model is not nets[1].model


def test_quant_without_w_bits_keeps_float_weights_whatever_the_size(resnet):
    # an unsized method: the runner leaves the size out of its identity, so no size may change it
    schema = METHODS.schema("quant")
    [net, _] = METHODS.get("quant")(schema(w_bits=None)).compress(job_for(resnet, bits=4))
    assert net.info["bits_by_param"] == {}
    conv = next(m for m in net.model.modules() if isinstance(m, nn.Conv2d))
    assert len(torch.unique(conv.weight)) > 2 ** 4  # not on a 4-bit grid
