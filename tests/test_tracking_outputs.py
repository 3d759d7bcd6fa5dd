"""W&B runs as W&B users expect (read back from the offline run files), the per-cell summary
lines, the sweep's summary table and the records listed in Hydra's output folders."""

import json
import os
import subprocess
import sys
from pathlib import Path

from wandb_files import read_runs

from riembench.harness.tracking import fit_curve, metric_name, resolve_mode


def test_metric_names_and_modes(monkeypatch):
    assert metric_name("dev_error") == "dev/error" and metric_name("test_acc") == "test/acc"
    assert metric_name("weight_fidelity") == "weight_fidelity"
    assert fit_curve({"history": [[0, 1.0], [25, 0.5], [50, float("nan")]]}) == [(0, 1.0), (25, 0.5)]
    monkeypatch.setenv("WANDB_MODE", "online")
    assert resolve_mode(True, "offline") == "online"
    monkeypatch.setenv("WANDB_DISABLED", "true")
    assert resolve_mode(True, "offline") == "disabled"
    monkeypatch.delenv("WANDB_DISABLED")
    assert resolve_mode(False, "offline") == "disabled"


def test_sweep_logs_one_wandb_run_per_cell_and_seed_and_summarises(tmp_path):
    store, wb, sweep = tmp_path / "runs", tmp_path / "wb", tmp_path / "sweep"
    env = {**os.environ, "RIEMBENCH_STORE": str(store), "WANDB_MODE": "offline",
           "WANDB_DIR": str(wb), "WANDB_PROJECT": "rb-test", "OMP_NUM_THREADS": "1"}
    env.pop("WANDB_SILENT", None)
    proc = subprocess.run(
        [sys.executable, "-m", "riembench.cli.main", "-m", "method=riem,lpnorm", "dataset.n=40",
         "size.ratio=0.1,0.3", "seeds=[0,1]", "hydra.launcher.n_jobs=1", f"hydra.sweep.dir={sweep}",
         "method.fit.steps=40", "method.fit.eval_every=10", "method.fit.warmup=0"],
        cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "wandb:" not in out  # no banners
    assert not (tmp_path / "wandb").exists()  # WANDB_DIR respected, nothing in the cwd

    records = {json.loads(p.read_text())["key"]: json.loads(p.read_text())
               for p in (store / "table5").glob("*.json")}
    assert len(records) == 8
    runs = read_runs(wb)
    assert len(runs) == 8
    by_id = {r.id: r for r in runs}
    for rec in records.values():
        run = by_id[rec["tracker"]["wandb_run_id"]]  # the record names its run
        method = rec["cell"]["method"]
        assert run.project == "rb-test"
        assert run.group.startswith("table5/") and f"method={method}" in run.group
        assert run.job_type == "table5"
        assert {"table:table5", f"method:{method}", f"size:{rec['cell']['ratio']}"} <= set(run.tags)
        assert run.config["seed"] == rec["seed"] and run.config["record_key"] == rec["key"]
        assert run.config["method"]["name"] == method
        assert run.config["git_rev"] == rec["git_rev"]
        assert [a["type"] for a in run.artifacts] == ["run-record"]
        assert run.artifacts[0]["files"] == ["record.json"]
        curve = [h["fit/loss"] for h in run.history if "fit/loss" in h]
        assert len(curve) == len(rec["fit"].get("history", []))
        if rec["status"] == "failed":  # lpnorm's 4 heads do not fit in 0.1 x 40^2 numbers
            assert method == "lpnorm" and rec["cell"]["ratio"] == 0.1
            assert run.summary["status"] == "failed" and run.exit_code == 1
            assert "impossible budget" in run.summary["error"]
            continue
        assert run.summary["test/error"] == rec["metrics"]["test_error"]
        assert run.summary["dev/error"] == rec["metrics"]["dev_error"]
        assert run.summary["status"] == "ok" and run.exit_code == 0
        # the fit's loss curve, at the fit's steps (an eval every 10 steps and at the last)
        assert curve == [loss for _, loss in rec["fit"]["history"]] and len(curve) == 5
        assert [h["_step"] for h in run.history if "fit/loss" in h] == [0, 10, 20, 30, 39]
    assert len({r.group for r in runs}) == 4  # one group per cell, two seeds each
    assert sum(r["status"] == "failed" for r in records.values()) == 2

    # one line per cell, then the sweep's table and folder
    assert out.count("| seeds 0,1 (2 new, 0 skipped, 0 failed) | test_error") == 3
    assert out.count("| seeds 0,1 (2 new, 0 skipped, 2 failed) | no ok seed") == 1
    assert "[4/4 cells" in out and "sweep summary (4 cell(s))" in out and str(sweep) in out
    summary = (sweep / "summary.md").read_text()
    assert "method=lpnorm" in summary and "method=riem" in summary
    listed = sorted(Path(p).name for job in ("0", "1", "2", "3")
                    for p in (sweep / job / "records.txt").read_text().split())
    assert listed == sorted(f"{k}.json" for k in records)
    cell = json.loads((sweep / "0" / "cell.json").read_text())
    assert cell["seeds"] == [0, 1] and cell["metric"] == "test_error"

    # a report run logs the table files it wrote as one artifact
    rep = subprocess.run([sys.executable, "-m", "riembench.cli.report", "table5", "--store",
                          str(store), "--out", str(tmp_path / "tables"), "--all-records"],
                         cwd=tmp_path, env=env,
                         check=False, capture_output=True, text=True, timeout=300)
    assert rep.returncode == 0, rep.stderr[-3000:]
    (report,) = [r for r in read_runs(wb) if r.job_type == "report"]
    (art,) = report.artifacts
    assert art["type"] == "table" and "table5.csv" in art["files"] and "table5.tex" in art["files"]


def test_a_wandb_that_cannot_start_loses_no_record(tmp_path, monkeypatch, caplog):
    """W&B down or misconfigured (online without a login, say): the cell goes on untracked."""
    import wandb
    from omegaconf import OmegaConf

    from riembench.harness.tracking import cell_tracker
    from riembench.store.records import RunRecord, RunStore

    def refuse(*args, **kwargs):
        raise wandb.errors.UsageError("api_key not configured (no-tty)")

    monkeypatch.setattr(wandb, "init", refuse)
    monkeypatch.setenv("WANDB_MODE", "online")
    store = RunStore(tmp_path / "runs")
    cfg = OmegaConf.create({"enabled": True, "mode": "offline", "project": "p", "entity": None})
    with cell_tracker(cfg, "table5", {"method": "svd"}, {"method": {"name": "svd"}}) as tracker:
        for seed in (0, 1):
            rec = RunRecord(table="table5", seed=seed, method="svd", dataset="synthetic",
                            cell={"method": "svd"}, config={"seed": seed},
                            metrics={"test_error": 0.1})
            tracker.start(rec)
            path = store.write(rec)
            tracker.finish(rec, path)
            assert path.is_file() and rec.tracker == {}
    assert caplog.text.count("could not start") == 1  # said once, then the cell runs untracked
