"""The end-of-run line per cell, the sweep's table and its job count."""

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from riembench.config.tree import config_dir
from riembench.harness.runner import CellOutcome
from riembench.harness.summary import cell_line, cell_report, headline, summary_table, sweep_total
from riembench.store.records import RunRecord


def _record(seed, err, status="ok"):
    return RunRecord(table="table5", seed=seed, method="svd", dataset="synthetic",
                     cell={"method": "svd", "n": 40, "ratio": 0.1}, config={}, status=status,
                     metrics={"dev_error": err / 2, "test_error": err} if status == "ok" else {})


def test_cell_line_has_cell_seeds_mean_and_paths(tmp_path):
    old = tmp_path / "runs" / "table5" / "old.json"
    old.parent.mkdir(parents=True)
    import dataclasses
    import json

    old.write_text(json.dumps(dataclasses.asdict(_record(0, 0.3))))
    outcome = CellOutcome("table5", [str(tmp_path / "runs/table5/a.json"),
                                     str(tmp_path / "runs/table5/b.json")], [0], [2],
                          records=[_record(1, 0.1), _record(2, 0.0, "failed")],
                          existing=[str(old)])
    report = cell_report(outcome)
    assert report["seeds"] == [0, 1, 2] and report["metric"] == "test_error"
    assert abs(report["mean"] - 0.2) < 1e-12  # ok seeds only: the skipped one counts too
    line = cell_line(report)
    assert line.startswith("table5 method=svd n=40 ratio=0.1 | seeds 0-2 (2 new, 1 skipped, 1 failed)")
    assert "test_error 0.2 +- 0.14" in line and f"3 records in {tmp_path}/runs/table5/" in line
    table = summary_table([report])
    assert "| table5 | method=svd n=40 ratio=0.1 | 3 | 1 | test_error | 0.2 | 0.14 |" in table


def test_deterministic_cells_show_no_std():
    outcome = CellOutcome("table5", ["a.json", "b.json"], [], [],
                          records=[_record(0, 0.1), _record(1, 0.1)])
    assert "+-" not in cell_line(cell_report(outcome))


def test_headline_metric():
    assert headline({"dev_acc": 1, "test_acc": 2}) == "test_acc"
    assert headline({"test_AP50": 1, "dev_AP50": 2}) == "test_AP50"
    assert headline({}) is None


def test_sweep_total_counts_the_experiment_and_command_line_sweeps():
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table5"], return_hydra_config=True)
        assert sweep_total(cfg) == 1  # experiments declare no sweep (a plan's groups do)
    with open_dict(cfg):  # what the sweeper records from `riembench experiment=table5 method=a,b`
        cfg.hydra.sweeper.params = {"size.ratio": "0.1,0.3"}
        cfg.hydra.overrides.task = ["experiment=table5", "method=svd,riem_fast"]
    assert sweep_total(cfg) == 2 * 2  # the declared sweep times the command line's
