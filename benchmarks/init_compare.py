"""Compare random and data-free smart initialisations of the neuron embeddings.

For each method (lpnorm p=2 with 4 heads, as conf/method/lpnorm.yaml; riem with the defaults: 6
shifts, d_mu_ratio 0.25 with d_mu >= 3, sigmoid, wrap, sum) and each init (lpnorm: random, mds,
farfield; riem: random, svd = fit.init_riem_from_svd, spectral), fit every target at a fixed
budget (``--ratio`` of m*n parameters) with the same steps, schedule and seeds, and record:
the relative MSE of the init alone (step 0), the final and best relative MSE, the steps to
reach the random init's final error and to reach 1.1x the cell's own final error, wall time,
and the loss curves. Targets: synthetic families (table 5), random-init resnet18 conv layers
(reshaped out x in*k*k) and the trained FC layers of LeNet-5 on scikit-learn's digits.

Writes benchmarks/results/init_compare.json and prints a markdown table (docs/init.md).

    python benchmarks/init_compare.py            # default size, <= ~12 min on one CPU thread
    python benchmarks/init_compare.py --quick    # ~1 min smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from convert import environment
from omegaconf import OmegaConf

from riembench.compression.methods.embedding import EmbeddingMethod
from riembench.config.datasets import SyntheticConfig
from riembench.config.fit import FitConfig
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS
from riembench.data.synthetic import build_synthetic
from riembench.engine.fit import fit
from riembench.engine.starts.mds import init_lpnorm_farfield, init_lpnorm_mds
from riembench.engine.starts.spectral import init_riem_spectral
from riembench.engine.starts.svd_warm import init_riem_from_svd

INITS: dict[str, dict[str, Callable | None]] = {
    "lpnorm": {"random": None,
               "mds": lambda m, t, s: init_lpnorm_mds(m, t, seeds=s),
               "farfield": lambda m, t, s: init_lpnorm_farfield(m, t, seeds=s)},
    "riem": {"random": None,
             "svd": lambda m, t, s: {"init": "svd", "init_rank": init_riem_from_svd(m, t, seeds=s)},
             "spectral": lambda m, t, s: init_riem_spectral(m, t, seeds=s)},
}


# --------------------------------------------------------------------------------------------
# targets


def synthetic_targets(families: list[str], n: int) -> dict[str, torch.Tensor]:
    return {f"synthetic/{f} {n}x{n}": build_synthetic(SyntheticConfig(n=n, family=f)).target
            for f in families}


def resnet_targets(layers: list[str]) -> dict[str, torch.Tensor]:
    """Random-init (kaiming, torchvision default) resnet18 conv weights as (out, in*k*k)."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None)
    mods = dict(net.named_modules())
    out = {}
    for name in layers:
        w = mods[name].weight.detach()
        w = w.reshape(w.shape[0], -1).clone()
        out[f"resnet18-random/{name} {w.shape[0]}x{w.shape[1]}"] = w
    return out


def lenet_targets(epochs: int) -> tuple[dict[str, torch.Tensor], dict]:
    """Train LeNet-5 on scikit-learn's digits with the project's trainer; return fc1, fc2."""
    from riembench.config.backbones import LeNet5Config
    from riembench.config.datasets import DigitsConfig
    from riembench.data.images import build_digits
    from riembench.harness.training import TrainConfig, train_backbone

    task = build_digits(DigitsConfig())
    cfg = TrainConfig(epochs=epochs, lr=0.05, batch_size=64, weight_decay=5e-4, label_smoothing=0.0,
                      augment="none", seed=0, progress=False)
    model, metrics = train_backbone(LeNet5Config(), task, cfg, "cpu")
    out = {}
    for name in ("fc1", "fc2"):
        w = getattr(model, name).weight.detach().clone()
        out[f"lenet5-digits-trained/{name} {w.shape[0]}x{w.shape[1]}"] = w
    info = {"epochs": epochs, "test_acc": metrics["test_acc"], "dev_acc": metrics["dev_acc"],
            "train_wall_s": metrics["wall_time_s"]}
    return out, info


# --------------------------------------------------------------------------------------------
# one cell


@cache
def default_method(name: str) -> EmbeddingMethod:
    """The project's method with its defaults (conf/method/<name>.yaml's schema): the sizes
    and the embedding built here are the ones a run of that method would use."""
    node = OmegaConf.create({"name": name, "progress": False})
    return METHODS.get(name)(typed_group(node, METHODS))


def build(name: str, m: int, n: int, budget: int, seeds: list[int]) -> tuple[torch.nn.Module, dict]:
    meth = default_method(name)
    model = meth.make(seeds, m, n, meth.solve_dims([(m, n)], budget))
    return model, meth.describe(model)


def min_budget(name: str, m: int, n: int) -> int:
    """The smallest embedding the starts can use: one dimension per Lp-norm head; d = 2 for
    RieM (the SVD warm start needs d >= 2)."""
    meth = default_method(name)
    smallest = meth.cfg.heads if name == "lpnorm" else 2
    return meth.count(m, n, meth.dims_for_d(smallest, {}))


