"""What riem and lpnorm share as matrix methods: seeds batched through the fitting engine.

Each subclass only says how to size its embedding for a budget and how to build it; fitting,
failure handling and bookkeeping live here once.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import math
import time
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from riembench.compression.act_ranges import StatsReport, input_stats
from riembench.compression.compact import EmbeddedLayer, quantize_embedded, tie_chain
from riembench.compression.methods.base import (
    CompressedNet,
    MatrixApprox,
    MatrixMethod,
    NetworkJob,
    NetworkMethod,
)
from riembench.compression.network import (
    dense_weight_count,
    find_chains,
    get_module,
    matrix_shape,
    set_module,
    weight_matrix,
)
from riembench.compression.quantize import quantize_inputs
from riembench.config.methods import EmbeddingMethodConfig
from riembench.core.errors import ImpossibleBudget
from riembench.engine.embeddings import BatchedEmbedding
from riembench.engine.fit import FitRun, fit
from riembench.engine.starts import apply_start


class EmbeddingMethod(MatrixMethod, NetworkMethod):
    """Shared by riem and lpnorm: sizing, batching, fitting and bookkeeping, for one matrix
    (table 5) or every selected layer of a network (tables 1-4). A subclass says how its
    dimensions follow from d, how many numbers an embedding stores, and how to build one."""

    cfg: EmbeddingMethodConfig

    # ---- what a subclass provides -----------------------------------------------------------

    @abstractmethod
    def dims_for_d(self, d: int, overrides: dict[str, Any]) -> dict[str, Any] | None:
        """All dimensions for position size ``d`` (None if ``d`` is not allowed, e.g. not a
        multiple of the head count); ``overrides`` are explicit values from the size config."""

    @abstractmethod
    def count(self, m: int, n: int, dims: dict[str, Any]) -> int:
        """Stored numbers of one (m, n) embedding with ``dims`` (closed form)."""

    @abstractmethod
    def make(self, seeds: Sequence[int], m: int, n: int, dims: dict[str, Any]) -> BatchedEmbedding:
        """A randomly initialised embedding, one element per seed."""

    @abstractmethod
    def start_name(self) -> str:
        """The data-free start the config's ``init`` names (each method's config declares its
        own choices of it)."""

    def initialize(self, parts: Sequence[BatchedEmbedding], targets: Sequence[torch.Tensor],
                   seeds: Sequence[int]) -> dict[str, Any]:
        """The data-free start named by ``init`` (riembench.engine.starts), in place; its record."""
        return apply_start(self.start_name(), parts, targets, seeds)

    def describe(self, model: BatchedEmbedding) -> dict[str, Any]:
        """Solved dimensions etc. worth recording with each seed."""
        return {}

    # ---- sizing -----------------------------------------------------------------------------

    def group_count(self, shapes: Sequence[tuple[int, int]], dims: dict[str, Any]) -> int:
        """Stored numbers of a chain of layers sharing neurons (one layer: no sharing): every
        layer's embedding, minus the column positions that are the previous layer's rows."""
        shared = sum(n for _, n in shapes[1:])
        return sum(self.count(m, n, dims) for m, n in shapes) - shared * int(dims["d"])

    def solve_dims(self, shapes: Sequence[tuple[int, int]], budget: int | None,
                   overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """The largest d (and what follows from it) whose group fits ``budget``; an explicit d
        (method config or size config) is checked against the budget instead."""
        overrides = dict(overrides or {})
        fixed = overrides.pop("d", None) or getattr(self.cfg, "d", None)
        name = self.cfg.name
        if fixed is not None:
            dims = self.dims_for_d(int(fixed), overrides)
            if dims is None:
                raise ImpossibleBudget(f"{name}: d={fixed} is not a valid position size")
            if budget is not None:
                check_budget(name, self.group_count(shapes, dims), budget)
            return dims
        if budget is None:
            raise ImpossibleBudget(f"{name}: the size config gives neither a budget nor d")
        neurons = shapes[0][1] + sum(m for m, _ in shapes)
        for d in range(max(1, budget // neurons), 0, -1):
            dims = self.dims_for_d(d, overrides)
            if dims is not None and self.group_count(shapes, dims) <= budget:
                return dims
        smallest = next((dm for dm in (self.dims_for_d(d, overrides) for d in range(1, 65)) if dm), None)
        need = self.group_count(shapes, smallest) if smallest else "more"
        desc = " -> ".join(f"{m}x{n}" for m, n in shapes)
        raise ImpossibleBudget(f"{name}: {desc} needs at least {need} parameters; budget is {budget}")

    def allocate(self, group_shapes: list[list[tuple[int, int]]], budget: int | None,
                 overrides: dict[str, Any], total_weights: int) -> list[dict[str, Any]]:
        """Dimensions per group of layers under one budget for all of them.

        ``uniform`` (default): one d for every neuron of the network, the largest whose total
        fits (the paper's setting: d = 10 for all of LeNet-5's FC neurons; a chain needs one d
        anyway). ``proportional``: each group gets the budget share of its dense size and its
        own d, which keeps every layer's compression ratio equal but can starve small layers.
        """
        if getattr(self.cfg, "allocation", "uniform") == "proportional" or budget is None:
            return [self.solve_dims(shapes, None if budget is None else
                                    int(budget * sum(m * n for m, n in shapes) / total_weights),
                                    overrides) for shapes in group_shapes]
        flat = [s for shapes in group_shapes for s in shapes]
        neurons = sum(shapes[0][1] + sum(m for m, _ in shapes) for shapes in group_shapes)

        def total(dims: dict[str, Any]) -> int:
            return sum(self.group_count(shapes, dims) for shapes in group_shapes)

        fixed = overrides.get("d") or getattr(self.cfg, "d", None)
        candidates = [int(fixed)] if fixed else range(max(1, budget // neurons), 0, -1)
        for d in candidates:
            dims = self.dims_for_d(d, {k: v for k, v in overrides.items() if k != "d"})
            if dims is not None and total(dims) <= budget:
                return [dims] * len(group_shapes)
            if fixed:
                need = total(dims) if dims is not None else "a valid d"
                raise ImpossibleBudget(f"{self.cfg.name}: d={fixed} needs {need} parameters for "
                                       f"{len(flat)} layer(s); budget is {budget}")
        smallest = next((dm for dm in (self.dims_for_d(d, overrides) for d in range(1, 65)) if dm), None)
        need = total(smallest) if smallest else "more"
        raise ImpossibleBudget(f"{self.cfg.name}: {len(flat)} layer(s) need at least {need} "
                               f"parameters with one d for all; budget is {budget}")

    def build(self, target_shape: tuple[int, int], budget: int, seeds: Sequence[int]) -> BatchedEmbedding:
        dims = self.solve_dims([target_shape], budget)
        model = self.make(seeds, *target_shape, dims)
        check_budget(self.cfg.name, model.params_per_matrix, budget)
        return model

    # ---- one matrix (table 5) ---------------------------------------------------------------

    def approximate(self, target: torch.Tensor, budget: int, seeds: Sequence[int],
                    device: torch.device) -> list[MatrixApprox]:
        m, n = target.shape
        model = self.build((m, n), budget, seeds).to(device)
        targets = target.to(device).expand(len(seeds), *target.shape)
        init_info = self.initialize([model], [targets], seeds)
        result = fit(model, targets, self.cfg.fit,
                     progress=self.cfg.progress, desc=f"{self.cfg.name} x{len(seeds)} seeds")
        recon = model.reconstruct(self.cfg.fit.chunk_elems).cpu()
        info_common = {**self.describe(model), **init_info, "steps_run": result.steps_run,
                       "fit_wall_time_s": result.wall_time_s, "batched_seeds": len(seeds),
                       "fit_config": asdict(self.cfg.fit)}
        out = []
        for b, _seed in enumerate(seeds):
            info = {**info_common, "rel_mse": float(result.rel_mse[b]), "best_step": result.best_step[b],
                    "history": [[step, losses[b]] for step, losses in result.history]}  # fit curve
            if result.failed[b]:
                out.append(MatrixApprox(None, model.params_per_matrix, info, failed=result.failed[b]))
            else:
                out.append(MatrixApprox(recon[b], model.params_per_matrix, info))
        return out

    # ---- a network (tables 1-4) -------------------------------------------------------------

    def layout_probe(self) -> NetworkMethod:
        """The same embeddings after one fit step: their shapes and storage are the fitted
        ones, only the values differ."""
        fit = replace(self.cfg.fit, steps=1, warmup=0, eval_every=1)
        return type(self)(replace(self.cfg, fit=fit, progress=False))

    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        """Fit every selected layer, all seeds at once, and build one converted model per seed.

        Layers chained by shared neurons are fitted jointly (one problem per chain); unchained
        layers of equal shape and dimensions are stacked into one batch with the seeds, so a
        ResNet's many equal convs are one set of tensor ops. Everything is sized before any
        fitting, so an impossible target fails first. Under the ``strict`` protocol each fit
        keeps its lowest weight error; under ``dev_guided`` (``job.dev``) every fit unit is
        advanced to each checkpoint, each seed's network is rebuilt as stored and scored on the
        dev split, and each seed keeps its best-dev state (:meth:`_dev_guided`).
        """
        units = self.plan(job)
        seeds = list(job.seeds)
        runs = [self._start_unit(unit, seeds, job.device) for unit in units]
        guided: dict[str, Any] = {}
        if job.dev is None:
            for run in runs:
                run.run()
        else:
            guided = self._dev_guided(job, units, runs, seeds)
        results = [run.finish() for run in runs]
        elements, built = self._collect(units, [run.parts for run in runs], seeds)
        per_layer: dict[str, dict[str, Any]] = {}
        failed: dict[int, str] = {}
        for unit, result in zip(units, results, strict=True):
            for k, name in enumerate(unit.layers):
                for i, seed in enumerate(seeds):
                    _, b = unit.locate(k, i, len(seeds))
                    if result.failed[b] and seed not in failed:
                        failed[seed] = f"{name}: {result.failed[b]}"
                where = [unit.locate(k, i, len(seeds)) for i in range(len(seeds))]
                per_layer[name] = {"shape": list(unit.shapes[k]), "dims": unit.dims,
                                   "chain": unit.chain_of(name),
                                   "rel_mse": [float(result.rel_mse[unit.part_of(k), b]) for _, b in where],
                                   "kept_step": [result.best_step[b] for _, b in where],
                                   "steps_run": [result.stopped_at[b] for _, b in where],
                                   "init": unit.init_info, "fit_wall_time_s": result.wall_time_s}
        nets = [self._seed_model(job, units, elements, built, per_layer, i, seed, failed.get(seed))
                for i, seed in enumerate(seeds)]
        for i, net in enumerate(nets):
            net.info["protocol"] = {"name": "strict"} if job.dev is None else {
                **{k: v for k, v in guided.items() if k != "per_seed"}, **guided["per_seed"][i]}
        return nets

    def _collect(self, units: list[FitUnit], parts_per_unit: list[list[BatchedEmbedding]],
                 seeds: list[int]) -> tuple[dict[tuple[str, int], BatchedEmbedding],
                                            dict[tuple[str, int], torch.Tensor]]:
        """Each (layer, seed)'s one-element embedding and its reconstruction (all seeds of a
        unit in one batched pass on the fitting device, not one per seed and layer)."""
        elements: dict[tuple[str, int], BatchedEmbedding] = {}
        built: dict[tuple[str, int], torch.Tensor] = {}
        for unit, parts in zip(units, parts_per_unit, strict=True):
            weights = [p.reconstruct(self.cfg.fit.chunk_elems).cpu() for p in parts]
            for k, name in enumerate(unit.layers):
                for i, seed in enumerate(seeds):
                    part_idx, b = unit.locate(k, i, len(seeds))
                    elements[(name, seed)] = parts[part_idx].element(b).cpu()
                    built[(name, seed)] = weights[part_idx][b]
        return elements, built

    def _dev_guided(self, job: NetworkJob, units: list[FitUnit], runs: list[FitRun],
                    seeds: list[int]) -> dict[str, Any]:
        """The paper's protocol: every ``job.dev.every`` steps (and at the start) rebuild each
        seed's network from the current embeddings as it would be stored (``w_bits``/``a_bits``
        applied), score it on the dev split, and keep each seed's best-dev state; optionally
        stop a seed once it reaches the original's dev score. The fit itself still sees only
        the weights: dev data picks the checkpoint, it gives no gradient."""
        dev = job.dev
        assert dev is not None
        best = [-math.inf] * len(seeds)
        best_at = [0] * len(seeds)
        stopped = [False] * len(seeds)
        evals, seconds = 0, 0.0
        step = 0
        while True:
            for run in runs:
                run.run(until=step)
            elements, built = self._collect(units, [run.current_parts() for run in runs], seeds)
            start = time.perf_counter()
            scores = []
            for i, seed in enumerate(seeds):
                if stopped[i]:
                    scores.append(-math.inf)
                    continue
                net = self._seed_model(job, units, elements, built, {}, i, seed, None, quiet=True)
                scores.append(float(dev.score(net.model)) if net.model is not None else -math.inf)
                evals += 1
            seconds += time.perf_counter() - start
            better = [i for i, sc in enumerate(scores) if sc > best[i]]
            for i in better:
                best[i], best_at[i] = scores[i], min(run.step_count for run in runs)
            reached = [i for i, sc in enumerate(scores)
                       if dev.stop_at is not None and not stopped[i] and sc >= dev.stop_at]
            for unit, run in zip(units, runs, strict=True):
                run.keep(self._seed_mask(unit, better, len(seeds), run.batch))
                if reached:
                    run.stop(self._seed_mask(unit, reached, len(seeds), run.batch))
            for i in reached:
                stopped[i] = True
            if all(run.done for run in runs) or step >= self.cfg.fit.steps:
                break
            step += dev.every
        return {"name": "dev_guided", "dev_every": dev.every, "dev_evals": evals,
                "dev_eval_s": seconds, "stop_at": dev.stop_at,
                "per_seed": [{"kept_step": best_at[i], "kept_dev": best[i],
                              "stopped_at_original": stopped[i]} for i in range(len(seeds))]}

    @staticmethod
    def _seed_mask(unit: FitUnit, seed_indices: list[int], n_seeds: int, batch: int) -> torch.Tensor:
        """Batch elements of ``unit`` that belong to the given seeds (every layer of a stack)."""
        mask = torch.zeros(batch, dtype=torch.bool)
        for i in seed_indices:
            for k in range(len(unit.layers)):
                mask[unit.locate(k, i, n_seeds)[1]] = True
        return mask

    def prepare(self, model: nn.Module, layers: list[str]) -> tuple[nn.Module, dict[str, Any]]:
        """Structured pruning first when ``prune_ratio`` > 0 (table 3), else nothing."""
        if self.cfg.prune_ratio <= 0:
            return model, {}
        from riembench.compression.methods.prune import prune_structured_info, require_pruned

        pruned, info = prune_structured_info(model, self.cfg.prune_ratio, layers)
        require_pruned(info, f"{self.cfg.name} (prune_ratio={self.cfg.prune_ratio})")
        return pruned.eval(), {"pruned": info}

    def plan(self, job: NetworkJob) -> list[FitUnit]:
        """Group, size and batch the selected layers (no fitting): raises ImpossibleBudget."""
        model = job.model
        share = getattr(self.cfg, "share", True)
        groups = find_chains(model, job.layers) if share else [[n] for n in job.layers]
        shapes_of = {n: matrix_shape(get_module(model, n)) for n in job.layers}
        group_shapes = [[shapes_of[n] for n in g] for g in groups]
        dims_per_group = self.allocate(group_shapes, job.size.budget, job.size.dims,
                                       dense_weight_count(model, job.layers))
        singles: dict[tuple[Any, ...], FitUnit] = {}
        units: list[FitUnit] = []
        for group, shapes, dims in zip(groups, group_shapes, dims_per_group, strict=True):
            targets = [weight_matrix(get_module(model, n)).float() for n in group]
            if len(group) > 1:
                units.append(FitUnit(group, shapes, dims, targets, chain=True))
                continue
            key = (shapes[0], tuple(sorted((k, str(v)) for k, v in dims.items())))
            if key in singles:
                singles[key].layers.append(group[0])
                singles[key].shapes.append(shapes[0])
                singles[key].targets.append(targets[0])
            else:
                singles[key] = FitUnit(list(group), shapes, dims, targets, chain=False)
                units.append(singles[key])
        return units

    def _start_unit(self, unit: FitUnit, seeds: list[int], device: torch.device) -> FitRun:
        """Build one unit's embeddings (one element per (layer, seed)), apply the data-free
        start, and return its fit, not yet advanced."""
        desc = f"{self.cfg.name} {unit.layers[0]}" + (f" +{len(unit.layers) - 1}" if len(unit.layers) > 1 else "")
        if unit.chain:
            parts = [self.make([element_seed(s, name) for s in seeds], m, n, unit.dims).to(device)
                     for name, (m, n) in zip(unit.layers, unit.shapes)]
            for prev, nxt in itertools.pairwise(parts):
                nxt.R = prev.P  # the chain's shared neurons: one tensor, optimised once
            targets = [t.to(device).expand(len(seeds), *t.shape) for t in unit.targets]
            elem_seeds = [element_seed(s, unit.layers[0]) for s in seeds]
        else:
            m, n = unit.shapes[0]
            elem_seeds = [element_seed(s, name) for name in unit.layers for s in seeds]
            parts = [self.make(elem_seeds, m, n, unit.dims).to(device)]
            targets = [torch.stack([t for t in unit.targets for _ in seeds]).to(device)]
        unit.init_info = self.initialize(parts, targets, elem_seeds)
        return FitRun(parts, targets, self.cfg.fit, progress=self.cfg.progress, desc=desc)

    def _seed_model(self, job: NetworkJob, units: list[FitUnit],
                    elements: dict[tuple[str, int], BatchedEmbedding],
                    built: dict[tuple[str, int], torch.Tensor],
                    per_layer: dict[str, dict[str, Any]], index: int, seed: int,
                    failed: str | None, quiet: bool = False) -> CompressedNet:
        """One seed's converted model as stored (``quiet``: a dev_guided checkpoint, no facts)."""
        info: dict[str, Any] = {}
        if not quiet:
            layers_info = {n: {**v, **{k: v[k][index] for k in ("rel_mse", "kept_step", "steps_run")}}
                           for n, v in per_layer.items()}
            info = {"layers": layers_info, "fit_config": asdict(self.cfg.fit),
                    "mean_layer_rel_mse": sum(v["rel_mse"] for v in layers_info.values()) / len(layers_info)}
        if failed:
            return CompressedNet(None, info, failed=failed)
        model = copy.deepcopy(job.model)
        for unit in units:
            converted = []
            for name in unit.layers:
                layer = EmbeddedLayer(elements[(name, seed)], get_module(job.model, name))
                layer.materialize(built[(name, seed)])
                set_module(model, name, layer)
                converted.append(layer)
            if unit.chain:
                tie_chain(converted)
        model.eval()
        info.update(self.quantize(model, job))
        return CompressedNet(model, info)

    def quantize(self, model: nn.Module, job: NetworkJob) -> dict[str, Any]:
        """Post-training rounding of the converted model (``w_bits``, ``a_bits``), in place.

        Input statistics come from ``job.model``: the converted layers are not Linear/Conv2d
        to the tracer, but their inputs are the same tensors as in the model they came from.
        """
        c = self.cfg
        info: dict[str, Any] = {}
        if c.w_bits is not None and c.w_bits < 32:
            targets = {n: weight_matrix(get_module(job.model, n)).float() for n in job.layers}
            info["bits_by_param"] = quantize_embedded(model, c.w_bits, targets)
            info["w_bits"] = c.w_bits
        if c.a_bits is not None and c.a_bits < 32:
            report = self._input_stats(job.model)
            info.update(quantize_inputs(model, job.layers, c.a_bits, report, c.act_k))
            info["a_bits"] = c.a_bits
        return info

    def _input_stats(self, model: nn.Module) -> StatsReport:
        """One statistics pass per pretrained model, shared by all seeds."""
        cached = getattr(self, "_stats_cache", None)
        if cached is None or cached[0] is not model:
            cached = (model, input_stats(model))
            self._stats_cache = cached
        return cached[1]


