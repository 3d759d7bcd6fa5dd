"""Data-free conversion of real architectures: engine vs naive loop, whole-network cost, probes.

Why this exists next to ``benchmarks/run.py``: run.py times one synthetic matrix shape, but the
issue's target is a whole ResNet (every layer, ten seeds), where what matters is how the engine
stacks equal-shape layers x seeds, how it chunks big layers, and what the converted network
costs end to end. Parts (``--parts``, all by default):

* ``compare``: the SAME selected layers of a torchvision ResNet (random weights: shapes are what
  matters) fitted three ways with the same loss (sum of squared errors on the standardised
  weight), optimizer (Adam), constant learning rate, steps, keep-the-best rule and init:
  ``EmbeddingMethod.compress`` (the engine: equal shapes x seeds in one batch), ``naive_batch1``
  (one ``RiemEmbedding`` of batch 1 per (layer, seed), full matrix, no chunking: isolates what
  batching/stacking buys) and ``naive_plain`` (one (layer, seed) at a time with the authors'
  broadcast math, the (m, n, d) displacement tensor per shift, as in run.py: what a
  straightforward implementation costs). Reconstruction errors are measured identically for all
  three, from the weights each produced (rel. MSE = mean((W_hat - W)^2) / var(W)).
* ``convert``: whole-network conversion (all layers, ten seeds, the method's default config)
  of each architecture in a fresh child process, so that peak memory is per conversion (CPU:
  the child's ``ru_maxrss``; tracemalloc cannot see torch's allocations. GPU:
  ``torch.cuda.max_memory_allocated``).
* ``probe``: one fwd+bwd step of one stacked unit, timed for engine variants that need no src/
  change: a larger ``chunk_elems``; the column half computed once per step instead of once per
  row chunk (a prototype written here, gradients checked against the engine's); the same with
  ``torch.compile``; and with bf16 activations (time, loss difference, and a short fp32 vs bf16
  fit from the SVD warm start).
* ``init_cost``: per fit unit, the SVD warm start as the engine runs it, vs one SVD per distinct
  layer, vs ``torch.svd_lowrank``; and the warm start's final ``reconstruct()`` vs the same with
  the column half built once (``cols_once_reconstruct``).
* ``profile``: ``torch.profiler`` over one ``compress`` of resnet18, top-15 ops by self time.

Results: ``benchmarks/results/convert-<device>.json`` (and ``profile-<device>.txt``), with the
device, versions, date, git revision and every setting. ``--smoke`` is a seconds-long run for
the tests (``-smoke`` file names); ``--full`` are GPU sizes (ResNet-18 and ResNet-50, 2000 steps).
``--tag`` suffixes the file names (a supplementary run next to the main one). docs/benchmarks.md
quotes the CPU results.

    python benchmarks/convert.py                      # CPU sizes (~20 min on a shared 2-core VM)
    python benchmarks/convert.py --full --device cuda # GPU sizes
    python benchmarks/convert.py --smoke --out /tmp/b # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.compression.methods.embedding import EmbeddingMethod, element_seed
from riembench.compression.network import (
    dense_weight_count,
    get_module,
    select_layers,
    weight_matrix,
)
from riembench.config.fit import FitConfig
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS
from riembench.engine.embeddings import RiemEmbedding, default_shifts
from riembench.engine.starts.svd_warm import init_riem_from_svd
from riembench.store.records import git_revision, package_versions

RESULTS = Path(__file__).resolve().parent / "results"

#: sizes per mode; explicit flags override them. ``cpu`` keeps ``compare`` at ~1-2 minutes on
#: 2 cores; the whole-network conversion is one step (CPU-sized, recorded as such).
PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"arch": "resnet18", "layers": "layer1.0.*", "seeds": 2, "steps": 2,
              "convert_archs": "resnet18", "convert_layers": "layer1.0.*,fc",
              "convert_seeds": 2, "convert_steps": 1, "convert_init": "random",
              "probe_shape": [2, 32, 64], "probe_compile": False, "probe_fit_steps": 2,
              "profile_layers": "layer1.0.*", "profile_seeds": 1, "profile_steps": 1,
              "profile_init": "random", "init_arch": "resnet18",
              "init_layers": "layer1.0.*", "threads": 1},
    "cpu": {"arch": "resnet18", "layers": "layer1.*,layer2.*", "seeds": 3, "steps": 10,
            "convert_archs": "resnet18", "convert_layers": "all", "convert_seeds": 10,
            "convert_steps": 1, "convert_init": "svd",
            # resnet18's layer2 3x3 conv stack x 10 seeds (3 x 10 elements, 128 x 1152)
            "probe_shape": [30, 128, 1152], "probe_compile": True, "probe_fit_steps": 10,
            "profile_layers": "all", "profile_seeds": 2, "profile_steps": 2,
            "profile_init": "svd", "init_arch": "resnet18", "init_layers": "all",
            # one thread: on a shared 2-core machine, 2 OpenMP threads ran 3-11x SLOWER than 1
            # (oversubscription; docs/benchmarks.md), which would measure the neighbours
            "threads": 1},
    "full": {"arch": "resnet18", "layers": "all", "seeds": 10, "steps": 100,
             "convert_archs": "resnet18,resnet50", "convert_layers": "all", "convert_seeds": 10,
             # the method's default start (docs/init.md); the CPU preset keeps svd, which its
             # committed results used
             "convert_steps": 2000, "convert_init": "spectral",
             # resnet50's layer4 3x3 conv stack x 10 seeds (3 x 10 elements, 512 x 4608)
             "probe_shape": [30, 512, 4608], "probe_compile": True, "probe_fit_steps": 50,
             "profile_layers": "all", "profile_seeds": 10, "profile_steps": 5,
             "profile_init": "svd", "init_arch": "resnet50",
             "init_layers": "all"},
}


# ---------------------------------------------------------------------------------------------
# shared by the benchmark scripts (eval_throughput.py imports these)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def timed_compress(method: EmbeddingMethod, job: NetworkJob, device: torch.device
                   ) -> tuple[list[Any], float]:
    """``method.compress(job)`` and its wall time, with the device synchronized around it."""
    sync(device)
    start = time.perf_counter()
    outs = method.compress(job)
    sync(device)
    return outs, time.perf_counter() - start


def add_mode_args(ap: argparse.ArgumentParser, full_help: str) -> None:
    """The flags every benchmark script shares: device and size mode."""
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--smoke", action="store_true", help="tiny sizes (seconds), for tests")
    mode.add_argument("--full", action="store_true", help=full_help)


def sync(device: torch.device) -> None:
    """Timers must not stop while GPU work is still queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu:{model} x{torch.get_num_threads()} threads ({os.cpu_count()} cores)"


