"""ImageNet-style evaluation throughput: the project's eval path vs a plain timm-style loop.

Why: a table cell's cost is conversion + evaluation, and the converted model must cost what the
original costs at inference (``riembench.compact.materialize`` builds every weight once, then
the original ops run). Measured on synthetic images (random 224 x 224 tensors, random labels:
throughput does not depend on the pixels), for the original model and for a RieM-converted one
(after ``materialize``), each through

* ``project``: ``riembench.evaluate.evaluate_accuracy`` over a ``TensorDataset`` (what the
  runner's ``evaluate_split`` calls for image classification; DataLoader, batch collation,
  ``inference_mode``, argmax);
* ``plain``: ``model.eval()``, ``torch.inference_mode()``, a loop over pre-split batches, argmax
  (what timm's validate loop does without its data pipeline).

The conversion runs a single fitting step (``init=random``): throughput after ``materialize``
does not depend on how well the weights were fitted. Rounds alternate between the four
(model, path) pairs and the median round is reported, so a load change on a shared machine hits
all of them alike. Results: ``benchmarks/results/eval-<device>.json``.

    python benchmarks/eval_throughput.py [--batches 4 --batch-size 16]   # CPU sizes
    python benchmarks/eval_throughput.py --full --device cuda            # GPU sizes
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
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

from riembench.compact import embedded_layers, materialize
from riembench.evaluate import evaluate_accuracy
from riembench.network import select_layers

PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"batch_size": 2, "batches": 2, "rounds": 1, "layers": "fc", "threads": 1},
    "cpu": {"batch_size": 16, "batches": 4, "rounds": 3, "layers": "all", "threads": 1},
    "full": {"batch_size": 256, "batches": 20, "rounds": 5, "layers": "all"},
}


def plain_loop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
               device: torch.device) -> float:
    """timm-style: eval mode, inference_mode, batches, argmax. Returns top-1 accuracy (%)."""
    model.eval()
    correct = 0
    with torch.inference_mode():
        for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
            pred = model(x.to(device, non_blocking=True)).argmax(1)
            correct += int((pred == y.to(pred.device)).sum())
    return 100.0 * correct / labels.numel()


def project_path(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int,
                 device: torch.device) -> float:
    return evaluate_accuracy(model, TensorDataset(images, labels), batch_size, device)


def convert_model(arch: str, layers: str, device: torch.device) -> tuple[nn.Module, float]:
    """One seed of the project's riem conversion (1 step), materialized. Returns (model, s)."""
    base = build_arch(arch)
    job = make_job(base, select_layers(base, layers), 0.1, 1, device)
    start = time.perf_counter()
    out = riem_method(1, "random").compress(job)[0]
    if out.failed:
        raise SystemExit(f"conversion failed: {out.failed}")
    return materialize(out.model), time.perf_counter() - start


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
    runs = {(m, p): [] for m in ("original", "converted") for p in ("project", "plain")}
    models = {"original": original, "converted": converted}
    paths = {"project": project_path, "plain": plain_loop}
    accs: dict[tuple[str, str], float] = {}
    for (m, p) in runs:  # warm-up: one batch each, untimed
        paths[p](models[m], images[:args.batch_size], labels[:args.batch_size], args.batch_size,
                 device)
    for _ in range(args.rounds):
        for (m, p), times in runs.items():
            sync(device)
            start = time.perf_counter()
            accs[(m, p)] = paths[p](models[m], images, labels, args.batch_size, device)
            sync(device)
            times.append(time.perf_counter() - start)
    ips = {f"{m}_{p}": n / statistics.median(t) for (m, p), t in runs.items()}
    result["images_per_s"] = ips
    result["round_seconds"] = {f"{m}_{p}": t for (m, p), t in runs.items()}
    result["images_per_round"] = n
    result["ratio_project_over_plain_original"] = ips["original_project"] / ips["original_plain"]
    result["ratio_project_over_plain_converted"] = ips["converted_project"] / ips["converted_plain"]
    result["ratio_converted_over_original_plain"] = ips["converted_plain"] / ips["original_plain"]
    result["ratio_converted_over_original_project"] = \
        ips["converted_project"] / ips["original_project"]
    # both paths must agree on what they compute (same predictions on the same images)
    result["paths_agree"] = all(accs[(m, "project")] == accs[(m, "plain")] for m in models)
    path = write_result(result, Path(args.out), "eval", device, args.smoke)
    print({k: round(v, 2) for k, v in ips.items()})
    print(f"converted/original (plain loop): {result['ratio_converted_over_original_plain']:.3f}, "
          f"project/plain (original): {result['ratio_project_over_plain_original']:.3f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
