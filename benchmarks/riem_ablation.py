"""Measure the RieM design options the issue asks us to choose by experiment.

For each option (activation, displacement wrap-around, sum vs difference, init), fit the same
matrices at the same budget with the same steps and seeds, and record the relative MSE of the
weights and the table-5 matrix-vector error. Writes benchmarks/results/riem_ablation.json and
prints a markdown table (pasted into docs/riem.md with the device named).

    python benchmarks/riem_ablation.py [--n 300] [--steps 300] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from riembench.config.datasets import SyntheticConfig
from riembench.config.fit import FitConfig
from riembench.config.methods import METHODS
from riembench.data.synthetic import build_synthetic
from riembench.engine.embeddings import RiemEmbedding, default_shifts
from riembench.engine.fit import fit
from riembench.engine.starts.svd_warm import init_riem_from_svd
from riembench.harness.evaluate import matvec_error
from riembench.store.records import package_versions

BASE = {"activation": "sigmoid", "wrap": True, "combine": "sum", "init": "svd"}
VARIANTS = [
    {},
    {"init": "random"},
    {"activation": "tanh"}, {"activation": "softplus"}, {"activation": "gelu"},
    {"activation": "relu"}, {"activation": "identity"},
    {"wrap": False},
    {"combine": "difference"},
    {"combine": "difference", "wrap": False, "init": "random"},  # the poster's variant, authors' init
]


def run_one(task, opts: dict, n: int, ratio: float, steps: int, seeds: list[int], lr: float) -> dict:
    a = task.target
    budget = int(ratio * n * n)
    dims = METHODS.get("riem")(METHODS.schema("riem")()).solve_dims([(n, n)], budget)
    d, d_mu = dims["d"], dims["d_mu"]
    model = RiemEmbedding(seeds, n, n, d, d_mu, default_shifts(d, 6), opts["activation"],
                          opts["wrap"], opts["combine"])
    targets = a.expand(len(seeds), n, n)
    if opts["init"] == "svd":
        init_riem_from_svd(model, targets, seeds=seeds)
    res = fit(model, targets, FitConfig(steps=steps, lr=lr, warmup=10, eval_every=10, solver="adam"))
    recon = model.reconstruct()
    errs = [matvec_error(a, recon[b], task.test_probes) for b in range(len(seeds))]
    return {**opts, "d": d, "d_mu": d_mu, "rel_mse_mean": float(res.rel_mse.mean()),
            "rel_mse_best": float(res.rel_mse.min()), "matvec_error_mean": sum(errs) / len(errs),
            "fit_s": res.wall_time_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--families", default="lp_field,kernel_field,randn")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "riem_ablation.json"))
    args = ap.parse_args()
    rows = []
    for family in args.families.split(","):
        task = build_synthetic(SyntheticConfig(n=args.n, family=family))
        u, s, vh = torch.linalg.svd(task.target.double())
        r = int(args.ratio * args.n * args.n) // (2 * args.n)
        svd = (u[:, :r] * s[:r]) @ vh[:r]
        svd_rel = float((svd - task.target).square().mean() / task.target.var())
        for v in VARIANTS:
            opts = {**BASE, **v}
            t = time.perf_counter()
            row = {"family": family, "svd_rel_mse": svd_rel,
                   "svd_matvec_error": matvec_error(task.target, svd, task.test_probes),
                   **run_one(task, opts, args.n, args.ratio, args.steps, list(range(args.seeds)), args.lr)}
            row["wall_s"] = time.perf_counter() - t
            rows.append(row)
            print(json.dumps(row), flush=True)
    meta = {"device": f"cpu:{platform.processor() or platform.machine()}", "threads": torch.get_num_threads(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "versions": package_versions(),
            "args": vars(args)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print("| family | activation | wrap | combine | init | rel. MSE (mean of seeds) | matvec err | SVD rel. MSE |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['activation']} | {r['wrap']} | {r['combine']} | {r['init']} | "
              f"{r['rel_mse_mean']:.4f} | {r['matvec_error_mean']:.2e} | {r['svd_rel_mse']:.4f} |")


if __name__ == "__main__":
    main()
