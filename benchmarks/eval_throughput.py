"""ImageNet-style evaluation throughput: the project's eval path against timm-style loops.

Why: a table cell's cost is conversion + evaluation, so the evaluation must cost no more than
the validation loop its users know (timm's ``validate.py``), and a converted model must cost
what the original costs at inference (``riembench.compression.compact.materialize`` builds every weight
once, then the original ops run). Measured on synthetic images (random 224 x 224 tensors,
random labels: throughput does not depend on the pixels), for the original model and for a
RieM-converted one (after ``materialize``), each through

* ``project``: ``riembench.harness.evaluate.predict`` + ``classification_metrics`` (top-1 and top-5)
  over a ``TensorDataset``: what the runner's ``evaluate_split`` calls for classification
  (DataLoader and batch collation included; channels_last; on CUDA pinned memory,
  ``non_blocking`` copies and bf16/fp16 autocast);
* ``timm``: timm's ``validate.py`` loop at its defaults (eval mode, ``torch.no_grad``, fp32,
  NCHW) over pre-split batches (no loader at all: the reference gets the cheaper input side),
  top-1/top-5 by ``timm.utils.accuracy``;
* ``timm_cl``: the same with ``--channels-last``; on CUDA also ``timm_cl_amp``
  (``--channels-last --amp``, the same autocast dtype as the project path).

The conversion runs a single fitting step (``init=random``): throughput after ``materialize``
does not depend on how well the weights were fitted. Each round runs every (model, path) pair
once, in the same order (A B C A B C ...), and the median round is reported, so a load change
on a shared machine hits all of them alike. The ratios ``project / <reference>`` are the
numbers to read (> 1: the project's path is faster): of the median rounds, and the median of
the per-round ratios (``_paired``: each from runs seconds apart, the steadier of the two on a
loaded machine). Results:
``benchmarks/results/eval-<device>.json``.

    python benchmarks/eval_throughput.py [--batches 4 --batch-size 16]   # CPU sizes
    python benchmarks/eval_throughput.py --full --device cuda            # GPU sizes
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

# the shared helpers live in the sibling script convert.py (benchmarks/ is not a package)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert import (
    RESULTS,
    add_mode_args,
    build_arch,
    environment,
    make_job,
    pick_device,
    riem_method,
    sync,
    write_result,
)

from riembench.compression.compact import embedded_layers, materialize
from riembench.compression.network import select_layers
from riembench.harness.evaluate import autocast_dtype, classification_metrics, predict

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"batch_size": 2, "batches": 2, "rounds": 1, "layers": "fc", "threads": 1},
    "cpu": {"batch_size": 16, "batches": 4, "rounds": 3, "layers": "all", "threads": 1},
    "full": {"batch_size": 256, "batches": 20, "rounds": 5, "layers": "all"},
}


def timm_loop(channels_last: bool = False, amp: bool = False) -> Callable[..., dict[str, float]]:
    """timm ``validate.py``'s loop (its defaults; ``--channels-last``; ``--amp``)."""
    timm_accuracy = reference_accuracy()

    def run(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
            device: torch.device) -> dict[str, float]:
        model.eval()
        if channels_last:
            model.to(memory_format=torch.channels_last)
        dtype = autocast_dtype(device) if amp else None
        top1 = top5 = 0.0
        try:
            with torch.no_grad():
                for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    if channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                        out = model(x)
                    acc1, acc5 = timm_accuracy(out, y, topk=(1, 5))
                    top1 += float(acc1) * x.shape[0]
                    top5 += float(acc5) * x.shape[0]
        finally:
            if channels_last:
                model.to(memory_format=torch.contiguous_format)
        return {"acc": top1 / labels.numel(), "top5": top5 / labels.numel()}

    return run


def reference_accuracy() -> Callable[..., list[torch.Tensor]]:
    """timm's ``accuracy`` (top-k % of a batch); timm is an optional dependency (table 4), so
    without it the same computation written out (timm's formula: one topk, then prefixes)."""
    try:
        from timm.utils import accuracy
    except ImportError:
        def accuracy(output: torch.Tensor, target: torch.Tensor,
                     topk: tuple[int, ...] = (1,)) -> list[torch.Tensor]:
            maxk = min(max(topk), output.size(1))
            pred = output.topk(maxk, 1, True, True)[1].t()
            correct = pred.eq(target.reshape(1, -1).expand_as(pred))
            return [correct[:min(k, maxk)].reshape(-1).float().sum(0) * 100.0 / target.size(0)
                    for k in topk]
    return accuracy


