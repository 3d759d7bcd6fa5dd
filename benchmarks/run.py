"""`make bench`: our fitting engine vs a plain PyTorch loop of the same math, in one run.

The reference is what a straightforward implementation does (and what the authors' notebook
does): one seed at a time, the full (m, n, |S|, d) displacement tensor built by broadcasting, then
U_s applied, sigmoid, w. Same init, loss, optimizer, learning rate and steps as the engine. We
report seconds per step for both, the speed ratio, and the final relative MSE of both (so a speed
gain cannot hide a fidelity loss). Results go to benchmarks/results/bench-<device>.json with the
device, versions and date. CPU sizes are small so this also runs (as a smoke test) without a GPU.

    python benchmarks/run.py [--m 128 --n 128 --d 16 --d-mu 4 --seeds 10 --steps 30]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

from riembench.config.fit import FitConfig
from riembench.engine.embeddings import RiemEmbedding, default_shifts
from riembench.engine.fit import fit
from riembench.store.records import package_versions


def naive_fit(target: torch.Tensor, seed: int, d: int, d_mu: int, steps: int, lr: float,
              device: torch.device) -> tuple[float, float]:
    """One seed, full broadcast tensors, no chunking, no batching. Returns (seconds, rel. MSE)."""
    ref = RiemEmbedding([seed], *target.shape, d, d_mu, default_shifts(d, 6))  # same init draw
    P, R, U, b, w, c = (p.detach()[0].clone().to(device).requires_grad_() for p in
                        (ref.P, ref.R, ref.U, ref.bias, ref.w, ref.c))
    shifts = default_shifts(d, 6)
    t = target.to(device)
    t = (t - t.mean()) / t.std()
    opt = torch.optim.Adam([P, R, U, b, w, c], lr=lr)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        total = 0
        for s_idx, s in enumerate(shifts):
            disp = P[:, None, :] + torch.roll(R, -s, dims=1)[None, :, :]  # (m, n, d)
            total = total + torch.sigmoid(disp @ U[s_idx].T + b[s_idx])  # (m, n, d_mu)
        loss = ((total @ w + c - t) ** 2).mean()
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - start, float(loss.detach())


def engine_fit(target: torch.Tensor, seeds: list[int], d: int, d_mu: int, steps: int, lr: float,
               device: torch.device) -> tuple[float, list[float]]:
    model = RiemEmbedding(seeds, *target.shape, d, d_mu, default_shifts(d, 6)).to(device)
    cfg = FitConfig(steps=steps, lr=lr, schedule="constant", warmup=0, eval_every=steps,
                    chunk_elems=2**28 if device.type == "cuda" else 2**24)
    _sync(device)
    start = time.perf_counter()
    res = fit(model, target.to(device).expand(len(seeds), *target.shape), cfg)
    _sync(device)
    return time.perf_counter() - start, res.rel_mse.tolist()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", type=int, default=128)
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--d-mu", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    target = torch.randn(args.m, args.n, generator=torch.Generator().manual_seed(0))
    seeds = list(range(args.seeds))
    # warm-up (allocator, kernels) for both, not timed
    naive_fit(target, 0, args.d, args.d_mu, 2, args.lr, device)
    engine_fit(target, seeds[:2], args.d, args.d_mu, 2, args.lr, device)
    naive = [naive_fit(target, s, args.d, args.d_mu, args.steps, args.lr, device) for s in seeds]
    naive_s = sum(t for t, _ in naive)
    eng_s, eng_mse = engine_fit(target, seeds, args.d, args.d_mu, args.steps, args.lr, device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"cpu:{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    result = {
        "benchmark": "riem_fit_engine_vs_naive_loop", "device": device_name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": package_versions(), "args": vars(args),
        "naive_s_per_seed_step": naive_s / (args.seeds * args.steps),
        "engine_s_per_seed_step": eng_s / (args.seeds * args.steps),
        "speed_ratio_engine_over_naive": naive_s / eng_s,
        "naive_final_rel_mse_mean": sum(m for _, m in naive) / len(naive),
        "engine_final_rel_mse_mean": sum(eng_mse) / len(eng_mse),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{device.type}.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