def run_cell(method: str, init: str, target: torch.Tensor, ratio: float, seeds: list[int],
             cfg: FitConfig) -> dict:
    m, n = target.shape
    budget = max(int(ratio * m * n), min_budget(method, m, n))
    model, dims = build(method, m, n, budget, seeds)
    targets = target.expand(len(seeds), m, n).contiguous()
    t0 = time.perf_counter()
    fn = INITS[method][init]
    info = {"init": "random"} if fn is None else fn(model, targets, seeds)
    init_s = time.perf_counter() - t0
    res = fit(model, targets, cfg)
    curve_steps = [s for s, _ in res.history]
    curves = [[float(v) for v in losses] for _, losses in res.history]  # [eval][seed]
    mean_curve = [sum(c) / len(c) for c in curves]
    info = {k: v for k, v in info.items() if k not in ("init_choice",)} | (
        {"init_choice": info["init_choice"][0]} if info.get("init_choice") else {})
    return {"method": method, "init": init, "m": m, "n": n, "budget": budget,
            "params": model.params_per_matrix, **dims, "init_info": info,
            "rel_mse_init": [float(v) for v in res.history[0][1]],
            "rel_mse_final": [float(v) for v in (curves[-1])],
            "rel_mse_best": res.rel_mse.tolist(), "best_step": res.best_step,
            "failed": res.failed, "init_s": init_s, "fit_s": res.wall_time_s,
            "curve_steps": curve_steps, "curves": curves, "mean_curve": mean_curve}


def first_step_below(steps: list[int], curve: list[float], level: float) -> int | None:
    best = float("inf")
    for s, v in zip(steps, curve, strict=True):
        best = min(best, v)
        if best <= level:
            return s
    return None


def add_reach(cells: list[dict]) -> None:
    """Steps to reach, from the mean (over seeds) best-so-far curve: the random init's final
    (best) mean error of the same method/target, and 1.1x the cell's own final best error."""
    rand = {(c["target"], c["method"]): mean(c["rel_mse_best"]) for c in cells if c["init"] == "random"}
    for c in cells:
        own = mean(c["rel_mse_best"])
        c["steps_to_random_final"] = first_step_below(c["curve_steps"], c["mean_curve"],
                                                      rand[(c["target"], c["method"])])
        c["steps_to_1.1x_own_final"] = first_step_below(c["curve_steps"], c["mean_curve"], 1.1 * own)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def table(cells: list[dict]) -> str:
    lines = [("| target | method | init | rel. MSE at step 0 | final rel. MSE | best seed | "
              "steps to random's final | steps to 1.1x own final | init s | fit s |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in cells:
        def fmt(v: int | None) -> str:
            return "never" if v is None else str(v)
        lines.append(f"| {c['target']} | {c['method']} | {c['init']} | {mean(c['rel_mse_init']):.4f} | "
                     f"{mean(c['rel_mse_best']):.4f} | {min(c['rel_mse_best']):.4f} | "
                     f"{fmt(c['steps_to_random_final'])} | {fmt(c['steps_to_1.1x_own_final'])} | "
                     f"{c['init_s']:.2f} | {c['fit_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="~1 min smoke size")
    ap.add_argument("--steps", type=int, default=None, help="fit steps (default 1500; quick 150)")
    ap.add_argument("--n", type=int, default=None, help="synthetic N (default 200; quick 100)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ratio", type=float, default=0.1, help="budget as a fraction of m*n")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--families", default="lp_field,kernel_field,randn")
    ap.add_argument("--resnet-layers", default=None,
                    help="comma list of resnet18 conv modules (default layer1.0.conv1,layer2.0.conv2)")
    ap.add_argument("--lenet-epochs", type=int, default=None, help="default 8; quick 3")
    ap.add_argument("--methods", default="lpnorm,riem")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "init_compare.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steps = args.steps or (150 if args.quick else 1500)
    n = args.n or (100 if args.quick else 200)
    lenet_epochs = args.lenet_epochs or (3 if args.quick else 8)
    resnet_layers = args.resnet_layers or ("layer1.0.conv1" if args.quick else "layer1.0.conv1,layer2.0.conv2")
    cfg = FitConfig(steps=steps, lr=args.lr, warmup=args.warmup, eval_every=args.eval_every,
                    schedule="cosine")
    seeds = list(range(args.seeds))
    start = time.perf_counter()
    targets = synthetic_targets(args.families.split(","), n)
    targets |= resnet_targets(resnet_layers.split(","))
    lenet, lenet_info = lenet_targets(lenet_epochs)
    targets |= lenet
    print(f"targets ready in {time.perf_counter() - start:.1f} s (LeNet-5 digits test acc "
          f"{lenet_info['test_acc']:.1f}%)", flush=True)
    cells = []
    for tname, target in targets.items():
        for method in args.methods.split(","):
            for init in INITS[method]:
                cell = {"target": tname, **run_cell(method, init, target, args.ratio, seeds, cfg)}
                cells.append(cell)
                print(f"{tname:40s} {method:6s} {init:8s} init {mean(cell['rel_mse_init']):.4f} "
                      f"final {mean(cell['rel_mse_best']):.4f} ({cell['init_s'] + cell['fit_s']:.1f} s)",
                      flush=True)
    add_reach(cells)
    meta = {**environment(torch.device("cpu")), "argv": sys.argv, "args": vars(args),
            "settings": {"steps": steps, "n": n, "seeds": seeds, "ratio": args.ratio,
                         "fit": {k: getattr(cfg, k) for k in ("steps", "lr", "schedule", "min_lr_ratio",
                                                            "warmup", "eval_every")},
                         "lpnorm": {k: getattr(default_method("lpnorm").cfg, k) for k in ("heads", "p")},
                         "riem": {k: getattr(default_method("riem").cfg, k)
                                  for k in ("n_shifts", "d_mu_ratio", "d_mu_min", "activation",
                                            "wrap", "combine")},
                         "resnet_layers": resnet_layers, "lenet": lenet_info},
            "total_wall_s": time.perf_counter() - start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "cells": cells}, indent=1))
    print(table(cells))
    print(f"wrote {args.out} ({meta['total_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
