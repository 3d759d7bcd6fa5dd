"""The equal-bytes recipe: which cells the equal-bytes table needs, sized from budgets that
are themselves measured (the artifacts of uniform quantization at 4 and 8 bits), run in-process
through :func:`riembench.harness.runner.run`, then the table (:mod:`riembench.report.table_bytes`).

``python -m riembench.cli.equal_bytes run [--backbones lenet5,resnet9] [--fit-steps N]`` runs what
the store lacks and writes tables/equal_bytes.{csv,md,png}; ``write`` only writes the table.
Why a recipe and not a sweep: the budget of every row but the first is read off a file the first
row wrote, so the cells cannot be listed before it runs.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Any

from riembench.report.table_bytes import BACKBONES, BUDGETS, NAME

log = logging.getLogger("riembench")


#: per-backbone settings of this table: ResNet-9 at a quarter width (0.41M parameters, trained
#: by `riembench-train backbone=resnet9 backbone.width=0.25 dataset=digits`), so that RieM and
#: Lp-norm fits of all its layers stay a CPU job
BACKBONE_OVERRIDES: dict[str, list[str]] = {"resnet9": ["backbone.width=0.25"]}


def prune_ratio_for(budget_bytes: float, model: Any, layers: list[str]) -> float:
    """The unstructured pruning ratio whose sparse artifact (1-bit mask of every weight + the
    kept values in float32, :class:`riembench.compression.packing.SparseWeight`) plus the rest of the model
    at its dtypes takes ``budget_bytes``; header and metadata are not budgeted."""
    from riembench.compression.network import dense_weight_count
    from riembench.sizing.cost import stored_tensors

    weights = dense_weight_count(model, layers)
    rest = (stored_tensors(model)[2] - 32 * weights) / 8
    kept = (budget_bytes - rest - math.ceil(weights / 8) * 1.0) / 4
    if kept <= 0:
        raise ValueError(f"a budget of {budget_bytes:.0f} bytes leaves nothing for the kept weights")
    return max(0.0, 1.0 - kept / weights)


def quant_cell(budget_name: str) -> list[str]:
    """The row whose artifact defines the budget: uniform quantization, per tensor, W b / A 8."""
    bits = BUDGETS[budget_name]
    return ["method=quant", f"method.w_bits={bits}", "method.a_bits=8", "seeds=[0]",
            f"method.label={budget_name}"]


def sized_cells(budget_name: str, budget_bytes: float, model: Any, layers: list[str],
                fit_steps: int | None, seeds: list[int], riem_init: str | None = None
                ) -> dict[str, list[str]]:
    """Override lists of one budget's other rows, each aimed at ``budget_bytes`` on disk."""
    bits = BUDGETS[budget_name]
    one = ["seeds=[0]"]
    fitted = [f"seeds=[{','.join(map(str, seeds))}]"]
    if fit_steps is not None:
        fitted.append(f"method.fit.steps={fit_steps}")
    sized = ["size=bytes", f"size.bytes={int(budget_bytes)}"]
    ratio = prune_ratio_for(budget_bytes, model, layers)
    rows = {
        "dfq": ["method=dfq", f"method.w_bits={bits}", "method.a_bits=8", *one],
        "svd": ["method=svd", "method.w_bits=8", *sized, *one],
        "prune": ["method=prune", "method.mode=unstructured", f"method.ratio={ratio:.6f}", *one],
        "lpnorm": ["method=lpnorm", "method.w_bits=8", "method.a_bits=16", *sized, *fitted],
        "riem": ["method=riem", "method.w_bits=8", "method.a_bits=16", *sized, *fitted,
                 *([f"method.init={riem_init}"] if riem_init else [])],
    }
    return {k: [*r, f"method.label={budget_name}"] for k, r in rows.items()}


#: rows whose bytes a budget sets (DFQ's follow from its bits, like quantization's)
SIZED = ("svd", "prune", "lpnorm", "riem")
#: rows sized by a pruning ratio, not by ``size=bytes``: their container overhead is measured
#: here by a probe (``size=bytes`` rows have the runner measure their own)
PROBED = ("prune",)


