"""Resume: a seed refitted alone (after a killed sweep) against the same seed fitted in its
batch. Every parameter tensor has the batch axis first, the start, variable projection, Adam and
the convergence test work per element, and the one product whose kernel torch picks by batch
size (a matrix-vector product, which for a batch of one rounds differently) is computed the
same way for a lone element (``riembench.engine.linalg.batched_matvec``). So a seed is its batch's
result: the stated tolerance is float rounding (1e-6) for the parameters and the finished
fit's weight errors, where without that care the fits' dynamics amplified a 1e-7 rounding
difference into a 10% different finished error on this chain."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf
from torch import nn

from riembench.compression.methods.base import NetworkJob, SizeTarget
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 16), nn.ReLU(),
                         nn.Linear(16, 6), nn.ReLU(), nn.Linear(6, 16)).eval()


def _method(name: str, **fit):
    node = OmegaConf.create({"name": name, "progress": False, "layers": "fc",
                             "fit": {"steps": 60, "eval_every": 10, "warmup": 5, **fit}})
    return METHODS.get(name)(typed_group(node, METHODS))


def _job(seeds: list[int]) -> NetworkJob:
    return NetworkJob(_net(), ["0", "2", "4", "6"], SizeTarget(500), seeds, torch.device("cpu"),
                      torch.zeros(1, 24))


def _state_after(name: str, seeds: list[int], steps: int) -> list[dict[str, torch.Tensor]]:
    method = _method(name)
    job = _job(seeds)
    runs = [method._start_unit(unit, seeds, job.device) for unit in method.plan(job)]
    for run in runs:
        run.run(until=steps)
    return [{k: v.detach().clone() for k, v in run.container.named_parameters()} for run in runs]


def test_a_seed_alone_starts_identically_and_steps_equal_to_rounding():
    for name in ("riem", "lpnorm"):
        for steps, tol in ((0, 0.0), (1, 1e-6), (60, 1e-6)):
            alone = _state_after(name, [3], steps)
            batch = _state_after(name, [0, 3, 5], steps)
            for a, b in zip(alone, batch, strict=True):
                for key, value in a.items():
                    diff = (value[0] - b[key][1]).abs().max().item()
                    assert diff <= tol, (name, steps, key, diff)


def test_a_seed_alone_ends_within_the_stated_tolerance_of_its_batch():
    for name in ("riem", "lpnorm"):
        alone = _method(name).compress(_job([3]))[0].info["layers"]
        batch = _method(name).compress(_job([0, 3, 5]))[1].info["layers"]
        for layer, info in alone.items():
            ref = batch[layer]["rel_mse"]
            assert abs(info["rel_mse"] - ref) <= 1e-6 * ref + 1e-9, (name, layer, info["rel_mse"], ref)
            assert info["steps_run"] == batch[layer]["steps_run"]
