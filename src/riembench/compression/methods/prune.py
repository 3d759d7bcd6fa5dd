"""Magnitude pruning, data-free: the weights alone decide what goes.

* ``unstructured``: in every selected layer (``scope: layer``) or over all of them at once
  (``scope: global``) the ``ratio`` fraction of weights with the smallest magnitude is set to 0.
  The model keeps its shape, so its file and FLOPs do not shrink; ``info`` records the sparsity
  and the size a sparse format would take.
* ``structured``: filter pruning by L1 norm (Li et al., ICLR 2017). In every prunable layer the
  ``ratio`` fraction of output channels with the smallest filter norm is removed, and the model
  is rebuilt *smaller and dense*: the layer gets fewer output channels, the BatchNorm after it
  the same channels, the next layer fewer input channels, so parameters and FLOPs really drop.

Which layers are prunable (structured): those whose output reaches exactly one next
Linear/Conv2d through per-channel ops only (BatchNorm, ReLU, dropout, pooling). A layer whose
output is added to another branch or concatenated cannot lose channels without changing the
other branch. In torchvision ResNets this leaves exactly the block-internal convs: ``conv1`` of a
BasicBlock and ``conv1``/``conv2`` of a Bottleneck; the block's last conv, the downsample conv and
the stem feed the residual stream and keep all their channels (the usual rule of data-free
channel pruning of ResNets, e.g. Neuron Merging, Kim et al. 2020). Each other selected layer's
reason is in ``info["skipped"]``. :func:`prune_structured` is also what RieM-with-pruning
(table 3: prune, then RieM at 6 bits) calls.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn

from riembench.compression.graph import HOMOGENEOUS, LAYERS, PER_CHANNEL, Layer, ModelGraph, Op
from riembench.compression.methods.base import CompressedNet, NetworkJob, NetworkMethod
from riembench.compression.network import (
    conv_geometry,
    get_layer,
    get_module,
    module_weight,
    set_module,
)
from riembench.config.methods import PruneConfig
from riembench.core.errors import RiembenchError

MODES = ("unstructured", "structured")
SCOPES = ("layer", "global")
CRITERIA = ("l1", "l2")




# --------------------------------------------------------------------------------------------
# structured


@dataclass
class ChannelGroup:
    """A layer whose output channels can be removed, the per-channel modules its output goes
    through (BatchNorms among them are pruned along), and the one layer that reads them."""

    producer: str
    consumer: str
    norms: list[str] = field(default_factory=list)
    #: every op on the way besides the BNs commutes with a positive channel scale (ReLU,
    #: pooling, dropout), so Neuron Merging's compensation is exact; not through ReLU6/hardswish
    homogeneous: bool = True


def prunable_groups(model: nn.Module,
                    layers: list[str]) -> tuple[list[ChannelGroup], dict[str, str]]:
    """Which of ``layers`` can lose output channels, and why the others cannot."""
    traced = ModelGraph.trace(model)
    if not traced.traced:
        return [], traced.reason_not_traced(layers)
    wanted = set(layers)
    groups: list[ChannelGroup] = []
    skipped: dict[str, str] = {}
    for name, node in traced.layer_nodes().items():
        if name not in wanted:
            continue
        group, reason = _follow_channels(traced, node)
        if group is None:
            skipped[name] = reason
        else:
            groups.append(group)
    return groups, skipped


def _follow_channels(traced: ModelGraph, node: fx.Node) -> tuple[ChannelGroup | None, str]:
    name = str(node.target)
    if traced.is_grouped(node):
        return None, "grouped conv"
    if traced.calls[name] != 1:
        return None, "module is called more than once"
    norms: list[str] = []
    homogeneous = True
    cur = node
    while True:
        users = list(cur.users)
        if len(users) != 1:
            return None, (f"output feeds {len(users)} consumers: channels are shared with another "
                          "branch (residual add or concatenation)" if users else "unused")
        user = users[0]
        kind = traced.kind(user)
        target = str(user.target)
        # a stateless op (a shared ReLU) may be reused, a layer or BN may not
        if (kind in LAYERS or kind is Op.BATCHNORM) and traced.calls[target] != 1:
            return None, f"'{target}' is called more than once"
        if kind in LAYERS:
            if traced.is_grouped(user):
                return None, f"next layer '{target}' is a grouped conv"
            if (kind is Op.CONV) != (traced.kind(node) is Op.CONV):
                return None, f"next layer '{target}' reads a reshaped output"
            return ChannelGroup(name, target, norms, homogeneous), ""
        if kind in PER_CHANNEL:
            if kind is Op.BATCHNORM:
                norms.append(target)
            else:
                homogeneous = homogeneous and kind in HOMOGENEOUS
            cur = user
            continue
        if kind is Op.OUTPUT:
            return None, "output is the network's output"
        return None, (f"output goes through '{traced.describe(user)}' ({kind.value}: residual "
                      "add, concatenation or reshape)" if kind in (Op.ADD, Op.CAT, Op.FLATTEN)
                      else f"output goes through '{traced.describe(user)}' ({kind.value})")


def _channel_scores(weight: torch.Tensor, criterion: str) -> torch.Tensor:
    flat = weight.detach().reshape(weight.shape[0], -1)
    return flat.abs().sum(dim=1) if criterion == "l1" else flat.square().sum(dim=1).sqrt()


def n_kept(channels: int, ratio: float) -> int:
    """Channels kept when ``ratio`` of ``channels`` are removed (round half up, at least one)."""
    return max(1, channels - int(ratio * channels + 0.5))


def prune_structured(model: nn.Module, ratio: float, layers: list[str],
                     criterion: str = "l1") -> nn.Module:
    """A smaller dense copy of ``model``: ``ratio`` of the output channels of every prunable
    layer among ``layers`` removed (lowest filter norm first). ``model`` is not modified."""
    return prune_structured_info(model, ratio, layers, criterion)[0]


def prune_structured_info(model: nn.Module, ratio: float, layers: list[str],
                          criterion: str = "l1", merge_threshold: float | None = None
                          ) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`prune_structured`, plus what was pruned and why other layers were not.

    ``merge_threshold``: Neuron Merging (:func:`merge_into_kept`) instead of plain removal:
    each removed channel is folded into its most similar kept channel when their cosine
    similarity is at least this; ``None`` removes channels outright.
    """
    if criterion not in CRITERIA:
        raise RiembenchError(f"prune criterion must be one of {', '.join(CRITERIA)}")
    pruned = copy.deepcopy(model)
    groups, skipped = prunable_groups(pruned, list(layers))
    channels: dict[str, list[int]] = {}
    merged: dict[str, int] = {}
    unmerged: dict[str, str] = {}
    for group in groups:
        producer = get_layer(pruned, group.producer)
        total = producer.weight.shape[0]
        keep = n_kept(total, ratio)
        scores = _channel_scores(producer.weight, criterion)
        idx = torch.sort(torch.topk(scores, keep).indices).values
        consumer = get_layer(pruned, group.consumer)
        if merge_threshold is not None and not group.homogeneous:
            unmerged[group.producer] = ("an op on the way does not commute with a channel "
                                        "scale (ReLU6, hardswish, ...): channels removed unmerged")
        elif merge_threshold is not None:
            norms = [_get_bn(pruned, n) for n in group.norms]
            merged[group.producer] = merge_into_kept(producer, norms, consumer, idx,
                                                     merge_threshold)
        set_module(pruned, group.producer, _slice_layer(producer, out_idx=idx))
        for norm in group.norms:
            set_module(pruned, norm, _slice_bn(_get_bn(pruned, norm), idx))
        set_module(pruned, group.consumer, _slice_layer(consumer, in_idx=idx))
        channels[group.producer] = [total, keep]
    info: dict[str, Any] = {"pruned_channels": channels, "skipped": skipped, "ratio": ratio,
                            "criterion": criterion}
    if merge_threshold is not None:
        info.update({"merged_channels": merged, "merge_threshold": merge_threshold,
                     "unmerged": unmerged})
    return pruned, info