@dataclass
class FitUnit:
    """Layers fitted as one problem: a chain (parts share neurons) or a stack of equal-shape
    layers (one part, batch = layers x seeds)."""

    layers: list[str]
    shapes: list[tuple[int, int]]
    dims: dict[str, Any]
    targets: list[torch.Tensor]
    chain: bool
    init_info: dict[str, Any] = field(default_factory=dict)

    def part_of(self, k: int) -> int:
        return k if self.chain else 0

    def locate(self, k: int, i: int, n_seeds: int) -> tuple[int, int]:
        """(part, batch element) of layer k, seed index i."""
        return (k, i) if self.chain else (0, k * n_seeds + i)

    def chain_of(self, name: str) -> list[str] | None:
        return list(self.layers) if self.chain else None


def element_seed(seed: int, layer: str) -> int:
    """Seed of one layer's init under run seed ``seed``: distinct per layer, stable across
    batching (a layer fitted alone or in a stack starts from the same parameters)."""
    return int.from_bytes(hashlib.sha1(f"{seed}:{layer}".encode()).digest()[:4], "little")


def check_budget(name: str, params: int, budget: int) -> None:
    """Refuse an explicitly configured size (e.g. ``d``) that exceeds the budget, before fitting."""
    if params > budget:
        raise ImpossibleBudget(f"{name}: the configured size needs {params} parameters, budget is {budget}")
