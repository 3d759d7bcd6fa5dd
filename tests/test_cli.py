"""The riembench command: composition of every experiment, clear errors, resume of sweeps."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import riembench.cli.main
from riembench.config.datasets import DATASETS
from riembench.config.identity import typed_group
from riembench.config.methods import METHODS
from riembench.config.sizes import SIZES
from riembench.config.tree import config_dir

CONF = Path(config_dir())
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def riembench(args, cwd, store, timeout=300, **kw):
    env = {**os.environ, "RIEMBENCH_STORE": str(store), "WANDB_MODE": "disabled"}
    return subprocess.run([sys.executable, "-m", "riembench.cli.main", *args], cwd=cwd, env=env,
                          check=False, capture_output=True, text=True, timeout=timeout, **kw)


#: methods that `make tableN` passes on the command line (one sweep per size), beyond the YAML's
MAKE_METHODS = {"table1": ["original", "lpnorm_p1", "lpnorm_p2", "lpnorm_p3", "riem", "svd"]}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_and_its_sweep_composes(experiment):
    """No config rots: each experiment, with each value its sweep takes, composes and validates."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        swept = cfg.hydra.sweeper.params
        params = OmegaConf.to_container(swept) if swept is not None else {}
        methods = str(params.get("method", cfg.method.name)).split(",")
        methods += MAKE_METHODS.get(experiment, [])
        for method in methods:
            sub = compose("config", overrides=[f"experiment={experiment}", f"method={method}"])
            typed_group(sub.method, METHODS)
            typed_group(sub.dataset, DATASETS)
            typed_group(sub.size, SIZES)
        assert cfg.table and cfg.seeds and len(cfg.seeds) == 10


def test_every_method_config_validates():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for path in sorted((CONF / "method").glob("*.yaml")):
            cfg = compose("config", overrides=[f"method={path.stem}"])
            typed = typed_group(cfg.method, METHODS)
            assert typed.name in METHODS


@pytest.mark.parametrize("override,message", [
    ("method.fit.stpes=5", "stpes"),
    ("size.ratio=abc", "size.ratio"),
    ("method=nosuch", "nosuch"),
    ("dataset.family=nosuch", "expected one of [lp_field, kernel_field"),
    ("method.activation=cosh", "expected one of [sigmoid, tanh"),
])
def test_bad_overrides_fail_before_any_work(tmp_path, override, message):
    out = riembench(["method=riem", "dataset.n=20", override], tmp_path, tmp_path / "runs")
    assert out.returncode != 0
    assert message in out.stderr + out.stdout
    assert not (tmp_path / "runs").exists()  # nothing was recorded


def test_single_cell_records_each_seed_and_rerun_skips(tmp_path):
    store = tmp_path / "runs"
    args = ["method=riem", "dataset.n=30", "size.ratio=0.3", "method.fit.steps=5", "seeds=[0,1]"]
    first = riembench(args, tmp_path, store)
    assert first.returncode == 0, first.stderr
    records = sorted((store / "table5").glob("*.json"))
    assert len(records) == 2
    stamps = [p.stat().st_mtime_ns for p in records]
    again = riembench(args + ["seeds=[0,1,2]"], tmp_path, store)
    assert again.returncode == 0, again.stderr
    assert "skipping [0, 1]" in again.stderr + again.stdout
    assert len(list((store / "table5").glob("*.json"))) == 3
    assert [p.stat().st_mtime_ns for p in records] == stamps


def test_impossible_budget_is_recorded_as_failed(tmp_path):
    out = riembench(["method=riem", "dataset.n=20", "size.ratio=0.01"], tmp_path, tmp_path / "runs")
    assert out.returncode == 0
    assert "needs at least" in out.stderr + out.stdout
    (record,) = (tmp_path / "runs" / "table5").glob("*.json")
    assert '"status": "failed"' in record.read_text()


def _records(store):
    """Finished records; a kill mid-write may leave a dot-temp file, which the store ignores."""
    return [p for p in store.glob("*.json") if not p.name.startswith(".")]


def test_interrupted_sweep_resumes_without_duplicates(tmp_path):
    store = tmp_path / "runs" / "table5"
    args = ["-m", "method=lpnorm", "dataset.n=40", "method.fit.steps=400", "method.progress=false",
            "seed=0,1,2,3,4,5", "hydra.launcher.n_jobs=1"]
    env = {**os.environ, "RIEMBENCH_STORE": str(tmp_path / "runs"), "WANDB_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "riembench.cli.main", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(_records(store)) < 1:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p: p.stat().st_mtime_ns for p in _records(store)}
    assert 1 <= len(before) < 6, "the sweep was not interrupted mid-way"
    out = riembench(args, tmp_path, tmp_path / "runs")
    assert out.returncode == 0, out.stderr
    after = _records(store)
    assert len(after) == 6
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished work kept as is