def require_pruned(info: dict[str, Any], who: str) -> None:
    """Refuse a structured pruning that removed nothing, with the first reasons why."""
    if not info["pruned_channels"]:
        reasons = "; ".join(f"{k}: {v}" for k, v in list(info["skipped"].items())[:4])
        raise RiembenchError(f"{who}: none of the selected layers can lose channels ({reasons})")


@torch.no_grad()
def merge_into_kept(producer: Layer, norms: list[nn.modules.batchnorm._BatchNorm], consumer: Layer,
                    kept: torch.Tensor, threshold: float) -> int:
    """Neuron Merging (Kim et al., NeurIPS 2020), data-free: compensate the consumer for the
    channels about to be removed. Modifies ``consumer``'s weight in place; returns how many
    removed channels were merged.

    Channel j of the producer reaches the consumer as ``relu(a_j . [x, 1])``, where ``a_j`` is
    its filter and bias with the BatchNorm(s) on the way folded in. When ``a_j = s a_k`` with
    ``s > 0``, ``relu(a_j . x) = s relu(a_k . x)`` (positive homogeneity), so the consumer loses
    nothing by reading ``s`` times channel k in place of j: its input weights of k grow by
    ``s`` times those of j. For a removed j the kept k with the highest cosine similarity of
    ``a`` is chosen; the merge is made when that similarity is at least ``threshold``, with
    ``s = |a_j| / |a_k|`` (the paper's scale). Per-channel ops other than ReLU and BN on the
    way (pooling, dropout) commute with a positive scale as well.
    """
    w = producer.weight.detach().reshape(producer.weight.shape[0], -1).double()
    b = (producer.bias.detach().double() if producer.bias is not None
         else torch.zeros(w.shape[0], dtype=torch.float64))
    for bn in norms:  # eval-mode BN: y = g (x - mu) / sqrt(var + eps) + beta
        g = bn.weight.double() if bn.affine else torch.ones_like(b)
        beta = bn.bias.double() if bn.affine else torch.zeros_like(b)
        running_mean, running_var, _ = _running_stats(bn)
        a = g / torch.sqrt(running_var.double() + bn.eps)
        w, b = w * a[:, None], a * (b - running_mean.double()) + beta
    affine = torch.cat([w, b[:, None]], dim=1)
    norm = affine.norm(dim=1).clamp_min(1e-12)
    unit = affine / norm[:, None]
    removed = torch.ones(w.shape[0], dtype=torch.bool)
    removed[kept] = False
    sim = unit[removed] @ unit[kept].T  # (removed, kept)
    best_sim, best = sim.max(dim=1)
    weight = consumer.weight  # (out, in, ...): input channel on dim 1
    n_merged = 0
    for j, k, s_jk in zip(torch.nonzero(removed).flatten().tolist(), best.tolist(),
                          best_sim.tolist(), strict=True):
        if s_jk < threshold or s_jk <= 0:
            continue
        k_full = int(kept[k])
        scale = float(norm[j] / norm[k_full])
        weight[:, k_full] += scale * weight[:, j]
        n_merged += 1
    return n_merged


