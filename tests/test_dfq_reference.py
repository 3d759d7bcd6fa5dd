"""DFQ against a small port of jakc4103/DFQ's math (dfq.py, utils/layer_transform.py), step
by step on a fixture with a depthwise conv, to 1e-6: BN folding, cross-layer equalization
(the reference multiplies the first layer by 1/s = sqrt(r1 r2) / r1, i.e. divides by
s = sqrt(r1 r2) / r2, with "minmax" ranges), high-bias absorption (c = max(0, beta - 3 gamma)
into the next bias through the kernel sum, padded convs included) and bias correction
(bias -= eps E[x], E[x] the clipped-normal mean gamma phi(-beta/gamma) + beta (1 -
Phi(-beta/gamma)) of the ReLU'd BN output).

Ported in float64, as math rather than code. Two places where the reference is not followed
are left out of the port on purpose: its bias correction always takes the weight error at 8
bits (``_quantize_error(weight, 8)``) whatever ``--bits_weight`` says, and it adds each
correction to the *next* BatchNorm's ``fake_bias`` (so the next layer's E[x] moves by the
correction that was meant to cancel a shift); both are compared here on the weights riembench
actually quantizes, at the bits it quantizes to.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from riembench.compression.act_ranges import input_stats
from riembench.compression.methods.dfq import (
    absorb_high_bias,
    correct_bias,
    equalize,
    find_pairs,
    fold_batchnorm,
)
from riembench.compression.network import select_layers
from riembench.compression.quantize import quantize_weights

TOL = 1e-6


def fixture() -> nn.Sequential:
    """conv 3x3 -> BN -> ReLU -> depthwise 3x3 -> BN -> ReLU -> 1x1 -> BN -> ReLU -> 1x1, with
    BN shifts large enough that some channels have beta > 3 gamma (absorption acts)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 6, 1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 5, 1))
    g = torch.Generator().manual_seed(1)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
            mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) * 0.8 + 0.1)
            mod.bias.data.copy_(torch.rand(c, generator=g) * 4 - 1)
    return model.eval()


CONVS, BNS = (0, 3, 6, 9), (1, 4, 7)


# ---------------------------------------------------------------------------------------------
# the port (float64 tensors: weights W[i], biases b[i], BN "fake" weights/biases per BN)


def port_fold(model: nn.Sequential) -> tuple[list, list, list, list]:
    """merge_batchnorm: W *= gamma / sqrt(var + eps); b = b gamma / sqrt(..) + beta - gamma mean
    / sqrt(..); fake_weight = |gamma|, fake_bias = beta."""
    weights, biases, fake_w, fake_b = [], [], [], []
    for i, conv_idx in enumerate(CONVS):
        conv = model[conv_idx]
        w = conv.weight.detach().double().clone()
        b = conv.bias.detach().double().clone()
        if i < len(BNS):
            bn = model[BNS[i]]
            gamma, beta = bn.weight.detach().double(), bn.bias.detach().double()
            std = torch.sqrt(bn.running_var.double() + bn.eps)
            w = w * (gamma / std).reshape(-1, 1, 1, 1)
            b = b * gamma / std + beta - gamma * bn.running_mean.double() / std
            fake_w.append(gamma.abs().clone())
            fake_b.append(beta.clone())
        weights.append(w)
        biases.append(b)
    return weights, biases, fake_w, fake_b


def port_equalize_pair(w1, w2, b1, fw, fb):
    """_layer_equalization (unsigned ranges), with its grouped-conv indexing."""
    num_group = w1.shape[0] // w2.shape[1] if w1.shape[0] != w2.shape[1] else 1
    gi, go = w1.shape[0] // num_group, w2.shape[0] // num_group
    scales = torch.ones(w1.shape[0], dtype=torch.float64)
    for g in range(num_group):
        first = w1[g * gi:(g + 1) * gi]
        second = w2[g * go:(g + 1) * go]
        for ii in range(second.shape[1]):
            r1 = first[ii].max() - first[ii].min()
            r2 = second[:, ii].max() - second[:, ii].min()
            s = torch.sqrt(r1 * r2) / r1
            k = g * gi + ii
            scales[k] = s
            w1[k] *= s
            fw[k] *= s
            fb[k] *= s
            b1[k] *= s
            w2[g * go:(g + 1) * go, ii] /= s
    return scales


def port_cle(weights, biases, fake_w, fake_b, sweeps: int = 20000) -> None:
    for _ in range(sweeps):
        dev = 0.0
        for i in range(len(CONVS) - 1):
            s = port_equalize_pair(weights[i], weights[i + 1], biases[i], fake_w[i], fake_b[i])
            dev = max(dev, float((s - 1).abs().max()))
        if dev < 1e-13:
            return


