"""What quantizing the image and the residual-add inputs (jakc4103/DFQ's scope) does to DFQ and
plain uniform quantization, against quantizing layer inputs only.

For a backbone trained on scikit-learn's digits (cached by ``riembench-train``), runs ``dfq`` and
``quant`` at several W/A bit pairs under ``act_scope: reference`` (image, layer inputs, both
inputs of every residual add; biases at 16 bits) and ``act_scope: layers`` (layer inputs only,
float biases), and records test top-1, agreement with the float model's predictions and the
logits' relative error, plus how many activations each scope quantizes. ``--probe`` also records,
per layer, the BN-implied input range against the measured one (what fraction is clipped).

    python benchmarks/dfq_act_scope.py resnet9      # ~3 min on one CPU thread
    python benchmarks/dfq_act_scope.py lenet5
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
from convert import environment, write_result
from hydra import compose, initialize_config_dir

from riembench.backbones import load_backbone
from riembench.compression.act_ranges import input_stats
from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.methods.dfq import fold_batchnorm
from riembench.compression.network import select_layers
from riembench.compression.quantize import input_range_of
from riembench.config.backbones import BACKBONES
from riembench.config.datasets import DATASETS
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS
from riembench.config.tree import config_dir

BITS = ((8, 8), (6, 6), (4, 4), (8, 4), (8, 3), (None, 16))  # None: float weights
SCOPES = (("reference", 16), ("layers", None))


def clipping(model: torch.nn.Module, layers: list[str], xs: torch.Tensor) -> dict[str, object]:
    """Per layer: BN-implied input range (mean +- 6 std) and the measured one on ``xs``."""
    work = copy.deepcopy(model)
    report = input_stats(work, fold_batchnorm(work))
    seen: dict[str, torch.Tensor] = {}
    hooks = [work.get_submodule(n).register_forward_pre_hook(
        lambda mod, args, n=n: seen.__setitem__(n, args[0].detach())) for n in layers]
    with torch.no_grad():
        work(xs)
    for h in hooks:
        h.remove()
    out: dict[str, object] = {}
    for name in layers:
        if name not in report.inputs:
            out[name] = report.missing.get(name, "?")
            continue
        low, high = report.inputs[name].bounds(6.0)
        lo, hi = float(low.min()), float(high.max())
        act = seen[name]
        out[name] = {"predicted": [lo, hi], "measured": [float(act.min()), float(act.max())],
                     "clipped_fraction": float(((act < lo) | (act > hi)).float().mean())}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbone", choices=("resnet9", "lenet5"))
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with initialize_config_dir(config_dir(), version_base=None):
        cfg = compose("config", overrides=[f"backbone={args.backbone}", "dataset=digits"])
    dataset_cfg = typed_group(cfg.dataset, DATASETS)
    task = DATASETS.get(dataset_cfg.name)(dataset_cfg, None)
    model = load_backbone(typed_group(cfg.backbone, BACKBONES), task, "cpu", dataset_cfg).model
    layers = select_layers(model, "all")
    example = torch.zeros(1, task.in_channels, task.image_size, task.image_size)
    job = NetworkJob(model, layers, SizeTarget(None), [0], torch.device("cpu"), example,
                     input_range=input_range_of(task))
    xs = torch.stack([task.test[i][0] for i in range(len(task.test))])
    labels = torch.tensor([task.test[i][1] for i in range(len(task.test))])
    with torch.no_grad():
        ref = model(xs)
    result: dict[str, object] = {
        "backbone": args.backbone, "dataset": "digits", "test_images": len(labels),
        "input_range": job.input_range,
        "float_top1": float((ref.argmax(1) == labels).float().mean() * 100), "cells": []}
    for method in ("dfq", "quant"):
        for w, a in BITS:
            for scope, b_bits in SCOPES:
                schema = METHODS.schema(method)
                [net] = METHODS.get(method)(schema(w_bits=w, a_bits=a, act_scope=scope,
                                                  b_bits=b_bits)).compress(job)
                with torch.no_grad():
                    out = net.model(xs)
                cell = {"method": method, "w_bits": w, "a_bits": a, "act_scope": scope,
                        "b_bits": b_bits,
                        "top1": float((out.argmax(1) == labels).float().mean() * 100),
                        "agree": float((out.argmax(1) == ref.argmax(1)).float().mean() * 100),
                        "logit_rel_err": float((out - ref).norm() / ref.norm()),
                        "quantized_activations": len(net.info["act_ranges"]),
                        "float_activations": len(net.info["act_float"])}
                result["cells"].append(cell)
                print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in cell.items()), flush=True)
    if args.probe:
        result["ranges"] = clipping(model, layers, xs[:200])
    result["environment"] = environment(torch.device("cpu"))
    path = write_result(result, args.out, f"dfq_act_scope-{args.backbone}", torch.device("cpu"),
                        smoke=False)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