def project_path(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 device: torch.device) -> dict[str, float]:
    logits, targets = predict(model, TensorDataset(images, labels), batch_size, device,
                              progress=False)
    return classification_metrics(logits, targets)


def convert_model(arch: str, layers: str, device: torch.device) -> tuple[nn.Module, float]:
    """One seed of the project's riem conversion (1 step), materialized. Returns (model, s)."""
    base = build_arch(arch)
    job = make_job(base, select_layers(base, layers), 0.1, 1, device)
    start = time.perf_counter()
    out = riem_method(1, "random").compress(job)[0]
    if out.failed:
        raise SystemExit(f"conversion failed: {out.failed}")
    return materialize(out.model), time.perf_counter() - start


def scores_agree(ours: dict[str, float], reference: dict[str, float],
                 device: torch.device) -> bool:
    """Equal top-1/top-5 on the CPU (both fp32); within a point under CUDA autocast, where a
    near-tie between two classes may flip."""
    tol = 1.0 if device.type == "cuda" else 0.0
    return all(math.isclose(ours[k], reference[k], abs_tol=tol) for k in reference)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_mode_args(ap, "GPU sizes")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--layers", help="layers the converted model converts (select_layers spec)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--batches", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    for key, value in PRESETS["smoke" if args.smoke else "full" if args.full else "cpu"].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    result: dict[str, Any] = {"benchmark": "eval_throughput", **environment(device),
                              "reference_accuracy": reference_accuracy().__module__,
                              "mode": "smoke" if args.smoke else "full" if args.full else "cpu",
                              "settings": vars(args)}

    original = build_arch(args.arch).to(device)
    converted, convert_s = convert_model(args.arch, args.layers, device)
    converted = converted.to(device)
    result["converted"] = {"layers": args.layers, "embedded_layers": len(embedded_layers(converted)),
                           "conversion_s": convert_s, "fit_steps": 1, "init": "random"}
    n = args.batch_size * args.batches
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, 224, 224, generator=gen)
    labels = torch.randint(0, 1000, (n,), generator=gen)
    if device.type == "cuda":
        images = images.pin_memory()
    paths: dict[str, Callable[..., dict[str, float]]] = {
        "project": project_path, "timm": timm_loop(), "timm_cl": timm_loop(channels_last=True)}
    if device.type == "cuda":
        paths["timm_cl_amp"] = timm_loop(channels_last=True, amp=True)
    models = {"original": original, "converted": converted}
    runs: dict[tuple[str, str], list[float]] = {(m, p): [] for m in models for p in paths}
    scores: dict[tuple[str, str], dict[str, float]] = {}
    for (m, p) in runs:  # warm-up: one batch each, untimed
        paths[p](models[m], images[:args.batch_size], labels[:args.batch_size], args.batch_size,
                 device)
    for _ in range(args.rounds):
        for (m, p), times in runs.items():
            sync(device)
            start = time.perf_counter()
            scores[(m, p)] = paths[p](models[m], images, labels, args.batch_size, device)
            sync(device)
            times.append(time.perf_counter() - start)
    ips = {f"{m}_{p}": n / statistics.median(t) for (m, p), t in runs.items()}
    result["images_per_s"] = ips
    result["round_seconds"] = {f"{m}_{p}": t for (m, p), t in runs.items()}
    result["images_per_round"] = n
    result["ratios_project_over"] = {
        f"{m}_{p}": ips[f"{m}_project"] / ips[f"{m}_{p}"] for m in models for p in paths
        if p != "project"}
    # the same ratio per round (runs minutes apart share less of the machine's load), median
    result["ratios_project_over_paired"] = {
        f"{m}_{p}": statistics.median(ref / ours for ours, ref in
                                      zip(runs[(m, "project")], runs[(m, p)], strict=True))
        for m in models for p in paths if p != "project"}
    result["ratio_converted_over_original_project"] = \
        ips["converted_project"] / ips["original_project"]
    # the paths must agree on what they compute (top-1/top-5 on the same images); under AMP
    # a near-tie may flip, so the fp32 reference is the one compared
    result["scores"] = {f"{m}_{p}": v for (m, p), v in scores.items()}
    result["paths_agree"] = all(scores_agree(scores[(m, "project")], scores[(m, "timm")], device)
                                for m in models)
    path = write_result(result, Path(args.out), "eval", device, args.smoke)
    print({k: round(v, 2) for k, v in ips.items()})
    print("project / reference:", {k: round(v, 3) for k, v in result["ratios_project_over"].items()})
    print("per round, median:", {k: round(v, 3)
                                 for k, v in result["ratios_project_over_paired"].items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
