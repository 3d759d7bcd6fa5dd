"""Packed artifacts: every method's compressed model is written at its bit-widths, reads back
into a model with the same outputs, and its file is as small as what it claims to store."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from riembench.backbones.lenet5 import LeNet5
from riembench.backbones.resnet9 import ResNet9
from riembench.compression.fake_quant import quantize_tensor
from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.network import dense_weight_count, select_layers
from riembench.compression.packing import (
    ArtifactError,
    decode_bitmask,
    decode_uniform,
    encode_bitmask,
    encode_uniform,
    pack_bits,
    unpack_bits,
)
from riembench.compression.quantize import graph_quant_sites, restore_graph_quants
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS
from riembench.core.errors import RiembenchError
from riembench.sizing.artifact import load_artifact, read_artifact, save_artifact
from riembench.sizing.cost import stored_tensors


def lenet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return LeNet5(10, 1, 32).eval()


def resnet9(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = ResNet9(10, 1, width=0.25)
    with torch.no_grad():  # trained-looking BN statistics (DFQ reads them)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


FIXTURES = {"lenet5": lenet, "resnet9": resnet9}

#: (method, overrides, budget as a fraction of the dense weights or None for unsized methods)
CASES = {
    "original": ("original", {}, None),
    "quant_w4": ("quant", {"w_bits": 4}, None),
    # act_scope=reference (the default) puts quantizers on the image and inside the traced
    # graph (both inputs of every residual add); layers: on the layers' inputs only
    "quant_w8a8_pc": ("quant", {"w_bits": 8, "a_bits": 8, "per_channel": True}, None),
    "quant_w8a8_layers": ("quant", {"w_bits": 8, "a_bits": 8, "act_scope": "layers"}, None),
    "quant_w6_sym": ("quant", {"w_bits": 6, "symmetric": True}, None),
    "dfq_w4a8": ("dfq", {"w_bits": 4, "a_bits": 8}, None),
    "dfq_w4a8_layers": ("dfq", {"w_bits": 4, "a_bits": 8, "act_scope": "layers"}, None),
    "svd_float": ("svd", {}, 0.25),
    "svd_int8": ("svd", {"w_bits": 8}, 0.25),
    "prune_sparse": ("prune", {"mode": "unstructured", "ratio": 0.8}, None),
    "prune_structured": ("prune", {"mode": "structured", "ratio": 0.3}, None),
    "riem_w8": ("riem", {"w_bits": 8, "init": "svd"}, 0.1),
    "riem_w16_a16": ("riem", {"w_bits": 16, "a_bits": 16, "init": "svd"}, 0.1),
    "lpnorm_w8": ("lpnorm", {"w_bits": 8}, 0.1),
    "riem_pruned_w6": ("riem", {"prune_ratio": 0.3, "w_bits": 6, "init": "svd"}, 0.1),
    "neuron_merge": ("neuron_merge", {"ratio": 0.3}, None),
    "lpnorm_float": ("lpnorm", {}, 0.1),
}


def make_method(name: str, overrides: dict):
    base: dict = {"name": name}
    if name in ("riem", "lpnorm"):
        base.update({"progress": False, "fit": {"steps": 5, "eval_every": 5}})
    cfg = OmegaConf.merge(OmegaConf.create(base), OmegaConf.create(overrides))
    return METHODS.get(name)(typed_group(cfg, METHODS))


def compress(case: str, model: nn.Module):
    name, overrides, fraction = CASES[case]
    meth = make_method(name, overrides)
    layers = select_layers(model, "all")
    prepared, _ = meth.prepare(model, layers)
    budget = None if fraction is None else int(fraction * dense_weight_count(prepared, layers))
    job = NetworkJob(prepared, layers, SizeTarget(budget), [0], torch.device("cpu"),
                     torch.zeros(1, 1, 32, 32))
    (out,) = meth.compress(job)
    assert out.failed is None, out.failed
    return out, layers


@pytest.mark.parametrize("backbone", sorted(FIXTURES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_pack_load_gives_the_same_logits(tmp_path, backbone, case):
    build = FIXTURES[backbone]
    model = build()
    out, layers = compress(case, model)
    path = tmp_path / "model.safetensors"
    size = save_artifact(out.model, path, out.info, layers, reference=build(), meta={"case": case})
    assert size == path.stat().st_size
    loaded = load_artifact(path, build(seed=7))  # other weights: everything comes from the file
    x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = out.model(x), loaded(x)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max())), \
        float((got - want).abs().max())


@pytest.mark.parametrize("case", ["quant_w4", "dfq_w4a8", "svd_int8", "prune_sparse", "riem_w8",
                                  "lpnorm_w8", "original"])
def test_artifact_is_the_formula_size_plus_small_overhead(tmp_path, case):
    """Packed codes make the file what the bits say (plus scales, header and metadata): a 4-bit
    model is ~1/8 of its float file, not a float file."""
    model = resnet9()
    out, layers = compress(case, model)
    formula_bytes = stored_tensors(out.model, out.info.get("bits_by_param"))[2] / 8
    if case == "prune_sparse":
        formula_bytes = None
    size = save_artifact(out.model, tmp_path / "a.safetensors", out.info, layers, resnet9())
    tensors, _ = read_artifact(tmp_path / "a.safetensors")
    payload = sum(t.numel() * t.element_size() for t in tensors.values())
    assert payload < size < payload + 64 * 1024  # header + metadata: bounded
    if formula_bytes is not None:
        assert size >= 0.95 * formula_bytes
        assert size <= formula_bytes * 1.10 + 32 * 1024, (size, formula_bytes)
    fp32 = save_artifact(model, tmp_path / "f.safetensors", reference=resnet9())
    if case == "quant_w4":
        assert size < 0.2 * fp32
    if case == "prune_sparse":  # 80% zeros: values + 1-bit mask, well under the dense file
        assert size < 0.4 * fp32


@pytest.mark.parametrize("bits", [1, 3, 4, 6, 8, 12, 16])
def test_bit_packing_round_trips_and_takes_ceil_bits_over_8_bytes(bits):
    codes = torch.randint(0, 2 ** bits, (1001,), generator=torch.Generator().manual_seed(bits))
    packed = pack_bits(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(1001 * bits / 8)
    assert torch.equal(unpack_bits(packed, bits, 1001), codes)


@pytest.mark.parametrize("kw", [{"per_channel": False, "symmetric": False},
                                {"per_channel": True, "symmetric": False},
                                {"per_channel": True, "symmetric": True},
                                {"per_channel": True, "symmetric": False, "axis": -1,
                                 "exact_zero": False}])
def test_codes_decode_to_the_fake_quantized_tensor(kw):
    x = torch.randn(12, 9, generator=torch.Generator().manual_seed(0))
    axis = kw.pop("axis", 0)
    exact_zero = kw.pop("exact_zero", True)
    fq = quantize_tensor(x, 5, kw["per_channel"], kw["symmetric"], axis=axis, exact_zero=exact_zero)
    packed = encode_uniform(fq, 5, axis=axis, exact_zero=exact_zero, **kw)
    assert torch.allclose(decode_uniform(packed), fq, atol=1e-6)


def test_encoding_refuses_a_tensor_off_its_grid():
    x = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ArtifactError, match="not on the 4-bit grid"):
        encode_uniform(x, 4, per_channel=False, symmetric=False)


def test_bitmask_round_trips():
    x = torch.randn(5, 7)
    x[x.abs() < 0.8] = 0
    assert torch.equal(decode_bitmask(encode_bitmask(x)), x)


def test_a_non_artifact_file_is_refused(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a file")
    with pytest.raises(ArtifactError, match="could not read"):
        load_artifact(bad, lenet())


@pytest.mark.parametrize("case", ["quant_w8a8_pc", "dfq_w4a8"])
def test_quantizers_inside_the_graph_come_back_at_their_nodes(tmp_path, case):
    """Under act_scope=reference the residual adds' inputs are quantized inside an fx graph:
    the artifact records where, and the reader puts the same quantizers, with their ranges,
    back at the same nodes of a fresh trace."""
    from torch import fx

    from riembench.compression.quantize import GRAPH_QUANT

    out, layers = compress(case, resnet9())
    assert isinstance(out.model, fx.GraphModule)
    path = tmp_path / "q.safetensors"
    save_artifact(out.model, path, out.info, layers, reference=resnet9())
    _, meta = read_artifact(path)
    sites = meta["graph_quant"]
    assert len(sites) == len(list(getattr(out.model, GRAPH_QUANT).children())) >= 2  # an add
    loaded = load_artifact(path, resnet9(seed=7))
    assert isinstance(loaded, fx.GraphModule)
    for qname in sites:
        want = out.model.get_submodule(f"{GRAPH_QUANT}.{qname}")
        got = loaded.get_submodule(f"{GRAPH_QUANT}.{qname}")
        assert (got.bits, float(got.lo), float(got.hi)) == (want.bits, float(want.lo),
                                                            float(want.hi))


def test_a_graph_quantizer_on_another_architecture_is_refused(tmp_path):
    out, layers = compress("quant_w8a8_pc", resnet9())
    path = tmp_path / "q.safetensors"
    save_artifact(out.model, path, out.info, layers, reference=resnet9())
    with pytest.raises(ArtifactError, match="does not fit LeNet5 .*not the architecture"):
        load_artifact(path, lenet())
    sites = graph_quant_sites(out.model)
    first = next(iter(sites))
    sites[first] = {**sites[first], "input": "no_such_node"}
    with pytest.raises(RiembenchError, match="no_such_node.*not the architecture it was quantized"):
        restore_graph_quants(resnet9(), sites)
