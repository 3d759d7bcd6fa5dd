"""End to end: train LeNet-5 on the embedded digits, compress its FC layers through the real CLI
(a small version of `make table1`), report table 1 from the records."""

import csv
import json
import os
import subprocess
import sys

import pytest


def _run(args, tmp_path, env, timeout=600):
    proc = subprocess.run([sys.executable, "-m", *args], cwd=tmp_path, env=env,
                          check=False, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_tiny_table1_on_digits(tmp_path):
    store, out, cache = tmp_path / "runs", tmp_path / "tables", tmp_path / "cache"
    env = {**os.environ, "RIEMBENCH_STORE": str(store), "RIEMBENCH_CACHE": str(cache),
           "WANDB_MODE": "disabled"}
    _run(["riembench.harness.training", "backbone=lenet5", "dataset=digits", "train.epochs=6",
          "train.progress=false", "train.threads=1"], tmp_path, env)
    (ckpt,) = (cache / "checkpoints").glob("lenet5-*-digits-*.pt")
    t1 = ["riembench.cli.main", "experiment=table1", "backbone=lenet5", "hydra.launcher.n_jobs=1",
          "threads=1"]
    _run(t1 + ["method=original", "seeds=[0]"], tmp_path, env)
    _run(t1 + ["method=riem,lpnorm_p2", "size.params=7200", "seeds=[0,1,2,3]",
               "method.fit.steps=20"], tmp_path, env)
    # an impossible size is recorded as failed seeds (the table shows it), not a crash
    _run(t1 + ["method=riem", "size.params=600", "seeds=[0,1]"], tmp_path, env)
    records = [json.loads(p.read_text()) for p in (store / "table1").glob("*.json")]
    assert len(records) == 1 + 2 * 4 + 2
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 2 and all("impossible size" in r["error"] for r in failed)
    riem = [r for r in records if r["method"] == "riem" and r["status"] == "ok"]
    assert all(r["cost"]["params"] <= 7200 for r in riem)
    assert riem and all(r["fit"]["weights"]["path"] == str(ckpt) for r in riem)
    _run(["riembench.cli.report", "table1", "--store", str(store), "--out", str(out), "--all-records"], tmp_path, env)
    for suffix in ("csv", "tex", "md"):
        assert (out / f"table1.{suffix}").stat().st_size > 0
    with open(out / "table1.csv") as fh:
        rows = {(r["paper_method"], r["size"]): r for r in csv.DictReader(fh)}
    original = rows[("original", "")]
    assert float(original["ours_mean"]) > 85 and original["paper"] == "99.1"
    cell = rows[("riem", "params(params=7200)")]
    assert int(cell["n_seeds"]) == 4 and int(cell["n_selected"]) == 3
    assert float(cell["paper"]) == 99.28 and cell["paper_dataset"] == "mnist"
    assert cell["same_data"] == "False"  # digits stands in for MNIST and says so
    assert rows[("riem", "params(params=600)")]["n_failed"] == "2"
