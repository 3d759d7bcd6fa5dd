"""Peak memory of a RieM fit on a large matrix, against the engine's memory model.

Why: chunking is what lets 10000 x 10000 matrices (table 5's largest N) fit in GPU memory.
The fit's memory is the stacked targets (raw and standardised), the row and column halves of
the pre-activation with their gradients, one reused chunk buffer bounded by
``chunk_elems``, the parameters with Adam's state and the kept best copy, and the final
reconstruction; without chunking the (B, m, n, |S| d_mu) activation alone would be the peak.
This runs one fit (and the reconstruction) in a fresh process and reports the measured peak
beside that model, so the claim is a measurement, not an estimate. CPU: peak RSS of the child
(torch itself included); GPU: ``torch.cuda.max_memory_allocated``.

    python benchmarks/memory.py                        # N = 10000, 1 seed, d = 8, 1 step (CPU)
    python benchmarks/memory.py --device cuda --seeds 10 --ratio 0.1   # table 5's setting

Writes ``benchmarks/results/memory-<device>[-<tag>].json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from convert import _rss_mib, environment, pick_device, sync, write_result

from riembench.config.fit import FitConfig
from riembench.config.methods import METHODS
from riembench.engine.embeddings import RiemEmbedding, default_shifts
from riembench.engine.fit import fit

RESULTS = Path(__file__).resolve().parent / "results"
MIB = 2**20


def model_bytes(batch: int, m: int, n: int, d: int, d_mu: int, shifts: int,
                chunk_elems: int) -> dict[str, float]:
    """The engine's memory model of one fit, in MiB (float32 everywhere)."""
    k = shifts * d_mu
    params = RiemEmbedding.count(m, n, d, d_mu, shifts) * batch
    rows = max(1, min(m, chunk_elems // max(1, batch * n * k * 3)))
    raw = m * n * 4  # one matrix, expanded (a view) over the seeds
    halves = 6 * batch * (m + n) * k * 4  # row/column halves, their leaves and gradients
    buffer = batch * rows * n * (k + 3) * 4  # the reused chunk buffer and its (rows, n) terms
    state = 5 * params * 4  # parameters, gradients, Adam's two moments, the kept best
    # the standardised targets live only inside fit(); the reconstruction comes after it
    fit_phase = batch * m * n * 4 + halves + buffer + state
    recon_phase = batch * m * n * 4 + halves / 3 + buffer + state
    out = {"target_raw": raw / MIB, "fit_phase": fit_phase / MIB,
           "reconstruct_phase": recon_phase / MIB,
           "total": (raw + max(fit_phase, recon_phase)) / MIB}
    out["unchunked_activation_alone"] = batch * m * n * k * 4 * 2 / MIB  # act + its gradient
    return out


def run_child(spec: dict) -> dict:
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    b, n = spec["seeds"], spec["n"]
    torch.manual_seed(0)
    target = torch.randn(1, n, n, device=device).expand(b, n, n)
    model = RiemEmbedding(list(range(b)), n, n, spec["d"], spec["d_mu"],
                          default_shifts(spec["d"], 6)).to(device)
    # a tiny fit first, so one-time library set-up (kernels, BLAS pools) is not counted
    tiny = RiemEmbedding([0], 8, 8, 2, 3, [0, 1]).to(device)
    fit(tiny, torch.randn(1, 8, 8, device=device), FitConfig(steps=1, warmup=0))
    tiny.reconstruct()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = _rss_mib()
    t0 = time.perf_counter()
    cfg = FitConfig(steps=spec["steps"], warmup=0, eval_every=1, chunk_elems=spec["chunk_elems"])
    res = fit(model, target, cfg)
    recon = model.reconstruct(spec["chunk_elems"])
    sync(device)
    out = {"fit_s": res.wall_time_s, "total_s": time.perf_counter() - t0,
           "rel_mse": float(res.rel_mse.mean()), "recon_shape": list(recon.shape),
           "rss_before_mib": before}
    if device.type == "cuda":
        out["peak_mib"] = torch.cuda.max_memory_allocated(device) / MIB
        out["peak_source"] = "torch.cuda.max_memory_allocated"
    else:
        out["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out["peak_source"] = "peak RSS of the child process (torch and the target included)"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--ratio", type=float, help="budget as a fraction of n^2 (sets d, d_mu)")
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--d-mu", type=int, default=3)
    ap.add_argument("--steps", type=int, default=1)
    ap.add_argument("--chunk-elems", type=int, default=FitConfig().chunk_elems)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return
    if args.ratio:  # the method's own sizing rule
        dims = METHODS.get("riem")(METHODS.schema("riem")()).solve_dims(
            [(args.n, args.n)], int(args.ratio * args.n**2))
        d, d_mu = dims["d"], dims["d_mu"]
    else:
        d, d_mu = args.d, args.d_mu
    device = pick_device(args.device)
    spec = {"device": str(device), "n": args.n, "seeds": args.seeds, "d": d, "d_mu": d_mu,
            "steps": args.steps, "chunk_elems": args.chunk_elems, "threads": args.threads}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], check=True,
                          capture_output=True, text=True)
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    estimate = model_bytes(args.seeds, args.n, args.n, d, d_mu, 6, args.chunk_elems)
    torch.set_num_threads(args.threads)  # so the recorded device string names the child's threads
    result = {"benchmark": "fit_memory", **environment(device), "settings": spec,
              "measured": measured, "model_mib": estimate}
    if device.type == "cuda":  # the target is allocated before the peak is reset: counted
        result["peak_over_model"] = measured["peak_mib"] / estimate["total"]
    else:  # RSS holds torch itself: compare what the fit added to what the model says it adds
        added = measured["peak_mib"] - measured["rss_before_mib"]
        result["added_by_fit_mib"] = added
        result["added_over_model"] = added / (estimate["total"] - estimate["target_raw"])
    path = write_result(result, Path(args.out), "memory", device, smoke=False, tag=args.tag)
    print(f"N={args.n} seeds={args.seeds} d={d} d_mu={d_mu}: peak {measured['peak_mib']:.0f} MiB, "
          f"added by the fit {result.get('added_by_fit_mib', float('nan')):.0f} MiB "
          f"(model {estimate['total']:.0f} MiB; unchunked activation alone "
          f"{estimate['unchunked_activation_alone']:.0f} MiB), fit {measured['fit_s']:.1f} s; "
          f"wrote {path}")


if __name__ == "__main__":
    main()