def _slice_layer(layer: Layer, out_idx: torch.Tensor | None = None,
                 in_idx: torch.Tensor | None = None) -> Layer:
    """A new Linear/Conv2d holding the selected output and/or input channels of ``layer``."""
    w = layer.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    bias = layer.bias.detach() if layer.bias is not None else None
    if bias is not None and out_idx is not None:
        bias = bias[out_idx]
    new: Layer
    if isinstance(layer, nn.Linear):
        new = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, device=w.device,
                        dtype=w.dtype)
    else:
        new = nn.Conv2d(w.shape[1], w.shape[0], groups=1, bias=bias is not None, device=w.device,
                        dtype=w.dtype, **conv_geometry(layer))
    with torch.no_grad():
        new.weight.copy_(w)
        if bias is not None:
            assert new.bias is not None  # built with a bias
            new.bias.copy_(bias)
    new.train(layer.training)
    return new


def _slice_bn(bn: nn.modules.batchnorm._BatchNorm, idx: torch.Tensor) -> nn.Module:
    new = type(bn)(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                   device=bn.running_mean.device if bn.running_mean is not None else None)
    with torch.no_grad():
        if bn.affine:
            new.weight.copy_(bn.weight[idx])
            new.bias.copy_(bn.bias[idx])
        if bn.track_running_stats and bn.running_mean is not None:
            running_mean, running_var, tracked = _running_stats(bn)
            new_mean, new_var, new_tracked = _running_stats(new)
            new_mean.copy_(running_mean[idx])
            new_var.copy_(running_var[idx])
            new_tracked.copy_(tracked)
    new.train(bn.training)
    return new


