"""Convergence of the RieM and Lp-norm fits against truncated SVD at equal size.

For each target matrix (trained weights made here and table 5's families) and each budget
(10% and 30% of the dense entries), it fits one seed under each fit recipe and records the
curve (step, seconds, relative MSE), the steps and seconds until the fit first reaches the
relative MSE of a truncated SVD with the same number of stored parameters, and the converged
error as a ratio to SVD's. Targets:

* ``lenet5.fc1`` / ``lenet5.fc2``: LeNet-5 trained on digits (``riembench-train``, cached);
* ``resnet9.fc1``: the 512-196-10 head's first layer, and ``resnet9.conv``: a trained 3x3 conv
  as an (out, in * 9) matrix, ResNet-9 trained on digits;
* ``lp_field`` / ``randn``: table 5's families at N (default 1000).

Recipes: ``adam-2000`` is the fit riembench used before (Adam on every parameter, lr 1e-2,
cosine, 2000 steps: the authors' optimiser); the others use variable projection (the read-out
solved by least squares before every step, Adam on the rest) with a convergence test. Every
timing is one process, one torch thread, recipes alternating per target, with the load average
recorded (the machine is shared).

    python benchmarks/convergence.py                      # everything (CPU: about 30 min)
    python benchmarks/convergence.py --targets lenet5.fc1 --budgets 0.3 --recipes varpro
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert import environment, write_result

from riembench.config.fit import FitConfig
from riembench.config.methods import METHODS
from riembench.engine.fit import FitRun
from riembench.engine.linalg import standardise

RESULTS = Path(__file__).resolve().parent / "results"

#: the fit riembench used before variable projection (and the authors' optimiser)
ADAM_2000 = {"solver": "adam", "lr": 1e-2, "steps": 2000, "schedule": "cosine", "warmup": 50,
             "patience": 0, "min_delta": 1e-4}
#: name -> (method, method overrides, fit overrides)
RECIPES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "adam-2000": ("riem", {"init": "spectral"}, ADAM_2000),
    "varpro": ("riem", {}, {}),  # the method's defaults (conf/method/riem.yaml)
    "varpro-svd": ("riem", {"init": "svd"}, {}),
    "lpnorm-adam-2000": ("lpnorm", {}, ADAM_2000),
    "lpnorm-varpro": ("lpnorm", {}, {}),
}


def trained_matrix(backbone: str, layer: str) -> torch.Tensor:
    """A layer's weight matrix from the cached model trained on digits (trains it if absent)."""
    from omegaconf import OmegaConf

    from riembench.backbones import load_backbone
    from riembench.compression.network import get_module, weight_matrix
    from riembench.config.backbones import BACKBONES
    from riembench.config.datasets import DATASETS
    from riembench.config.identity import typed_group

    extra = {"head_hidden": 196} if backbone == "resnet9" else {}
    bcfg = typed_group(OmegaConf.create({"name": backbone, **extra}), BACKBONES)
    dcfg = typed_group(OmegaConf.create({"name": "digits"}), DATASETS)
    task = DATASETS.get("digits")(dcfg, Path("data"))
    model = load_backbone(bcfg, task, "cpu", dcfg).model
    if layer == "conv":  # the first 3x3 conv with at least 64 inputs and outputs
        layer = next(n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)
                     and m.kernel_size == (3, 3) and m.in_channels >= 64 and m.out_channels >= 64)
    return weight_matrix(get_module(model, layer)).float(), layer


def target(name: str, n: int) -> tuple[torch.Tensor, str]:
    if name in ("lp_field", "randn", "kernel_field"):
        from riembench.config.datasets import SyntheticConfig
        from riembench.data.synthetic import make_matrix

        return make_matrix(SyntheticConfig(family=name, n=n)), f"{name} N={n}"
    backbone, layer = name.split(".", 1)
    w, resolved = trained_matrix(backbone, layer)
    return w, f"{backbone}.{resolved} {tuple(w.shape)}"


