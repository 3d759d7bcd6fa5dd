"""The one graph analysis (riembench.compression.graph) and what DFQ makes of it on MobileNetV2, the DFQ
paper's own model: every equalizable pair found (depthwise convs, ReLU6), the same pairs as a
port of jakc4103/DFQ's relation rule, equalization function-preserving once ReLU6 is a ReLU,
and every activation quantized under the reference's scope."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import fx, nn
from torch.nn import functional as F

from riembench.compression.fake_quant import FakeQuantAct
from riembench.compression.graph import ModelGraph, Op
from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.methods.dfq import (
    equalize,
    find_pairs,
    fold_batchnorm,
    pair_ranges,
    replace_relu6,
)
from riembench.compression.network import select_layers
from riembench.config.methods import METHODS

CPU = torch.device("cpu")


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm2d):
            c = mod.num_features
            mod.running_mean.copy_(torch.rand(c, generator=g) * 2 - 1)
            mod.running_var.copy_(torch.rand(c, generator=g) * 1.5 + 0.5)
            mod.weight.data.copy_(torch.rand(c, generator=g) * 1.5 + 0.2)
            mod.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


@pytest.fixture(scope="module")
def mobilenet() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.mobilenet_v2(weights=None))


def reference_relations(model: nn.Module, passthrough: tuple[type[nn.Module], ...],
                        functions: tuple[object, ...]) -> list[tuple[str, str]]:
    """A port of jakc4103/DFQ's ``utils/relation.create_relation`` onto an fx trace: from each
    Conv2d/Linear walk *backwards* through single-input, single-consumer nodes of the allowed
    kinds to the previous Conv2d/Linear; a layer that two later layers reach this way is
    dropped. The reference's own allowed list is BatchNorm2d, ReLU, AvgPool2d, F.pad and
    torch.mean (its MobileNetV2 ends in ``torch.mean(x.view(...))``, view not being a node)."""
    modules = dict(model.named_modules())
    graph = fx.symbolic_trace(model).graph
    layers = (nn.Conv2d, nn.Linear)

    def module(node: fx.Node) -> nn.Module | None:
        return modules.get(str(node.target)) if node.op == "call_module" else None

    def find_prev(node: fx.Node) -> str | None:
        bottoms = node.all_input_nodes
        while len(bottoms) == 1 and bottoms[0].op != "placeholder" and len(bottoms[0].users) == 1:
            bot = bottoms[0]
            if isinstance(module(bot), layers):
                return str(bot.target)
            allowed = (isinstance(module(bot), passthrough)
                       or (bot.op == "call_function" and bot.target in functions))
            if not allowed:
                return None
            bottoms = bot.all_input_nodes
        return None

    relations: OrderedDict[str, tuple[str, str]] = OrderedDict()
    for node in graph.nodes:
        if isinstance(module(node), layers):
            prev = find_prev(node)
            if prev in relations:
                relations.pop(prev)
            elif prev is not None:
                relations[prev] = (prev, str(node.target))
    return list(relations.values())


def test_op_table_names_relu6_hardswish_and_depthwise():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.ReLU6(), nn.Hardswish(),
                          nn.Conv2d(4, 8, 1, groups=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    traced = ModelGraph.trace(model)
    kinds = [traced.kind(n) for n in traced.nodes()]
    assert kinds == [Op.INPUT, Op.CONV, Op.RELU6, Op.HARDSWISH, Op.CONV, Op.GLOBAL_POOL,
                     Op.FLATTEN, Op.LINEAR, Op.OUTPUT]
    nodes = traced.layer_nodes()
    assert traced.is_depthwise(nodes["0"]) and not traced.is_depthwise(nodes["3"])
    assert traced.is_grouped(nodes["3"])
    assert traced.input_reaches("0") and not traced.input_reaches("3")


def test_untraceable_model_gives_a_reason_everywhere():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x  # data-dependent: fx cannot trace

    traced = ModelGraph.trace(Branchy())
    assert not traced.traced and "cannot trace Branchy" in str(traced.error)
    pairs, skipped = find_pairs(Branchy(), ["a"])
    assert pairs == [] and "cannot trace" in skipped["a"]


def test_mobilenet_v2_equalization_pairs_match_the_reference_rule(mobilenet):
    work = copy.deepcopy(mobilenet)
    assert len(replace_relu6(work)) == 35  # the reference's --relu switch
    unfolded = copy.deepcopy(work)
    fold_batchnorm(work)
    layers = select_layers(work, "all")
    assert len(layers) == 53
    pairs, skipped = find_pairs(work, layers)
    ours = [(p.first, p.second) for p in pairs]
    # by hand: stem -> block 1 depthwise -> project -> block 2 expand; in every block 2..17
    # expand -> depthwise -> project; block 17's project -> the last 1x1 conv -> the classifier
    # (through ReLU, global pooling, flatten, dropout); the 16 projects feeding a residual add
    # or a block input that a residual add also reads start none
    assert len(ours) == 37
    assert ("features.0.0", "features.1.conv.0.0") in ours
    assert ("features.1.conv.1", "features.2.conv.0.0") in ours
    assert ("features.17.conv.2", "features.18.0") in ours
    assert ours[-1] == ("features.18.0", "classifier.1")
    assert len(skipped) == 16 and "network's output" in skipped["classifier.1"]
    depthwise = {n for n, m in work.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1}
    assert len(depthwise) == 17
    assert all(sum(d in p for p in ours) == 2 for d in depthwise)  # second, then first
    # the reference's rule, ported: with dropout (identity in eval) passed like its
    # torch.mean head, the same 37; with its literal list, torchvision's Dropout hides the head
    rule = (nn.BatchNorm2d, nn.ReLU, nn.AvgPool2d)
    functions = (F.pad, torch.mean, F.adaptive_avg_pool2d, torch.flatten)
    assert reference_relations(unfolded, (*rule, nn.Dropout), functions) == ours
    assert reference_relations(unfolded, rule, functions) == ours[:-1]


def test_mobilenet_v2_equalization_preserves_outputs_once_relu6_is_relu(mobilenet):
    """CLE is exact through ReLU (positively homogeneous), not through ReLU6; the reference
    (and the paper) replace ReLU6 by ReLU first. With ReLU6 kept, pairs through it are not
    equalized (relu6=keep), and forcing them shows why."""
    x = torch.randn(2, 3, 64, 64)
    work = copy.deepcopy(mobilenet)
    replace_relu6(work)
    reference = copy.deepcopy(work)
    stats = fold_batchnorm(work)
    pairs, _ = find_pairs(work, select_layers(work, "all"))
    before = [pair_ranges(work, p, "minmax") for p in pairs]
    info = equalize(work, pairs, stats, "minmax", max_iter=500, tol=1e-6)
    assert info["converged"]
    assert max(float((r1 - r2).abs().max() / r1.max()) for r1, r2 in before) > 0.1
    for pair in pairs:
        r1, r2 = pair_ranges(work, pair, "minmax")
        assert torch.allclose(r1, r2, rtol=1e-4)
    with torch.no_grad():
        ref = reference(x)
        assert float((work(x) - ref).abs().max() / ref.abs().max()) < 1e-5

    kept = copy.deepcopy(mobilenet)
    fold_batchnorm(kept)
    kept_pairs, kept_skipped = find_pairs(kept, select_layers(kept, "all"))
    # only the two pairs with no activation between (a project conv into the next 1x1 conv)
    assert [(p.first, p.second) for p in kept_pairs] == [
        ("features.1.conv.1", "features.2.conv.0.0"), ("features.17.conv.2", "features.18.0")]
    assert "ReLU6" in kept_skipped["features.0.0"]
    forced = copy.deepcopy(mobilenet)
    stats = fold_batchnorm(forced)
    equalize(forced, pairs, stats, "minmax", max_iter=50, tol=1e-6)  # through ReLU6 anyway
    with torch.no_grad():
        orig = mobilenet(x)
        assert float((forced(x) - orig).abs().max() / orig.abs().max()) > 1e-3


def test_dfq_on_mobilenet_v2_quantizes_every_activation_under_the_reference_scope(mobilenet):
    job = NetworkJob(mobilenet, select_layers(mobilenet, "all"), SizeTarget(None), [0], CPU,
                     torch.zeros(1, 3, 64, 64), input_range=(-2.1179, 2.64))
    dfq = METHODS.get("dfq")
    [ref] = dfq(METHODS.schema("dfq")(w_bits=8, a_bits=8)).compress(job)
    assert ref.info["act_float"] == {}
    assert len(ref.info["eq_pairs"]) == 37 and len(ref.info["relu6_replaced"]) == 35
    # 53 layer inputs (the stem's on the image range) + both inputs of the 10 residual adds
    assert len(ref.info["act_ranges"]) == 53 + 2 * 10
    assert ref.info["act_ranges"]["features.0.0"] == pytest.approx([-2.1179, 2.64])
    quants = [m for m in ref.model.modules() if isinstance(m, FakeQuantAct)]
    assert len(quants) == 73
    [old] = dfq(METHODS.schema("dfq")(w_bits=8, a_bits=8, act_scope="layers")).compress(job)
    assert set(old.info["act_float"]) == {"features.0.0"}  # the image stays float
    assert len(old.info["act_ranges"]) == 52
    x = torch.randn(2, 3, 64, 64).clamp(-2.1179, 2.64)
    with torch.no_grad():
        out = mobilenet(x)
        for net in (ref, old):
            assert float((net.model(x) - out).norm() / out.norm()) < 0.5


def test_relu6_statistics_are_the_doubly_clipped_normal():
    from riembench.compression.act_ranges import ActStats

    mu, sigma = torch.tensor([-1.0, 2.0, 5.0, 7.0]), torch.tensor([1.0, 2.0, 1.5, 0.5])
    stats = ActStats.gaussian(mu, sigma).after_relu6()
    torch.manual_seed(0)
    samples = (mu + sigma * torch.randn(400_000, 4)).clamp(0, 6).double()
    assert torch.allclose(stats.mean(), samples.mean(0), atol=5e-3)
    assert torch.allclose(stats.var(), samples.var(0), atol=1e-2)
    lo, hi = stats.bounds(6.0)
    assert float(hi.max()) == 6.0 and float(lo.min()) == 0.0


def test_input_range_from_the_task_normalization():
    from riembench.config.datasets import DigitsConfig
    from riembench.data.images import build_digits

    task = build_digits(DigitsConfig(image_size=8))
    lo, hi = task.input_range()
    images = torch.stack([task.test[i][0] for i in range(len(task.test))])
    assert lo == pytest.approx(float(images.min()), abs=1e-5)  # black pixels exist
    assert hi >= float(images.max()) - 1e-5 and lo < 0 < hi


def test_quantized_graph_module_keeps_names_and_copies(mobilenet):
    job = NetworkJob(mobilenet, select_layers(mobilenet, "all"), SizeTarget(None), [0], CPU,
                     torch.zeros(1, 3, 32, 32), input_range=(-2.1179, 2.64))
    [net] = METHODS.get("quant")(METHODS.schema("quant")(w_bits=8, a_bits=8)).compress(job)
    model = net.model
    assert isinstance(model, fx.GraphModule)
    assert not model.training
    keys = set(model.state_dict())
    assert {f"{n}.weight" for n in select_layers(mobilenet, "all")} <= keys
    assert sum(k.startswith("act_quant.") for k in keys) == 2 * 2 * 10  # lo, hi per add input
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(copy.deepcopy(model)(x), model(x))