def _get_bn(model: nn.Module, name: str) -> nn.modules.batchnorm._BatchNorm:
    """The BatchNorm ``name`` of ``model`` (a module :func:`prunable_groups` found one)."""
    bn = get_module(model, name)
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    return bn


def _running_stats(bn: nn.modules.batchnorm._BatchNorm
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(running mean, running variance, batches tracked) of a BatchNorm that tracks them."""
    mean, var, tracked = bn.running_mean, bn.running_var, bn.num_batches_tracked
    assert mean is not None and var is not None and tracked is not None
    return mean, var, tracked


# --------------------------------------------------------------------------------------------
# unstructured


def prune_unstructured(model: nn.Module, ratio: float, layers: list[str],
                       scope: str = "layer") -> tuple[nn.Module, dict[str, Any]]:
    """A copy of ``model`` with the ``ratio`` smallest-magnitude weights of ``layers`` zeroed:
    exactly ``int(ratio * n)`` of each layer's ``n`` weights (``scope="layer"``), or every weight
    at or below the global ``ratio`` quantile of all their magnitudes (``scope="global"``)."""
    pruned = copy.deepcopy(model)
    weights = {n: module_weight(get_module(pruned, n)) for n in layers}
    cut = None
    if scope == "global":
        everything = torch.cat([weight.detach().abs().flatten() for weight in weights.values()])
        k = int(ratio * everything.numel())
        cut = float(everything.kthvalue(k).values) if k > 0 else -1.0
    zeros = 0
    total = 0
    for weight in weights.values():
        w = weight.detach()
        mask = w.abs() > cut if cut is not None else _drop_smallest(w, int(ratio * w.numel()))
        with torch.no_grad():
            weight.mul_(mask)
        zeros += int((~mask).sum())
        total += w.numel()
    nonzero = total - zeros
    info = {"sparsity": zeros / max(total, 1), "nonzero_weights": nonzero, "pruned_weights": zeros,
            # a sparse file: the kept values plus a 1-bit mask of all positions, in 32-bit words
            "sparse_stored_numel": nonzero + (total + 31) // 32, "scope": scope}
    return pruned, info


def _drop_smallest(w: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of ``w`` without its ``k`` smallest magnitudes (ties broken by position)."""
    keep = torch.ones(w.numel(), dtype=torch.bool, device=w.device)
    if k > 0:
        keep[torch.argsort(w.abs().flatten(), stable=True)[:k]] = False
    return keep.reshape(w.shape)


# --------------------------------------------------------------------------------------------
# the method


class PruneMethod(NetworkMethod):
    """Magnitude pruning (unstructured or L1 filter pruning); deterministic."""

    cfg: PruneConfig

    def merge_threshold(self) -> float | None:
        """Neuron Merging's similarity threshold (methods/neuron_merge.py); None: plain removal."""
        return None

    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        model = job.model
        if self.cfg.mode == "structured":
            pruned, info = prune_structured_info(model, self.cfg.ratio, list(job.layers),
                                                 self.cfg.criterion, self.merge_threshold())
            require_pruned(info, self.cfg.name)
        else:
            pruned, info = prune_unstructured(model, self.cfg.ratio, list(job.layers),
                                              self.cfg.scope)
        info["mode"] = self.cfg.mode
        pruned.eval()
        return [CompressedNet(copy.deepcopy(pruned), copy.deepcopy(info)) for _ in job.seeds]
