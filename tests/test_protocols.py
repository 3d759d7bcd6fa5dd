"""The two protocols: ``strict`` (the fit sees the weights only) and ``dev_guided`` (the
paper's: dev accuracy picks each seed's checkpoint). A planted evaluator checks that each seed
keeps its best-dev state, and a guarded task checks that the test split is never read while a
method compresses."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from riembench.compression.methods.base import DevGuide, NetworkJob, SizeTarget
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS

CPU = torch.device("cpu")


def method(name: str, **over):
    node = OmegaConf.create({"name": name, "progress": False, "layers": "fc", **over})
    return METHODS.get(name)(typed_group(node, METHODS))


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(24, 20), nn.ReLU(), nn.Linear(20, 16), nn.ReLU(),
                         nn.Linear(16, 6)).eval()


def job(net: nn.Module, seeds: list[int], dev: DevGuide | None) -> NetworkJob:
    return NetworkJob(net, ["0", "2", "4"], SizeTarget(400), seeds, CPU, torch.zeros(1, 24),
                      dev=dev)


class Planted:
    """A dev evaluator whose score is planted: seed ``s`` (told apart by the first layer's
    weights) scores highest at its ``peak[s]``-th call and lower everywhere else. It records
    the weights it saw at every call, so the test can check what was kept."""

    def __init__(self, peaks: dict[int, int]) -> None:
        self.peaks = peaks
        self.calls: dict[int, int] = {}
        self.seen: dict[tuple[int, int], torch.Tensor] = {}
        self.order: list[int] = []

    def __call__(self, model: nn.Module) -> float:
        seed = self.order[len(self.seen) % len(self.order)]
        k = self.calls.get(seed, 0)
        self.calls[seed] = k + 1
        self.seen[(seed, k)] = model[0].weight.detach().clone()
        return 100.0 if k == self.peaks[seed] else float(k) / 100


def test_dev_guided_keeps_each_seeds_best_dev_state():
    seeds = [0, 1]
    planted = Planted({0: 2, 1: 4})
    planted.order = seeds  # the method scores seeds in job order at each checkpoint
    m = method("riem", fit={"steps": 60, "eval_every": 10, "warmup": 5})
    nets = m.compress(job(mlp(), seeds, DevGuide(score=planted, every=10)))
    for i, seed in enumerate(seeds):
        proto = nets[i].info["protocol"]
        assert proto["name"] == "dev_guided" and proto["dev_every"] == 10
        assert proto["kept_step"] == 10 * planted.peaks[seed]
        assert proto["kept_dev"] == 100.0
        kept = nets[i].model[0].weight.detach()
        assert torch.allclose(kept, planted.seen[(seed, planted.peaks[seed])], atol=1e-5)
        later = planted.seen[(seed, planted.calls[seed] - 1)]
        assert not torch.allclose(kept, later, atol=1e-5)  # not simply the last state
    assert nets[0].info["protocol"]["dev_evals"] == sum(planted.calls.values()) == 2 * 7


def test_dev_guided_stops_a_seed_once_it_reaches_the_original():
    calls = {"n": 0}

    def score(model: nn.Module) -> float:
        calls["n"] += 1
        return 90.0  # every checkpoint already beats the original's 80: stop at the start

    m = method("riem", fit={"steps": 60, "eval_every": 10, "warmup": 5})
    (net,) = m.compress(job(mlp(), [0], DevGuide(score=score, every=10, stop_at=80.0)))
    assert net.info["protocol"]["stopped_at_original"] is True
    assert net.info["protocol"]["kept_step"] == 0 and calls["n"] == 1
    assert all(v["steps_run"] == 0 for v in net.info["layers"].values())


def test_strict_records_its_protocol_and_ignores_dev():
    m = method("riem", fit={"steps": 20, "eval_every": 10, "warmup": 5})
    (net,) = m.compress(job(mlp(), [0], None))
    assert net.info["protocol"] == {"name": "strict"}


def _tiny_digits_run(tmp_path, monkeypatch, protocol: str, method_name: str = "riem"):
    """The runner on the embedded digits with a seeded random LeNet-5, with every split
    evaluation recorded (and whether a method was compressing at the time)."""
    from hydra import compose, initialize_config_dir

    from riembench.config.tree import config_dir
    from riembench.data.images import ImageTask
    from riembench.harness import runner

    seen: list[tuple[str, bool]] = []
    state = {"compressing": False}
    real_split = ImageTask.split

    def spy(task, split):  # every read of a split's data goes through here
        seen.append((split, state["compressing"]))
        return real_split(task, split)

    monkeypatch.setattr(ImageTask, "split", spy)
    cls = METHODS.get(method_name)
    real_compress = cls.compress

    def compress(self, job):
        state["compressing"] = True
        try:
            return real_compress(self, job)
        finally:
            state["compressing"] = False

    monkeypatch.setattr(cls, "compress", compress)
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[
            "backbone=lenet5", "dataset=digits", f"method={method_name}", "method.layers=fc",
            "size=params", "size.params=7200",
            *(["method.fit.steps=20", "method.progress=false"] if method_name == "riem" else []),
            f"protocol={protocol}", "protocol.every=10", "seeds=[0]", "progress=false",
            f"store.root={tmp_path / 'runs'}", "wandb.enabled=false", "device=cpu",
            "backbone.weights=random"])
        return runner.run(cfg), seen


def test_dev_guided_never_reads_the_test_split_while_fitting(tmp_path, monkeypatch):
    outcome, seen = _tiny_digits_run(tmp_path, monkeypatch, "dev_guided")
    assert outcome.written and not outcome.failed
    during = [split for split, compressing in seen if compressing]
    assert during and set(during) == {"dev"}  # the checkpoints were scored, on dev only
    import json
    from pathlib import Path

    (record,) = [json.loads(Path(p).read_text()) for p in outcome.written]
    assert record["cell"]["protocol"] == "dev_guided"
    assert record["fit"]["protocol"]["dev_evals"] == len(during)
    assert record["fit"]["protocol"]["dev_eval_s"] >= 0


def test_dev_guided_is_refused_where_there_is_no_checkpoint(tmp_path, monkeypatch):
    from riembench.core.errors import RiembenchError

    with pytest.raises(RiembenchError, match="has none"):
        _tiny_digits_run(tmp_path, monkeypatch, "dev_guided", method_name="svd")