def svd_rel_mse(w: torch.Tensor, budget: int) -> tuple[float, int, float]:
    """Relative MSE of the best rank-r approximation with r (m + n) <= budget, and its time."""
    m, n = w.shape
    rank = min(budget // (m + n), min(m, n))
    start = time.perf_counter()
    s = torch.linalg.svdvals(standardise(w[None].double())[0][0])
    seconds = time.perf_counter() - start
    return float(s[rank:].square().sum() / s.square().sum()), rank, seconds


def parse_recipe(recipe: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``name`` from RECIPES, or ``name@key=value:key=value`` with fit (or method, as
    ``method.key``) overrides, e.g. ``varpro@lr=0.1:steps=600``."""
    name, _, extra = recipe.partition("@")
    method_name, method_over, fit_over = RECIPES[name]
    method_over, fit_over = dict(method_over), dict(fit_over)
    for item in filter(None, extra.split(":")):
        key, _, value = item.partition("=")
        parsed: Any = json.loads(value) if value[:1] in "0123456789-[{tf" and value not in ("cosine",) else value
        if key.startswith("method."):
            method_over[key[7:]] = parsed
        else:
            fit_over[key] = parsed
    return method_name, method_over, fit_over


def fit_curve(w: torch.Tensor, budget: int, recipe: str, seed: int = 0) -> dict[str, Any]:
    method_name, method_over, fit_over = parse_recipe(recipe)
    schema = METHODS.schema(method_name)
    base = schema()
    fit = FitConfig(**{**base.fit.__dict__, **fit_over})
    cfg = schema(**{**{k: getattr(base, k) for k in base.__dataclass_fields__ if k != "fit"},
                    **method_over, "fit": fit, "progress": False})
    method = METHODS.get(method_name)(cfg)
    start = time.perf_counter()
    model = method.build(tuple(w.shape), budget, [seed])
    targets = w[None]
    init = method.initialize([model], [targets], [seed])
    init_s = time.perf_counter() - start
    run = FitRun([model], [targets], fit)
    run.run()
    result = run.finish()
    curve = [(s, init_s + t, float(v[0])) for (s, v), t in zip(result.history, result.history_s,
                                                              strict=True)]
    return {"recipe": recipe, "method": method_name, "init": init.get("init"),
            "dims": method.describe(model), "params": model.params_per_matrix,
            "fit": fit.__dict__, "init_s": init_s, "seconds": init_s + result.wall_time_s,
            "steps_run": result.steps_run, "best_step": result.best_step[0],
            "rel_mse": float(result.rel_mse[0]), "curve": curve}


def first_reach(curve: list[tuple[int, float, float]], level: float) -> tuple[int | None, float | None]:
    for step, seconds, err in curve:
        if err <= level:
            return step, seconds
    return None, None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="lenet5.fc1,lenet5.fc2,resnet9.fc1,resnet9.conv,"
                                          "lp_field,randn")
    ap.add_argument("--budgets", default="0.1,0.3")
    ap.add_argument("--recipes", default="adam-2000,varpro,varpro-svd")
    ap.add_argument("--n", type=int, default=1000, help="N of the synthetic families")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    torch.set_num_threads(1)
    device = torch.device("cpu")
    result: dict[str, Any] = {"benchmark": "convergence", **environment(device), "rows": []}
    path = None  # written after every row, so a killed run keeps what it measured
    for name in args.targets.split(","):
        w, label = target(name, args.n)
        for ratio in (float(b) for b in args.budgets.split(",")):
            budget = int(ratio * w.numel())
            svd_err, rank, svd_s = svd_rel_mse(w, budget)
            for recipe in args.recipes.split(","):
                row = fit_curve(w, budget, recipe)
                steps, seconds = first_reach(row["curve"], svd_err)
                row.update({"target": label, "budget_ratio": ratio, "budget": budget,
                            "svd_rank": rank, "svd_rel_mse": svd_err, "svd_s": svd_s,
                            "steps_to_svd": steps, "seconds_to_svd": seconds,
                            "ratio_to_svd": row["rel_mse"] / svd_err if svd_err > 0 else math.inf})
                result["rows"].append(row)
                path = write_result(result, args.out, "convergence", device, False, args.tag)
                print(f"{label:28s} {ratio:.1f} {recipe:12s} rel {row['rel_mse']:.4e} "
                      f"svd {svd_err:.4e} x{row['ratio_to_svd']:.3f} steps {row['steps_run']:5d} "
                      f"{row['seconds']:7.1f}s to-svd {steps} {seconds and round(seconds, 1)}",
                      flush=True)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
