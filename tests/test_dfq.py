"""DFQ (Nagel et al., 2019): each step checked against what it promises, on randomly initialized
torchvision blocks with non-trivial BN statistics."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models.resnet import Bottleneck

from riembench.compression.act_ranges import ActStats
from riembench.compression.fake_quant import quantize_tensor
from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.methods.dfq import (
    absorb_high_bias,
    correct_bias,
    equalize,
    find_pairs,
    fold_batchnorm,
    pair_ranges,
)
from riembench.compression.network import select_layers
from riembench.config.methods import METHODS

CPU = torch.device("cpu")


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial random BN statistics and affine parameters (not consistent with any data)."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
            mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) * 1.7 - 0.2)  # some negative gammas
            mod.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


def calibrate(model: nn.Module, make_input, batches: int = 3) -> nn.Module:
    """Set BN running statistics to those of the model's own activations on ``make_input()``,
    as a trained model's describe its data (so BN-implied statistics hold for such inputs)."""
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.momentum = None
            mod.reset_running_stats()
    model.train()
    with torch.no_grad():
        for _ in range(batches):
            model(make_input())
    return model.eval()


def calibrated_resnet18(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = tvm.resnet18()
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.weight.data.uniform_(0.3, 1.5)
            mod.bias.data.uniform_(-0.5, 0.5)
    return calibrate(model, lambda: torch.randn(32, 3, 32, 32))


def make_ranges_unequal(model: nn.Module, spread: float = 3.0, seed: int = 1) -> nn.Module:
    """Scale channel c of every BasicBlock's bn1 by a_c in [e^-spread, e^spread] and divide
    conv2's input channel c by a_c: the function is unchanged (ReLU is positively homogeneous)
    but the folded conv1 filters get wildly different ranges, DFQ's motivating case."""
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if type(mod).__name__ == "BasicBlock":
            a = torch.exp(spread * (2 * torch.rand(mod.bn1.num_features, generator=g) - 1))
            mod.bn1.weight.data *= a
            mod.bn1.bias.data *= a
            mod.conv2.weight.data /= a.reshape(1, -1, 1, 1)
    return model


def job_for(model: nn.Module, layers: str = "all") -> NetworkJob:
    return NetworkJob(model, select_layers(model, layers), SizeTarget(None), [0], CPU,
                      torch.zeros(1, 3, 32, 32))


def rel_err(model: nn.Module, ref_model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        ref = ref_model(x)
        return float((model(x) - ref).norm() / ref.norm())


def dfq(**overrides):
    return METHODS.get("dfq")(METHODS.schema("dfq")(**overrides))


# ---------------------------------------------------------------------------------------------
# function-preserving steps


def test_fold_equalize_absorb_preserve_resnet18_outputs():
    torch.manual_seed(0)
    model = randomize_bn(tvm.resnet18())
    x = torch.randn(4, 3, 32, 32)
    work = copy.deepcopy(model)
    stats = fold_batchnorm(work)
    assert len(stats) == 20 and not any(isinstance(m, nn.BatchNorm2d) for m in work.modules())
    pairs, _ = find_pairs(work, select_layers(work, "all"))
    before = [pair_ranges(work, p) for p in pairs]
    equalize(work, pairs, stats)
    info = absorb_high_bias(work, pairs, stats)
    with torch.no_grad():
        assert torch.allclose(work(x), model(x), rtol=1e-4, atol=1e-4 * float(model(x).abs().max()))
    # the BasicBlocks' conv2 pads its input, so the default absorbs nothing (and says why)
    assert set(info["absorb_skipped"]) == {p.first for p in pairs}
    assert all("zero-pads" in r for r in info["absorb_skipped"].values())
    # ranges were unequal before (the check below is not vacuous)
    assert max(float((r1 - r2).abs().max()) for r1, r2 in before) > 1e-2


def test_resnet18_pairs_and_skip_reasons():
    work = randomize_bn(tvm.resnet18())
    fold_batchnorm(work)
    pairs, skipped = find_pairs(work, select_layers(work, "all"))
    assert [(p.first, p.second) for p in pairs] == [
        (f"layer{i}.{j}.conv1", f"layer{i}.{j}.conv2") for i in range(1, 5) for j in range(2)]
    assert all(p.relu for p in pairs)
    assert "residual add" in skipped["layer1.0.conv2"]
    assert "residual add" in skipped["layer2.0.downsample.0"]
    assert "2 consumers" in skipped["conv1"]  # the stem's maxpool feeds a block and its skip
    assert "network's output" in skipped["fc"]


def test_equalization_makes_pair_ranges_equal():
    model = randomize_bn(tvm.resnet18())
    fold_batchnorm(model)
    pairs, _ = find_pairs(model, select_layers(model, "all"))
    info = equalize(model, pairs, {})
    assert info["converged"]
    for pair in pairs:
        r1, r2 = pair_ranges(model, pair)
        assert torch.allclose(r1, r2, rtol=1e-5), pair


def test_equalization_of_a_bottleneck_chain_converges_and_preserves_outputs():
    """conv1 -> conv2 -> conv3 share conv2's scales: only sweeping to convergence equalizes both."""
    torch.manual_seed(0)
    block = randomize_bn(Bottleneck(64, 16))
    x = torch.randn(2, 64, 8, 8)
    work = copy.deepcopy(block)
    stats = fold_batchnorm(work)
    pairs, skipped = find_pairs(work, select_layers(work, "all"))
    assert [(p.first, p.second) for p in pairs] == [("conv1", "conv2"), ("conv2", "conv3")]
    assert "residual add" in skipped["conv3"]
    info = equalize(work, pairs, stats, tol=1e-7)
    assert info["converged"] and info["sweeps"] > 2
    for pair in pairs:
        r1, r2 = pair_ranges(work, pair)
        assert torch.allclose(r1, r2, rtol=1e-5)
    with torch.no_grad():
        assert torch.allclose(work(x), block(x), rtol=1e-4, atol=1e-5)


def test_high_bias_absorption_is_exact_where_preactivations_exceed_c():
    """conv1 (1x1) -> BN -> ReLU -> conv2 (1x1): absorbing c = max(0, beta - 3|gamma|) leaves the
    output unchanged at every position whose pre-activations are all >= c (the 3-sigma
    assumption; channels with c = 0 are untouched), and that is nearly every position on inputs
    the BN statistics describe."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 16, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 8, 1))
    calibrate(model, lambda: torch.randn(64, 4, 6, 6))
    model[1].bias.data = torch.linspace(-1, 6, 16)  # c > 0 on the channels with beta > 3
    model[1].weight.data = torch.full((16,), 0.8)
    work = copy.deepcopy(model)
    stats = fold_batchnorm(work)
    c = (stats["0"].mu - 3 * stats["0"].sigma).clamp(min=0)
    assert int((c > 0).sum()) >= 6
    pairs, _ = find_pairs(work, ["0", "3"])
    info = absorb_high_bias(work, pairs, stats)
    assert info["absorbed"] and float(stats["0"].mu.max()) < 6 - 1  # ranges did shrink
    x = torch.randn(32, 4, 6, 6)
    with torch.no_grad():
        pre = model[1](model[0](x))
        c4 = c.float().reshape(1, -1, 1, 1)
        exact = ((pre >= c4) | (c4 == 0)).all(dim=1, keepdim=True)  # c = 0: nothing moved
        diff = (work(x) - model(x)).abs().amax(dim=1, keepdim=True)
    assert float(exact.float().mean()) > 0.9
    assert float(diff[exact].max()) < 1e-4
    assert float(diff[~exact].max()) > 1e-3  # where the assumption fails the change is visible


# ---------------------------------------------------------------------------------------------
# bias correction


def test_bias_correction_removes_expected_output_shift():
    """conv2 quantized at 4 bits on inputs drawn from the BN-implied distribution
    ReLU(N(beta, gamma^2)): its mean output error, large before, vanishes after correction."""
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 16, 3)  # no padding: the correction is exact at every position
    beta, gamma = torch.rand(32) * 2 - 0.5, torch.rand(32) + 0.3
    stats = ActStats.gaussian(beta, gamma).after_relu()
    inputs = torch.relu(beta.reshape(1, -1, 1, 1) + gamma.reshape(1, -1, 1, 1)
                        * torch.randn(512, 32, 5, 5))
    float_w = conv.weight.detach().clone()
    with torch.no_grad():
        ref = conv(inputs)
        conv.weight.copy_(quantize_tensor(conv.weight, 4, per_channel=False, symmetric=False))
        shift_before = (conv(inputs) - ref).mean(dim=(0, 2, 3)).abs()
        correct_bias(conv, float_w, stats.mean().float())
        shift_after = (conv(inputs) - ref).mean(dim=(0, 2, 3)).abs()
    assert float(shift_before.max()) > 0.05
    assert float(shift_after.max()) < 0.1 * float(shift_before.max())


def test_dfq_bias_correction_reduces_mean_output_error_of_a_conv_pair():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(8, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
                          nn.Conv2d(32, 16, 3))
    calibrate(model, lambda: torch.randn(64, 8, 7, 7))
    x = torch.randn(256, 8, 7, 7)
    job = NetworkJob(model, ["3"], SizeTarget(None), [0], CPU, torch.zeros(1, 8, 7, 7))
    shifts = {}
    for bc in (False, True):
        [net] = dfq(w_bits=4, a_bits=None, bias_correct=bc).compress(job)
        with torch.no_grad():
            shifts[bc] = float((net.model(x) - model(x)).mean(dim=(0, 2, 3)).abs().mean())
        if bc:
            assert "3" in net.info["bias_corrected"]
    assert shifts[True] < 0.3 * shifts[False]


# ---------------------------------------------------------------------------------------------
# the whole method


@pytest.fixture(scope="module")
def unequal_resnet() -> nn.Module:
    return make_ranges_unequal(calibrated_resnet18())


def test_dfq_beats_plain_per_tensor_quantization_at_6_bits(unequal_resnet):
    x = torch.randn(32, 3, 32, 32)
    job = job_for(unequal_resnet)
    quant = METHODS.get("quant")(METHODS.schema("quant")(w_bits=6, a_bits=6))
    [plain] = quant.compress(job)
    [ours] = dfq(w_bits=6, a_bits=6).compress(job)
    err_plain = rel_err(plain.model, unequal_resnet, x)
    err_dfq = rel_err(ours.model, unequal_resnet, x)
    assert err_dfq < 0.6 * err_plain, (err_dfq, err_plain)
    assert ours.info["equalization"]["converged"]
    assert len(ours.info["eq_pairs"]) == 8


def test_dfq_leaves_the_pretrained_model_alone_and_each_step_switches_off(unequal_resnet):
    before = copy.deepcopy(unequal_resnet.state_dict())
    job = job_for(unequal_resnet)
    [off] = dfq(w_bits=8, a_bits=None, equalize=False, absorb_bias=False,
                bias_correct=False).compress(job)
    for k, v in unequal_resnet.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert "equalization" not in off.info and "bias_corrected" not in off.info
    assert "absorbed" not in off.info
    # with every step off, DFQ is BN folding + per-tensor quantization: the plain baseline
    [plain] = METHODS.get("quant")(METHODS.schema("quant")(w_bits=8)).compress(job)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(off.model(x), plain.model(x))