def port_absorb(weights, biases, fake_w, fake_b, n: float = 3.0) -> None:
    for i in range(len(CONVS) - 1):
        c = (fake_b[i] - n * fake_w[i]).clamp(min=0)
        w2 = weights[i + 1]
        num_group = weights[i].shape[0] // w2.shape[1]
        so, si = w2.shape[0] // num_group, weights[i].shape[0] // num_group
        summed = w2.reshape(w2.shape[0], w2.shape[1], -1).sum(-1)
        wc = torch.zeros(w2.shape[0], dtype=torch.float64)
        for g in range(num_group):
            wc[g * so:(g + 1) * so] = summed[g * so:(g + 1) * so] @ c[g * si:(g + 1) * si]
        biases[i] -= c
        fake_b[i] -= c
        biases[i + 1] += wc


def port_clipped_mean(weight, bias):
    """calculate_mean: E[ReLU(N(bias, weight^2))], clamped at 0."""
    a = -bias / weight
    pdf = torch.exp(-0.5 * a * a) / (2 * torch.pi) ** 0.5
    mean = weight * pdf + bias * (1 - torch.special.ndtr(a))
    return mean.clamp(min=0)


def port_bias_correct(w_float, w_quant, bias, fake_w, fake_b):
    eps = (w_quant - w_float).reshape(w_float.shape[0], w_float.shape[1], -1).sum(-1)
    expect = port_clipped_mean(fake_w, fake_b)
    num_group = expect.shape[0] // eps.shape[1]
    so, si = eps.shape[0] // num_group, expect.shape[0] // num_group
    shift = torch.zeros(eps.shape[0], dtype=torch.float64)
    for g in range(num_group):
        shift[g * so:(g + 1) * so] = eps[g * so:(g + 1) * so] @ expect[g * si:(g + 1) * si]
    return bias - shift


# ---------------------------------------------------------------------------------------------


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    err = float((ours.detach().double() - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
    assert err < TOL, (what, err)


def ours_after_absorption(model: nn.Sequential):
    work = copy.deepcopy(model)
    stats = fold_batchnorm(work)
    pairs, _ = find_pairs(work, select_layers(work, "all"))
    assert [(p.first, p.second) for p in pairs] == [("0", "3"), ("3", "6"), ("6", "9")]
    folded = copy.deepcopy(work)
    info = equalize(work, pairs, stats, "minmax", max_iter=2000, tol=1e-7)
    assert info["converged"]
    equalized = copy.deepcopy(work)
    absorbed = absorb_high_bias(work, pairs, stats, 3.0, allow_padded=True)
    assert len(absorbed["absorbed"]) >= 2  # the fixture makes absorption act
    return folded, equalized, work, stats


def test_fold_equalize_absorb_agree_with_the_reference_port():
    model = fixture()
    folded, equalized, absorbed, _ = ours_after_absorption(model)
    weights, biases, fake_w, fake_b = port_fold(model)
    for i, idx in enumerate(CONVS):
        assert_close(folded[idx].weight, weights[i], f"folded W{i}")
        assert_close(folded[idx].bias, biases[i], f"folded b{i}")
    port_cle(weights, biases, fake_w, fake_b)
    for i, idx in enumerate(CONVS):
        assert_close(equalized[idx].weight, weights[i], f"equalized W{i}")
        assert_close(equalized[idx].bias, biases[i], f"equalized b{i}")
    port_absorb(weights, biases, fake_w, fake_b)
    for i, idx in enumerate(CONVS):
        assert_close(absorbed[idx].weight, weights[i], f"absorbed W{i}")
        assert_close(absorbed[idx].bias, biases[i], f"absorbed b{i}")


def test_bias_correction_agrees_with_the_reference_port():
    model = fixture()
    _, _, work, stats = ours_after_absorption(model)
    # the statistics our bias correction reads (BN-implied, after equalization and absorption)
    means = input_stats(work, stats)
    float_w = {idx: work[idx].weight.detach().double().clone() for idx in CONVS}
    float_b = {idx: work[idx].bias.detach().double().clone() for idx in CONVS}
    quantize_weights(work, [str(i) for i in CONVS], 4, per_channel=False, symmetric=False)
    _, _, fake_w, fake_b = port_fold(model)
    weights, biases, _, _ = port_fold(model)
    port_cle(weights, biases, fake_w, fake_b)
    port_absorb(weights, biases, fake_w, fake_b)
    corrected = 0
    for i, idx in enumerate(CONVS[1:]):
        layer = work[idx]
        expected = port_bias_correct(float_w[idx], layer.weight.detach().double(), float_b[idx],
                                     fake_w[i], fake_b[i])
        correct_bias(layer, float_w[idx], means.inputs[str(idx)].mean())
        assert_close(layer.bias, expected, f"corrected b of layer {idx}")
        corrected += int(not torch.allclose(expected, float_b[idx]))
    assert corrected == 3  # the corrections are not zero (the check is not vacuous)
    assert "network input" in means.missing["0"]  # the stem reads the image: no E[x]