def environment(device: torch.device) -> dict[str, Any]:
    """What a number depends on besides the code's settings. The load average is recorded
    because CPU timings on a shared machine are only as good as the machine was idle."""
    env = {"device": device_name(device), "device_kind": device.type,
           "date": datetime.now(UTC).isoformat(timespec="seconds"),
           "git_revision": git_revision(), "python": platform.python_version(),
           "torch": torch.__version__, "versions": package_versions(),
           "torch_threads": torch.get_num_threads()}
    if hasattr(os, "getloadavg"):
        env["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return env


def result_name(stem: str, device: torch.device, smoke: bool, tag: str = "",
                suffix: str = ".json") -> str:
    """``<stem>-<device kind>[-smoke][-<tag>]``: a smoke run never overwrites a real result,
    and a tagged (supplementary) run never overwrites the untagged one."""
    return f"{stem}-{device.type}{'-smoke' if smoke else ''}{f'-{tag}' if tag else ''}{suffix}"


def write_result(result: dict[str, Any], out: Path, stem: str, device: torch.device,
                 smoke: bool, tag: str = "") -> Path:
    """Writes ``result_name(...)`` under ``out``, with the load average at the end."""
    if hasattr(os, "getloadavg"):
        result["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out.mkdir(parents=True, exist_ok=True)
    path = out / result_name(stem, device, smoke, tag)
    path.write_text(json.dumps(result, indent=1))
    return path


def build_arch(arch: str) -> nn.Module:
    """A torchvision model with random weights (seeded): the engine's cost depends on the shapes
    only, and no download is needed."""
    torch.manual_seed(0)
    return getattr(torchvision.models, arch)(weights=None).eval()


def riem_method(steps: int, init: str, progress: bool = False, **fit_overrides: Any
                ) -> EmbeddingMethod:
    """The project's riem method with its defaults except ``steps``, ``init`` and overrides, on
    Adam (``solver: adam``): the engine comparisons time the loop the naive references
    implement; variable projection is measured by benchmarks/convergence.py."""
    node = {"name": "riem", "progress": progress, "init": init,
            "fit": {"steps": steps, "solver": "adam", **fit_overrides}}
    return METHODS.get("riem")(typed_group(OmegaConf.create(node), METHODS))


def make_job(model: nn.Module, layers: list[str], ratio: float, seeds: int,
             device: torch.device) -> NetworkJob:
    budget = int(ratio * dense_weight_count(model, layers))
    return NetworkJob(model, layers, SizeTarget(budget), list(range(seeds)), device,
                      torch.zeros(1, 3, 224, 224))


def rel_mse(approx: torch.Tensor, target: torch.Tensor) -> float:
    t = target.double()
    return float((approx.double().reshape(t.shape) - t).square().mean() / t.var())


# ---------------------------------------------------------------------------------------------
# compare: engine vs naive loops on the same layers


def plain_rows(model: RiemEmbedding) -> torch.Tensor:
    """The authors' broadcast math for one element: per shift the full (m, n, d) displacement,
    then U_s, sigmoid, w. Same function as RiemEmbedding.rows for sigmoid / wrap / sum."""
    p, r, u, b, w, c = model.P[0], model.R[0], model.U[0], model.bias[0], model.w[0], model.c[0]
    total = 0
    for s_idx, s in enumerate(model.shifts):
        disp = p[:, None, :] + torch.roll(r, -s, dims=1)[None, :, :]  # (m, n, d)
        total = total + torch.sigmoid(disp @ u[s_idx].T + b[s_idx])  # (m, n, d_mu)
    return (total @ w + c)[None]


def naive_fit(weight: torch.Tensor, dims: dict[str, Any], elem_seed: int, cfg: FitConfig,
              init: str, plain: bool, device: torch.device) -> torch.Tensor:
    """Fit one (layer, seed) alone; return the reconstructed weight matrix (on the CPU).

    Same standardisation, loss (sum of squared errors), Adam, constant lr and keep-the-best rule
    (at the engine's evaluation steps) as ``fit_parts``, and the engine's init for this element
    (its seed is ``element_seed(seed, layer)``), but no batching, no chunking and none of the
    engine's per-step bookkeeping (divergence checks, gradient masks)."""
    m, n = weight.shape
    model = RiemEmbedding([elem_seed], m, n, dims["d"], dims["d_mu"], dims["shifts"]).to(device)
    w = weight.to(device=device, dtype=torch.float32)
    if init == "svd":
        init_riem_from_svd(model, w[None], seeds=[elem_seed])
    mean, std = w.mean(), w.std()
    t = (w - mean) / std
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    best_loss, best = float("inf"), None
    forward: Callable[[], torch.Tensor] = (lambda: plain_rows(model)) if plain else \
        (lambda: model.rows(slice(None)))
    for step in range(cfg.steps):
        opt.zero_grad()
        loss = (forward()[0] - t).square().sum()
        if step % cfg.eval_every == 0 or step == cfg.steps - 1:
            value = float(loss.detach())
            if value < best_loss * (1 - cfg.min_delta):
                best_loss = value
                best = {k: v.detach().clone() for k, v in model.named_parameters()}
        loss.backward()
        opt.step()
    with torch.no_grad():
        if best is not None:
            for k, v in model.named_parameters():
                v.copy_(best[k])
        return (forward()[0] * std + mean).cpu()


def compare(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    model = build_arch(args.arch)
    layers = select_layers(model, args.layers)
    fit_kw = {"lr": args.lr, "schedule": "constant", "warmup": 0}
    method = riem_method(args.steps, args.init, **fit_kw)
    job = make_job(model, layers, args.ratio, args.seeds, device)
    units = method.plan(job)
    if any(u.chain for u in units):
        raise SystemExit("compare: chained layers are fitted jointly; pick layers without chains")
    dims = {name: u.dims for u in units for name in u.layers}
    weights = {name: weight_matrix(get_module(model, name)).float() for name in layers}
    cfg = method.cfg.fit

    # warm-up (allocator, kernels, lazy init), untimed: one layer, one seed, one step each way
    warm = make_job(model, layers[:1], args.ratio, 1, device)
    riem_method(1, args.init, **fit_kw).compress(warm)
    w_cfg = FitConfig(**{**cfg.__dict__, "steps": 1})
    for plain in (False, True):
        naive_fit(weights[layers[0]], dims[layers[0]], 0, w_cfg, args.init, plain, device)

    outs, engine_s = timed_compress(method, job, device)
    engine_fit_s = sum(outs[0].info["layers"][u.layers[0]]["fit_wall_time_s"] for u in units)
    failed = [o.failed for o in outs if o.failed]
    engine_err = {name: [rel_mse(get_module(o.model, name).weight, weights[name]) for o in outs]
                  for name in layers} if not failed else {}

    result: dict[str, Any] = {
        "layers": layers, "n_layers": len(layers), "seeds": args.seeds,
        "fit_units": [{"layers": u.layers, "shape": list(u.shapes[0]),
                       "batch": len(u.layers) * args.seeds} for u in units],
        "dims": units[0].dims if len({str(u.dims) for u in units}) == 1 else dims,
        "engine": {"wall_s": engine_s, "fit_s": engine_fit_s, "failed": failed,
                   "rel_mse_per_layer": {k: sum(v) / len(v) for k, v in engine_err.items()}},
    }
    for variant, plain in (("naive_batch1", False), ("naive_plain", True)):
        if variant not in args.naive:
            continue
        errs: dict[str, list[float]] = {name: [] for name in layers}
        sync(device)
        start = time.perf_counter()
        for name in layers:
            for seed in range(args.seeds):
                w_hat = naive_fit(weights[name], dims[name], element_seed(seed, name), cfg,
                                  args.init, plain, device)
                errs[name].append(rel_mse(w_hat, weights[name]))
        sync(device)
        result[variant] = {"wall_s": time.perf_counter() - start,
                           "rel_mse_per_layer": {k: sum(v) / len(v) for k, v in errs.items()}}
        print(f"  {variant}: {result[variant]['wall_s']:.1f} s", flush=True)
    for key in ("engine", "naive_batch1", "naive_plain"):
        if key in result and result[key]["rel_mse_per_layer"]:
            per = result[key]["rel_mse_per_layer"]
            result[key]["rel_mse_mean"] = sum(per.values()) / len(per)
    for key in ("naive_batch1", "naive_plain"):
        if key in result:
            result[f"speed_ratio_engine_over_{key}"] = result[key]["wall_s"] / engine_s
    return result


# ---------------------------------------------------------------------------------------------
# convert: a whole network, in a child process (peak memory per conversion)


def convert_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs inside the child: one compress of ``spec['arch']`` with the method's defaults."""
    device = torch.device(spec["device"])
    torch.set_num_threads(spec["threads"])
    model = build_arch(spec["arch"])
    layers = select_layers(model, spec["layers"])
    overrides = {"chunk_elems": spec["chunk_elems"]} if spec["chunk_elems"] else {}
    method = riem_method(spec["steps"], spec["init"], progress=spec.get("progress", False),
                         **overrides)
    job = make_job(model, layers, spec["ratio"], spec["seeds"], device)
    units = method.plan(job)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rss_before = _rss_mib()
    outs, wall = timed_compress(method, job, device)
    fit_s = sum(outs[0].info["layers"][u.layers[0]]["fit_wall_time_s"] for u in units)
    mean_rel = [o.info["mean_layer_rel_mse"] for o in outs]
    res = {"arch": spec["arch"], "layers": spec["layers"], "n_layers": len(layers),
           "dense_weights": dense_weight_count(model, layers), "seeds": spec["seeds"],
           "steps": spec["steps"], "init": spec["init"],
           "chunk_elems": method.cfg.fit.chunk_elems, "fit_config": method.cfg.fit.__dict__,
           "dims": units[0].dims, "fit_units": len(units),
           "largest_batch": max(len(u.layers) for u in units) * spec["seeds"],
           "wall_s": wall, "fit_s": fit_s, "other_s": wall - fit_s,
           "fit_s_per_step": fit_s / spec["steps"],
           "failed_seeds": sum(1 for o in outs if o.failed),
           "mean_layer_rel_mse_mean_of_seeds": sum(mean_rel) / len(mean_rel)}
    if device.type == "cuda":
        res["peak_memory_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        res["peak_reserved_mib"] = torch.cuda.max_memory_reserved(device) / 2**20
        res["peak_memory_source"] = "torch.cuda.max_memory_allocated (device memory)"
    else:
        res["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        res["rss_before_compress_mib"] = rss_before
        res["peak_memory_source"] = "resource.getrusage(RUSAGE_SELF).ru_maxrss of the child " \
                                    "process (whole-process peak RSS, model and torch included)"
    return res


def _rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def convert(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for arch in args.convert_archs.split(","):
        spec = {"arch": arch, "layers": args.convert_layers, "seeds": args.convert_seeds,
                "steps": args.convert_steps, "init": args.convert_init, "ratio": args.ratio,
                "chunk_elems": args.chunk_elems, "device": str(device),
                "threads": torch.get_num_threads(), "progress": bool(args.progress)}
        # with --progress the child's bars go to our stderr (a run cut short by a time limit
        # still shows how far each fit unit got)
        proc = subprocess.run([sys.executable, __file__, "--child-convert", json.dumps(spec)],
                              check=False, stdout=subprocess.PIPE,
                              stderr=None if args.progress else subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"conversion of {arch} failed:\n{(proc.stderr or '')[-3000:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["cpu_sized"] = device.type == "cpu"
        rows.append(row)
        print(f"  convert {arch}: {row['wall_s']:.1f} s, peak {row['peak_memory_mib']:.0f} MiB",
              flush=True)
    return rows


# ---------------------------------------------------------------------------------------------
# probe: engine variants on one stacked unit, without touching src/


def cached_columns_step(model: RiemEmbedding, t: torch.Tensor, chunk_elems: int,
                        chunk_fn: Callable[..., torch.Tensor] | None = None,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """One full-matrix fwd+bwd with the column half (B, n, |S| d_mu) and the row half computed
    ONCE per step; the row chunks back-propagate into detached copies whose gradients are then
    pushed through the two halves once. Returns the per-element SSE.

    Why: the engine calls ``rows()`` per chunk, which rebuilds ``shifted_columns()`` (an einsum
    over d for all n columns) for every chunk; with ten seeds of a big layer a chunk is 1-4 rows,
    so that rebuild costs more than the chunk itself."""
    cols = model.shifted_columns()
    rowp = model.row_part(slice(None))
    cols_d, rowp_d = cols.detach().requires_grad_(), rowp.detach().requires_grad_()
    step = max(1, min(model.m, chunk_elems // max(1, model.batch * model.row_cost())))
    fn = chunk_fn or _chunk_sse
    total = torch.zeros(model.batch, device=t.device)
    for i in range(0, model.m, step):
        err = fn(rowp_d[:, i:i + step], cols_d, model.w, model.c, t[:, i:i + step], dtype)
        err.sum().backward()
        total += err.detach()
    torch.autograd.backward([cols, rowp], [cols_d.grad, rowp_d.grad])
    return total


def _chunk_sse(rowp: torch.Tensor, cols: torch.Tensor, w: torch.Tensor, c: torch.Tensor,
               t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Per-element SSE of one row chunk (sigmoid activation, the default); ``w`` is shared
    across shifts as in RiemEmbedding.rows."""
    wk = w.repeat(1, cols.shape[-1] // w.shape[-1])
    if dtype is not None:
        rowp, cols, wk = rowp.to(dtype), cols.to(dtype), wk.to(dtype)
    z = torch.sigmoid(rowp[:, :, None, :] + cols[:, None, :, :])
    out = torch.einsum("brnk,bk->brn", z, wk).float() + c[:, None, None]
    return (out - t).square().sum((1, 2))


@torch.no_grad()
def cols_once_reconstruct(model: RiemEmbedding, chunk_elems: int) -> torch.Tensor:
    """``model.reconstruct`` with the column half built once (prototype, sigmoid/sum only)."""
    cols, rowp = model.shifted_columns(), model.row_part(slice(None))
    wk = model.w.repeat(1, len(model.shifts))
    step = model.rows_per_chunk(chunk_elems)
    return torch.cat([torch.einsum("brnk,bk->brn",
                                   model.act(rowp[:, i:i + step, None, :] + cols[:, None]), wk)
                      + model.c[:, None, None] for i in range(0, model.m, step)], 1)


def _engine_step(model: RiemEmbedding, t: torch.Tensor, chunk_elems: int) -> torch.Tensor:
    """The engine's per-step work as ``fit_parts`` does it (row chunks through ``rows()``, each
    back-propagated at once), without the optimizer step: the part the variants change."""
    step = model.rows_per_chunk(chunk_elems)
    total = torch.zeros(model.batch, device=t.device)
    for i in range(0, model.m, step):
        err = (model.rows(slice(i, i + step)) - t[:, i:i + step]).square().sum((1, 2))
        err.sum().backward()
        total += err.detach()
    return total


def _timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeats


def probe(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    batch, m, n = args.probe_shape
    d, d_mu = 30, 8  # the resnet18 / 10% dims (see compare/convert "dims")
    model = RiemEmbedding(list(range(batch)), m, n, d, d_mu, default_shifts(d, 6)).to(device)
    t = torch.randn(batch, m, n, generator=torch.Generator().manual_seed(0)).to(device)
    default_chunk = FitConfig().chunk_elems
    big_chunk = args.probe_big_chunk
    res: dict[str, Any] = {"batch": batch, "m": m, "n": n, "d": d, "d_mu": d_mu,
                           "z_elements_per_step": batch * m * n * 6 * d_mu,
                           "default_chunk_elems": default_chunk,
                           "rows_per_chunk_default": model.rows_per_chunk(default_chunk),
                           "big_chunk_elems": big_chunk,
                           "rows_per_chunk_big": model.rows_per_chunk(big_chunk),
                           "repeats": args.probe_repeats, "s_per_step": {}}

    def grads() -> list[torch.Tensor]:
        return [p.grad.detach().clone() for p in model.parameters()]

    # gradient check: the prototype must compute what the engine computes
    model.zero_grad()
    _engine_step(model, t, default_chunk)
    g_ref = grads()
    model.zero_grad()
    cached_columns_step(model, t, default_chunk)
    res["prototype_grad_max_rel_diff"] = max(
        float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in zip(grads(), g_ref))

    variants: dict[str, Callable[[], Any]] = {
        "engine_default_chunk": lambda: _engine_step(model, t, default_chunk),
        "engine_big_chunk": lambda: _engine_step(model, t, big_chunk),
        "cols_once_default_chunk": lambda: cached_columns_step(model, t, default_chunk),
        "cols_once_big_chunk": lambda: cached_columns_step(model, t, big_chunk),
        "cols_once_default_chunk_bf16": lambda: cached_columns_step(model, t, default_chunk,
                                                                     dtype=torch.bfloat16),
        "cols_once_big_chunk_bf16": lambda: cached_columns_step(model, t, big_chunk,
                                                                 dtype=torch.bfloat16),
    }
    for name, fn in variants.items():
        model.zero_grad()
        res["s_per_step"][name] = _timed(fn, device, args.probe_repeats)
        print(f"  probe {name}: {res['s_per_step'][name]:.3f} s/step", flush=True)
    # bf16 activations: how far the loss moves from fp32 (relative), at the random init
    with torch.no_grad():
        rowp, cols = model.row_part(slice(None)), model.shifted_columns()
        sl = slice(0, min(m, 8))
        l32 = _chunk_sse(rowp[:, sl], cols, model.w, model.c, t[:, sl])
        l16 = _chunk_sse(rowp[:, sl], cols, model.w, model.c, t[:, sl], torch.bfloat16)
        res["bf16_loss_rel_diff"] = float(((l16 - l32).abs() / l32).max())
    if args.probe_compile:
        compiled = torch.compile(_chunk_sse, dynamic=False)
        res["compile_s"] = {}
        for label, chunk in (("big", big_chunk), ("default", default_chunk)):
            model.zero_grad()
            start = time.perf_counter()
            cached_columns_step(model, t, chunk, compiled)  # compiles (and the last chunk's shape)
            sync(device)
            res["compile_s"][label] = time.perf_counter() - start
            key = f"cols_once_{label}_chunk_compiled"
            res["s_per_step"][key] = _timed(lambda c=chunk: cached_columns_step(model, t, c, compiled),
                                            device, args.probe_repeats)
            print(f"  probe {key}: {res['s_per_step'][key]:.3f} s/step", flush=True)
    if args.probe_fit_steps:
        res["bf16_fit"] = bf16_fit_check(model, t, default_chunk, args.probe_fit_steps,
                                         args.probe_fit_lr, device)
        print(f"  probe bf16 fit: {res['bf16_fit']}", flush=True)
    base = res["s_per_step"]["engine_default_chunk"]
    res["speedup_over_engine_default"] = {k: base / v for k, v in res["s_per_step"].items()}
    return res


def bf16_fit_check(model: RiemEmbedding, t: torch.Tensor, chunk_elems: int, steps: int,
                   lr: float, device: torch.device) -> dict[str, Any]:
    """Fidelity of bf16 activations over a short fit, not just at one point: from the engine's
    SVD warm start of ``t``, ``steps`` Adam steps (constant ``lr``) with the column-half-once
    prototype in fp32 and in bf16 (same start); both end states are scored in fp32 (rel. MSE
    per element = SSE / (m n), the target being standardised). Returns both and their ratio."""
    start_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        init_riem_from_svd(model, t, seeds=list(range(model.batch)))
    warm = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def score(dtype: torch.dtype | None = None) -> torch.Tensor:
        with torch.no_grad():
            rowp, cols = model.row_part(slice(None)), model.shifted_columns()
            step = model.rows_per_chunk(chunk_elems)
            return sum(_chunk_sse(rowp[:, i:i + step], cols, model.w, model.c, t[:, i:i + step],
                                  dtype) for i in range(0, model.m, step)) / (model.m * model.n)

    # the warm start writes products as differences of sigmoids times a large weight: the
    # question is whether bf16 activations can represent it at all (scored in bf16 here)
    res: dict[str, Any] = {"steps": steps, "lr": lr, "init": "svd", "chunk_elems": chunk_elems,
                           "rel_mse_at_warm_start": float(score().mean()),
                           "rel_mse_at_warm_start_scored_in_bf16":
                               float(score(torch.bfloat16).mean())}
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        model.load_state_dict(warm)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            cached_columns_step(model, t, chunk_elems, dtype=dtype)
            opt.step()
        sync(device)
        res[f"{name}_s"] = time.perf_counter() - start
        res[f"{name}_rel_mse"] = float(score().mean())
    res["bf16_over_fp32_rel_mse"] = res["bf16_rel_mse"] / res["fp32_rel_mse"]
    model.load_state_dict(start_state)
    return res


# ---------------------------------------------------------------------------------------------
# init_cost: what the SVD warm start costs, and what computing each layer's SVD once would save


def init_cost(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Per fit unit of ``--init-arch`` (``--init-layers``, ``--convert-seeds`` seeds): the engine's
    ``initialize`` (SVD warm start of every element, then one reconstruct for the offset c),
    and, separately, ``torch.linalg.svd`` of the stacked (layers x seeds) targets as the engine
    calls it vs of each distinct layer once (the seeds' targets are copies of the same matrix;
    the seeds differ only by a rotation applied after the SVD) vs ``torch.svd_lowrank`` at the
    rank the warm start uses (<= d - 1), with that rank's approximation error vs the full SVD's.
    """
    model = build_arch(args.init_arch)
    layers = select_layers(model, args.init_layers)
    seeds = list(range(args.convert_seeds))
    method = riem_method(1, "svd")
    job = make_job(model, layers, args.ratio, len(seeds), device)
    rows, totals = [], {"initialize_s": 0.0, "svd_stacked_s": 0.0, "svd_unique_s": 0.0,
                        "svd_lowrank_unique_s": 0.0}
    for unit in method.plan(job):
        if unit.chain:
            continue
        m, n = unit.shapes[0]
        elem_seeds = [element_seed(s, name) for name in unit.layers for s in seeds]
        part = method.make(elem_seeds, m, n, unit.dims).to(device)
        stacked = torch.stack([t for t in unit.targets for _ in seeds]).to(device)
        unique = torch.stack(unit.targets).to(device)
        sync(device)
        t0 = time.perf_counter()
        info = method.initialize([part], [stacked], elem_seeds)
        sync(device)
        t1 = time.perf_counter()
        torch.linalg.svd(stacked, full_matrices=False)
        sync(device)
        t2 = time.perf_counter()
        u, sv, vh = torch.linalg.svd(unique, full_matrices=False)
        sync(device)
        t3 = time.perf_counter()
        svd_unique_s = t3 - t2
        extra: dict[str, float] = {}
        if args.init_reconstruct:  # what the warm start's final reconstruct() (for c) costs
            chunk = method.cfg.fit.chunk_elems
            r0 = time.perf_counter()
            ref = part.reconstruct(chunk)
            sync(device)
            r1 = time.perf_counter()
            alt = cols_once_reconstruct(part, chunk)
            sync(device)
            extra = {"reconstruct_s": r1 - r0,
                     "reconstruct_cols_once_s": time.perf_counter() - r1,
                     "reconstruct_cols_once_max_abs_diff": float((alt - ref).abs().max())}
            del ref, alt
            t3 = time.perf_counter()
        rank = int(info.get("init_rank", unit.dims["d"] - 1) or 1)
        lu, ls, lv = torch.svd_lowrank(unique, q=min(rank + 10, m, n), niter=2)
        sync(device)
        t4 = time.perf_counter()
        full_r = (u[..., :rank] * sv[:, None, :rank]) @ vh[:, :rank]
        low_r = (lu[..., :rank] * ls[:, None, :rank]) @ lv[..., :rank].transpose(1, 2)
        norm = unique.square().sum((1, 2))
        errs = [float(((a - unique).square().sum((1, 2)) / norm).mean()) for a in (full_r, low_r)]
        row = {"layers": len(unit.layers), "shape": [m, n], "batch": stacked.shape[0],
               "rank": rank, "initialize_s": t1 - t0, "svd_stacked_s": t2 - t1,
               "svd_unique_s": svd_unique_s, "svd_lowrank_unique_s": t4 - t3,
               "rank_r_rel_err_full_svd": errs[0], "rank_r_rel_err_lowrank": errs[1], **extra}
        rows.append(row)
        for k, v in row.items():
            if k.endswith("_s"):
                totals[k] = totals.get(k, 0.0) + v
        print(f"  init_cost {m}x{n} x{stacked.shape[0]}: initialize {t1 - t0:.1f} s, svd "
              f"stacked {t2 - t1:.1f} s, unique {svd_unique_s:.2f} s, lowrank {t4 - t3:.2f} s, "
              f"reconstruct {extra.get('reconstruct_s', 0):.1f} s (cols once "
              f"{extra.get('reconstruct_cols_once_s', 0):.1f} s)",
              flush=True)
    return {"arch": args.init_arch, "layers": args.init_layers, "seeds": len(seeds),
            "units": rows, "totals": totals,
            "svd_stacked_over_unique": totals["svd_stacked_s"] / totals["svd_unique_s"],
            "svd_stacked_over_lowrank_unique": totals["svd_stacked_s"] /
            totals["svd_lowrank_unique_s"]}


# ---------------------------------------------------------------------------------------------
# profile


def profile(args: argparse.Namespace, device: torch.device, out: Path) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = build_arch("resnet18")
    layers = select_layers(model, args.profile_layers)
    method = riem_method(args.profile_steps, args.profile_init)
    job = make_job(model, layers, args.ratio, args.profile_seeds, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    start = time.perf_counter()
    with torch_profile(activities=activities) as prof:
        method.compress(job)
        sync(device)
    wall = time.perf_counter() - start
    table = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=40)
    header = (f"torch.profiler: one EmbeddingMethod.compress of resnet18 (random weights), "
              f"layers={args.profile_layers} ({len(layers)} layers), seeds={args.profile_seeds}, "
              f"steps={args.profile_steps}, init={args.profile_init}, ratio={args.ratio}, device={device_name(device)}, "
              f"git {git_revision()}, {datetime.now(UTC).isoformat(timespec='seconds')}, "
              f"wall {wall:.1f} s under the profiler; top-15 ops by {sort}\n\n")
    path = out / result_name("profile", device, args.smoke, args.tag, ".txt")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(header + table + "\n")
    top = [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count}
           for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:15]]
    return {"file": path.name, "wall_s": wall, "layers": args.profile_layers,
            "seeds": args.profile_seeds, "steps": args.profile_steps, "top_self_cpu": top}


# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_mode_args(ap, "GPU sizes (ResNet-18/50, 2000 steps)")
    ap.add_argument("--parts", default="compare,convert,probe,init_cost,profile")
    ap.add_argument("--arch")
    ap.add_argument("--layers", help="compare: select_layers spec")
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--ratio", type=float, default=0.1, help="budget: fraction of dense weights")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--init", default="random", choices=["random", "svd"],
                    help="compare: init of engine and naive loops (the same for both)")
    ap.add_argument("--naive", default="naive_batch1,naive_plain")
    ap.add_argument("--convert-archs")
    ap.add_argument("--convert-layers")
    ap.add_argument("--convert-seeds", type=int)
    ap.add_argument("--convert-steps", type=int)
    ap.add_argument("--convert-init", choices=["random", "svd", "spectral"],
                    help="convert: init (svd in the cpu and full presets, random in --smoke)")
    ap.add_argument("--chunk-elems", type=int, help="convert: override fit.chunk_elems")
    ap.add_argument("--progress", action="store_true",
                    help="convert: progress bars per fit unit on stderr")
    ap.add_argument("--probe-shape", type=int, nargs=3, metavar=("BATCH", "M", "N"))
    ap.add_argument("--probe-big-chunk", type=int, default=2**27)
    ap.add_argument("--probe-repeats", type=int, default=1)
    ap.add_argument("--probe-compile", type=int, choices=[0, 1])
    ap.add_argument("--probe-fit-steps", type=int,
                    help="probe: Adam steps of the fp32-vs-bf16 fidelity fit (0: skip)")
    ap.add_argument("--probe-fit-lr", type=float, default=1e-3,
                    help="probe: lr of that fit (a polish of the SVD warm start, as table 1's)")
    ap.add_argument("--init-arch", help="init_cost: architecture (default: resnet18)")
    ap.add_argument("--init-layers", help="init_cost: select_layers spec")
    ap.add_argument("--init-reconstruct", type=int, choices=[0, 1], default=1,
                    help="init_cost: also time the engine's reconstruct() vs the prototype's")
    ap.add_argument("--profile-layers")
    ap.add_argument("--profile-seeds", type=int)
    ap.add_argument("--profile-steps", type=int)
    ap.add_argument("--profile-init", choices=["random", "svd"])
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--tag", default="", help="suffix of the result file names (a supplementary "
                    "run next to the main one: convert-<device>-<tag>.json)")
    ap.add_argument("--note", default="", help="free text recorded in the JSON (e.g. what a "
                    "reduced run left out)")
    ap.add_argument("--child-convert", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    preset = PRESETS["smoke" if args.smoke else "full" if args.full else "cpu"]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    args.probe_compile = bool(args.probe_compile)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child_convert:
        print(json.dumps(convert_child(json.loads(args.child_convert))))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    out = Path(args.out)
    parts = args.parts.split(",")
    result: dict[str, Any] = {"benchmark": "riem_network_conversion", **environment(device),
                              "mode": "smoke" if args.smoke else "full" if args.full else "cpu",
                              "settings": {k: v for k, v in vars(args).items()
                                           if k != "child_convert"}}
    start = time.perf_counter()
    if "compare" in parts:
        print(f"compare: {args.arch} {args.layers}, {args.seeds} seeds, {args.steps} steps",
              flush=True)
        result["compare"] = compare(args, device)
    if "convert" in parts:
        result["convert"] = convert(args, device)
    if "probe" in parts:
        result["probe"] = probe(args, device)
    if "init_cost" in parts:
        result["init_cost"] = init_cost(args, device)
    if "profile" in parts:
        result["profile"] = profile(args, device, out)
    result["total_s"] = time.perf_counter() - start
    path = write_result(result, out, "convert", device, args.smoke, args.tag)
    summary = {k: result[k] for k in ("compare",) if k in result}
    print(json.dumps(summary, indent=1)[:4000])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
