"""The engine's RieM inner-loop changes against the engine without them, measured in one run.

Variants, each the previous one plus one change (all the same loss, optimizer, init and steps
on the same shapes, each in a fresh process so its peak RSS is its own; final errors must agree):

* ``PerChunkRiem``: every row chunk rebuilds the row and column halves of the pre-activation
  and autograd differentiates it (the engine before the shared halves);
* ``AutogradRiem``: ``RiemEmbedding.halves`` built once per step, chunks back-propagate into
  them by autograd (``fused = False``);
* ``RiemEmbedding``: the engine as it is: shared halves and the hand-written chunk gradient
  (``fused_chunk_grad``: one reused buffer, in place, no graph).

The largest default shape is resnet18's layer4 3x3 stack x 10 seeds.

    python benchmarks/engine_ablation.py                 # cuda if present, else CPU (one thread)
    python benchmarks/engine_ablation.py --device cpu --shapes 30x128x1152

Writes ``benchmarks/results/engine_ablation-<device>.json``. (``engine_halves-cpu.json`` is
the earlier two-variant run of this script, before the fused gradient.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from convert import environment, pick_device, sync, write_result

from riembench.config.fit import FitConfig
from riembench.engine.embeddings import RiemEmbedding, default_shifts
from riembench.engine.fit import fit
from riembench.engine.starts.svd_warm import init_riem_from_svd

RESULTS = Path(__file__).resolve().parent / "results"


class PerChunkRiem(RiemEmbedding):
    """The engine before the shared halves: every chunk rebuilds them, autograd."""

    fused = False

    def halves(self) -> None:  # type: ignore[override]
        return None


class AutogradRiem(RiemEmbedding):
    """Shared halves, autograd through each chunk (the engine before the fused gradient)."""

    fused = False


VARIANTS = ("PerChunkRiem", "AutogradRiem", "RiemEmbedding")


def run_once(cls: type[RiemEmbedding], shape: tuple[int, int, int], d: int, d_mu: int,
             steps: int, device: torch.device) -> dict:
    batch, m, n = shape
    torch.manual_seed(0)
    target = torch.randn(1, m, n).expand(batch, m, n).contiguous().to(device)
    model = cls(list(range(batch)), m, n, d, d_mu, default_shifts(d, 6)).to(device)
    sync(device)
    t0 = time.perf_counter()
    init_riem_from_svd(model, target, seeds=list(range(batch)))
    sync(device)
    t1 = time.perf_counter()
    result = fit(model, target, FitConfig(steps=steps, eval_every=1, warmup=1, lr=1e-3, solver="adam"))
    sync(device)
    t2 = time.perf_counter()
    return {"init_s": t1 - t0, "fit_s": t2 - t1, "rel_mse_mean": float(result.rel_mse.mean())}


def run_in_child(variant: str, shape: tuple[int, int, int], d: int, d_mu: int, steps: int,
                 device: torch.device, threads: int) -> dict:
    """:func:`run_once` in a fresh process, so its peak RSS (``ru_maxrss``) is its own."""
    here = str(Path(__file__).resolve().parent)
    code = (f"import json, resource, sys, torch; sys.path.insert(0, {here!r}); "
            f"import engine_ablation as e; torch.set_num_threads({threads}); "
            f"r = e.run_once(e.{variant}, {tuple(shape)!r}, {d}, {d_mu}, {steps}, "
            f"torch.device({str(device)!r})); "
            "r['peak_rss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; "
            "print(json.dumps(r))")
    proc = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                          text=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto: cuda when present, else cpu")
    ap.add_argument("--shapes", default="30x128x1152,10x128x1152,40x64x576,40x512x4608",
                    help="elements x rows x cols of a stacked unit (layers x seeds first)")
    ap.add_argument("--d", type=int, default=30)
    ap.add_argument("--d-mu", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="comma list; speed-ups are against the last one")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    variants = args.variants.split(",")
    rows = []
    for text in args.shapes.split(","):
        shape = tuple(int(x) for x in text.split("x"))
        runs = {v: run_in_child(v, shape, args.d, args.d_mu, args.steps, device, args.threads)
                for v in variants}
        last = runs[variants[-1]]
        row = {"shape": list(shape), **runs,
               "fit_speedup_vs": {v: r["fit_s"] / last["fit_s"] for v, r in runs.items()},
               "init_speedup_vs": {v: r["init_s"] / last["init_s"] for v, r in runs.items()},
               "rel_mse_max_abs_diff": max(abs(r["rel_mse_mean"] - last["rel_mse_mean"])
                                           for r in runs.values())}
        rows.append(row)
        print(text + ": " + "; ".join(
            f"{v} fit {r['fit_s']:.2f} s ({row['fit_speedup_vs'][v]:.2f}x), warm start "
            f"{r['init_s']:.2f} s, rel. MSE {r['rel_mse_mean']:.6f}, peak RSS "
            f"{r['peak_rss_mib']:.0f} MiB" for v, r in runs.items()))
    result = {"benchmark": "engine_ablation", **environment(device),
              "settings": {"d": args.d, "d_mu": args.d_mu, "steps": args.steps,
                           "threads": args.threads, "lr": 1e-3, "init": "svd",
                           "variants": variants},
              "rows": rows}
    path = write_result(result, Path(args.out), "engine_ablation", device, smoke=False)
    print(f"wrote {path}")

if __name__ == "__main__":
    main()