def run_plan(store_root: str, backbones: list[str], fit_steps: int | None, seeds: list[int],
             threads: int = 1, riem_init: str | None = None, only: list[str] | None = None,
             budgets: list[str] | None = None) -> None:
    """Run every cell: per backbone and budget, quantization first; its artifact's bytes then
    size every other row. What no formula budgets (scales, ranges, header) is measured by a
    probe of the same cell and taken off the budget of the real run: by the runner for the
    ``size=bytes`` rows, here (a run in a scratch store) for pruning, whose size is a ratio.
    Cells already in the store are skipped by the runner."""
    import tempfile

    from hydra import compose, initialize_config_dir

    from riembench.backbones import load_backbone
    from riembench.compression.network import select_layers
    from riembench.config.backbones import BACKBONES as BB
    from riembench.config.datasets import DATASETS
    from riembench.config.identity import typed_group
    from riembench.config.tree import config_dir
    from riembench.harness.runner import run
    from riembench.store.records import RunStore

    base = [f"experiment={NAME}", f"threads={threads}"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"), \
            tempfile.TemporaryDirectory() as scratch:
        for backbone in backbones:
            extra = BACKBONE_OVERRIDES.get(backbone, [])
            ov = [*base, f"backbone={backbone}", *extra, f"store.root={store_root}"]
            run(compose("config", [*ov, "method=original", "seeds=[0]"]))
            cfg = compose("config", [*ov, "method=original"])
            task = DATASETS.get("digits")(typed_group(cfg.dataset, DATASETS), None)
            model = load_backbone(typed_group(cfg.backbone, BB), task, "cpu",
                                  typed_group(cfg.dataset, DATASETS)).model
            layers = select_layers(model, "all")
            for budget_name in budgets or list(BUDGETS):
                outcome = run(compose("config", [*ov, *quant_cell(budget_name)]))
                budget = _artifact_bytes(RunStore(store_root), outcome.table, backbone, budget_name)
                rows = sized_cells(budget_name, budget, model, layers, fit_steps, seeds, riem_init)
                if not only or "dfq" in only:
                    run(compose("config", [*ov, *rows["dfq"]]))
                for name in [n for n in SIZED if not only or n in only]:
                    if name not in PROBED:
                        run(compose("config", [*ov, *rows[name]]))
                        continue
                    where = Path(scratch) / f"{backbone}-{budget_name}-{name}"  # one probe each
                    probed = run(compose("config", [*base, f"backbone={backbone}", *extra,
                                                    f"store.root={where}", *rows[name]]))
                    over = _written_bytes(probed, RunStore(where)) - budget
                    aimed = budget - max(over, 0)
                    log.info("%s %s %s: budget %d bytes, probe %+d, aimed at %d", backbone,
                             budget_name, name, budget, over, aimed)
                    row = sized_cells(budget_name, aimed, model, layers, fit_steps, seeds,
                                      riem_init)[name]
                    run(compose("config", [*ov, *row]))


def _written_bytes(outcome: Any, store: Any) -> int:
    """Artifact bytes of the (one) record a probe run wrote, or found already recorded."""
    import json

    paths = outcome.written or [str(p) for p in (store.root / outcome.table).glob("*.json")]
    sizes = [json.loads(Path(p).read_text())["cost"].get("artifact_bytes") for p in paths]
    sizes = [s for s in sizes if s is not None]
    if not sizes:
        raise RuntimeError(f"the probe of {outcome.table} wrote no artifact")
    return int(max(sizes))


def _artifact_bytes(store: Any, table: str, backbone: str, label: str) -> int:
    sizes = [r["cost"]["artifact_bytes"] for r in store.iter_records(table)
             if r["method"] == "quant" and r["cell"]["backbone"] == backbone
             and r["cell"]["variant"] == label and r["status"] == "ok"]
    if not sizes:
        raise RuntimeError(f"no quantization record for {backbone} {label}: cannot set its budget")
    return int(max(sizes))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m riembench.cli.equal_bytes",
                                     description="run and write the equal-bytes table")
    parser.add_argument("action", choices=["run", "write"])
    parser.add_argument("--store", default="tables/records")
    parser.add_argument("--out", default="tables")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--fit-steps", type=int, default=None,
                        help="RieM / Lp-norm fit steps (default: the method configs')")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--riem-init", default=None,
                        help="RieM start (default: the method config's); svd suits short fits")
    parser.add_argument("--budgets", default=None, help="comma-separated, e.g. b4")
    parser.add_argument("--only", default=None,
                        help="comma-separated rows to run besides quantization (e.g. riem)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.action == "run":
        run_plan(str(Path(args.store).resolve()), args.backbones.split(","), args.fit_steps,
                 [int(s) for s in args.seeds.split(",")], args.threads, args.riem_init,
                 args.only.split(",") if args.only else None,
                 args.budgets.split(",") if args.budgets else None)
    from riembench.report.tables import write_table

    for path in write_table(NAME, args.store, args.out):
        print(path)


if __name__ == "__main__":
    main()
