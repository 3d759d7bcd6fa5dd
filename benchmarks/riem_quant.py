"""How RieM and Lp-norm embeddings survive rounding to b bits (the paper's "8/16" rows).

Why this exists: the first version of ``compact.quantize_embedded`` rounded every stored number,
read-out included; on a warm-started RieM that destroyed most of the fit (the read-out weights
are large and of both signs, building products from differences of sigmoids), so the method now
keeps the read-out (d_mu + 1 numbers per layer) at 32 bits and re-solves it by least squares for
the rounded features. This script measures the three variants side by side on a trained
LeNet-5's FC layers (digits, the embedded dataset), at the table-1 sizes and fits:

* ``float``: the fitted embedding, no rounding;
* ``round_all``: positions per feature column, every other tensor per tensor, read-out too;
* ``round_refit`` (what ``method.w_bits`` does): positions and metric rounded, read-out kept at
  32 bits and re-solved against the original weight.

Per (method, bits, variant): the relative MSE of each FC layer's weight and the test top-1 of
the whole network. Writes benchmarks/results/riem_quant-<device>.json.

    python benchmarks/riem_quant.py            # trains nothing: needs the digits LeNet-5 from
                                               # `riembench-train backbone=lenet5 dataset=digits`
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
from datetime import UTC, datetime
from pathlib import Path

import torch
from omegaconf import OmegaConf

from riembench.backbones import load_backbone
from riembench.compression.compact import POSITIONS, embedded_layers, quantize_embedded
from riembench.compression.fake_quant import quantize_tensor
from riembench.compression.methods.base import NetworkJob
from riembench.compression.network import get_module, select_layers, weight_matrix
from riembench.config.backbones import LeNet5Config
from riembench.config.datasets import DigitsConfig
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS
from riembench.config.sizes import ParamsSizeConfig
from riembench.data.images import build_digits
from riembench.harness.evaluate import evaluate_accuracy
from riembench.sizing.budgets import network_target
from riembench.store.records import git_revision, package_versions

RESULTS = Path(__file__).resolve().parent / "results"
#: the table-1 settings (Makefile T1RIEM / T1LP) at the paper's LeNet-5 FC sizes
SETTINGS = {
    "riem": ({"fit": {"steps": 200, "lr": 0.001}, "share": False, "d_mu_ratio": 1.0}, 7200),
    "lpnorm": ({"p": 2.0, "fit": {"steps": 1000}}, 6300),
}


@torch.no_grad()
def round_all(model: torch.nn.Module, bits: int) -> None:
    """Every stored number of every embedded layer rounded, read-out included (the naive way)."""
    done: set[int] = set()
    for layer in embedded_layers(model).values():
        for name, p in layer.field.named_parameters(recurse=False):
            if id(p) in done or p.numel() <= 1:
                continue
            done.add(id(p))
            column = name in POSITIONS
            p.copy_(quantize_tensor(p, bits, per_channel=column, symmetric=False, axis=-1,
                                    exact_zero=not column))
        layer.materialize()


def rel_mse(model: torch.nn.Module, original: torch.nn.Module, layers: list[str]) -> dict:
    out = {}
    for n in layers:
        w = weight_matrix(get_module(original, n)).float()
        w_hat = get_module(model, n).weight.reshape(w.shape)
        out[n] = float(((w_hat - w) ** 2).mean() / w.var())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", default="8,6,4")
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = build_digits(DigitsConfig())
    loaded = load_backbone(LeNet5Config(), task)
    model, layers = loaded.model, select_layers(loaded.model, "fc")
    rows = []
    for name, (overrides, params) in SETTINGS.items():
        cfg = OmegaConf.merge(OmegaConf.create({"name": name, "progress": False}),
                              OmegaConf.create(overrides))
        method = METHODS.get(name)(typed_group(cfg, METHODS))
        target = network_target(ParamsSizeConfig(params=params), model, layers)
        job = NetworkJob(model, layers, target, list(range(args.seeds)), torch.device("cpu"),
                         torch.zeros(1, 1, 32, 32))
        for seed, out in zip(job.seeds, method.compress(job), strict=True):
            variants = {"float": out.model}
            for bits in (int(b) for b in args.bits.split(",")):
                naive = copy.deepcopy(out.model)
                round_all(naive, bits)
                refit = copy.deepcopy(out.model)
                targets = {n: weight_matrix(get_module(model, n)).float() for n in layers}
                quantize_embedded(refit, bits, targets)
                variants[f"round_all@{bits}"] = naive
                variants[f"round_refit@{bits}"] = refit
            for variant, net in variants.items():
                rows.append({"method": name, "size_params": params, "seed": seed,
                             "variant": variant, "rel_mse": rel_mse(net, model, layers),
                             "test_acc": evaluate_accuracy(net, task.test, 256,
                                                           torch.device("cpu"))})
                print(f"{name} seed {seed} {variant:>15}: acc {rows[-1]['test_acc']:.2f} "
                      f"rel_mse {rows[-1]['rel_mse']}")
    original_acc = evaluate_accuracy(model, task.test, 256, torch.device("cpu"))
    result = {"benchmark": "riem_quant", "device": f"cpu:{platform.machine()} x1 thread",
              "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "git_revision": git_revision(), "versions": package_versions(),
              "weights": loaded.provenance, "original_test_acc": original_acc,
              "settings": {k: v[0] | {"params": v[1]} for k, v in SETTINGS.items()},
              "rows": rows}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "riem_quant-cpu.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"original test acc {original_acc:.2f}; wrote {path}")


if __name__ == "__main__":
    main()
