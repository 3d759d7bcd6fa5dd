"""Table plans (conf/table/), run keys from schema metadata, one seed for deterministic methods,
dry runs, plan-filtered reports with commands, and the SLURM launcher config."""

import csv
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import riembench.harness.training
from riembench.cli.plan_command import plan_argv
from riembench.config.identity import identity, run_key
from riembench.config.tree import config_dir, record_tables
from riembench.core.errors import RiembenchError
from riembench.harness.cell import known_tables, resolve_cell
from riembench.harness.plans import (
    compose_cells,
    dry_run,
    expand,
    load_plan,
    narrow,
    plan_names,
    steps,
)

CONF = Path(config_dir())
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))

#: per store folder, overrides that shrink a plan's cells (composition only: nothing runs)
TINY = {"table1": ["seeds=[0,1]"], "table2": ["dataset.limit=8", "seeds=[0,1]"],
        "table3": ["dataset.limit=8", "seeds=[0,1]"], "table4": ["dataset.limit=4", "seeds=[0,1]"],
        "table5": ["dataset.n=40", "seeds=[0,1]"]}


def riembench(args, cwd, store, timeout=300):
    env = {**os.environ, "RIEMBENCH_STORE": str(store), "WANDB_MODE": "disabled",
           "RIEMBENCH_TABLES": str(Path(cwd) / "tables-out")}
    return subprocess.run([sys.executable, "-m", "riembench.cli.main", *args], cwd=cwd, env=env,
                          check=False, capture_output=True, text=True, timeout=timeout)


def records(store, table="table5"):
    return [json.loads(p.read_text()) for p in sorted((Path(store) / table).glob("*.json"))]


# ---------------------------------------------------------------------------------- plans


def test_every_table_has_a_plan_and_the_known_tables_are_theirs():
    names = plan_names()
    for n in range(1, 6):
        assert f"table{n}" in names
    assert {"table1_mnist", "table1_cifar100", "table5_gpu"} <= set(names)
    assert record_tables() == ["equal_bytes", "table1", "table2", "table3", "table4", "table5"]


@pytest.mark.parametrize("name", plan_names())
def test_every_plan_row_group_composes_at_a_tiny_size(name):
    """No config rots: every cell of every row group (and every prepare step) composes and
    validates against the schemas, with a tiny size on the command line."""
    plan = load_plan(name)
    # the GPU plan sweeps N: narrowing to its smallest N keeps every group
    tiny = ["dataset.n=1000", "seeds=[0,1]"] if name == "table5_gpu" else TINY[plan.record_table]
    prepare, groups = steps(plan, tiny)
    assert [g.group for g in groups] == list(plan.groups)  # the tiny size drops no group
    cells = compose_cells(groups)
    for group in groups:
        mine = [c for c in cells if c.group == group.group]
        assert len(mine) == len(expand(group.overrides)) >= 1
    assert all(c.table == plan.record_table and c.requested == [0, 1] for c in cells)
    assert len({c.version for c in cells}) == len(cells)  # no two cells share records
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for step in prepare:
            cfg = compose("train", overrides=step.overrides)
            assert cfg.backbone.name in step.command()


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_with_each_launcher(experiment):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for launcher in ("local", "slurm_gpu"):
            cfg = compose("config", overrides=[f"experiment={experiment}",
                                               f"hydra/launcher={launcher}"],
                          return_hydra_config=True)
            assert cfg.table in known_tables() and len(cfg.seeds) == 10
            assert cfg.hydra.launcher._target_.split(".")[-1] in ("JoblibLauncher", "SlurmLauncher")
        assert resolve_cell(compose("config", overrides=[f"experiment={experiment}"])).keys


def test_variants_reuse_the_default_plan_with_their_dataset():
    mnist, cifar = load_plan("table1_mnist"), load_plan("table1_cifar100")
    assert list(mnist.groups) == list(load_plan("table1").groups)
    assert list(mnist.overrides) == ["dataset=mnist"]
    r9 = [o for o in cifar.groups.resnet9_riem.overrides if o.startswith("backbone.head_hidden")]
    assert r9 == ["backbone.head_hidden=167"]
    _, groups = steps(mnist)
    assert all("dataset=mnist" in g.overrides for g in groups)


def test_command_line_narrows_adjusts_or_extends_a_plan():
    group = ["experiment=table2", "backbone=resnet18", "method=riem", "size.mb=8.36,5.58",
             "seeds=[0,1,2]"]
    assert narrow(group, ["method=svd"]) is None  # a group choice it does not make: dropped
    assert narrow(group, ["size.mb=5.58"])[3] == "size.mb=5.58"  # a sweep: narrowed
    assert narrow(group, ["size.mb=1,2"]) is None
    assert narrow(group, ["seeds=[0]"])[4] == "seeds=[0]"  # a fixed setting: replaced
    assert narrow(group, ["data.root=/x"])[-1] == "data.root=/x"  # not set: added
    _, groups = steps(load_plan("table2"), ["method=svd", "data.root=/x"])
    assert [g.group for g in groups] == ["resnet18_svd", "resnet50_svd", "densenet121_svd"]
    assert all(g.overrides[-1] == "data.root=/x" for g in groups)
    with pytest.raises(RiembenchError, match="no row group"):
        steps(load_plan("table2"), ["method=nosuch"])
    # a launcher chosen on the command line replaces the plan's local parallelism
    _, (t5,) = steps(load_plan("table5"), ["hydra/launcher=slurm_gpu"])
    assert t5.hydra == ["hydra/launcher=slurm_gpu"]
    _, (t5,) = steps(load_plan("table5"))
    assert t5.hydra == ["hydra.launcher.n_jobs=2"]
    assert expand(["a=1,2", "b=x,y"]) == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"],
                                          ["a=2", "b=y"]]


def test_table_accepts_only_known_tables(capsys):
    assert plan_argv(["table=../../x"]) == 2
    assert "unknown table plan '../../x'" in capsys.readouterr().err
    assert plan_argv(["table=table5", "--cfg", "job"]) == 2
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["method=svd", "dataset.n=20"])
        cfg.table = "../../x"
        with pytest.raises(RiembenchError, match="not a known table"):
            resolve_cell(cfg)


# ---------------------------------------------------------------------------------- keys


def _cfg(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def test_key_leaves_out_what_the_schemas_mark_and_keeps_the_rest():
    base = ["method=riem", "dataset.n=50", "size.ratio=0.1"]
    ref = resolve_cell(_cfg(base)).keys[0]
    same = ["threads=3", "progress=false", "device=cpu", "method.progress=false",
            "method.fit.chunk_elems=1024", "store.root=/elsewhere", "wandb.mode=online",
            "data.num_workers=4", "data.batch_size=7", "data.root=/data", "seeds=[0,5]"]
    for extra in same:
        assert resolve_cell(_cfg([*base, extra])).keys[0] == ref, extra
    for extra in ["method.fit.steps=7", "method.fit.lr=0.5", "dataset.n=51", "seed=1"]:
        planned = resolve_cell(_cfg([*base, extra]))
        assert next(iter(planned.keys.values())) != ref, extra
    lenet = ["backbone=lenet5", "dataset=digits", "method=original"]
    assert resolve_cell(_cfg([*lenet, "backbone.cache_dir=/tmp/x"])).keys == \
        resolve_cell(_cfg(lenet)).keys
    # plain dicts (records) are read with the same schemas
    cfg = {"method": {"name": "riem", "progress": True, "fit": {"chunk_elems": 1, "steps": 3}},
           "threads": 1, "table": "table5"}
    assert identity(cfg, 2) == {"method": {"name": "riem", "fit": {"steps": 3}}, "seed": 2}
    assert run_key(cfg, 2) == run_key({**cfg, "threads": None, "progress": False}, 2)


def test_readme_cell_and_table5_plan_have_the_same_keys():
    readme = resolve_cell(_cfg(["method=riem_fast", "dataset=synthetic", "dataset.n=1000",
                             "size.ratio=0.1", "dataset.family=randn", "seed=3"]))
    (cell,) = [c for c in compose_cells(steps(load_plan("table5"),
                                              ["method=riem_fast", "size.ratio=0.1",
                                               "dataset.family=randn"])[1])]
    assert readme.keys[3] == cell.keys[3]


def test_deterministic_methods_run_one_seed_decided_by_the_runner():
    svd = resolve_cell(_cfg(["method=svd", "dataset.n=40", "seeds=[4,5,6]"]))
    assert svd.deterministic and svd.seeds == [4] and svd.requested == [4, 5, 6]
    nys = resolve_cell(_cfg(["method=nystroem", "dataset.n=40", "seeds=[4,5,6]"]))
    assert not nys.deterministic and nys.seeds == [4, 5, 6]


# ---------------------------------------------------------------------------------- end to end


TINY5 = ["dataset.n=30", "size.ratio=0.1", "dataset.family=lp_field"]


@pytest.mark.slow
def test_single_cells_and_the_table_share_records_dry_run_and_report(tmp_path):
    """The README's one-cell commands and the table's plan write the same records: running the
    plan after them adds nothing; the dry run says so; the report holds only the plan's cells,
    each with the command that reproduces it."""
    store = tmp_path / "runs"
    one = riembench(["method=svd", *TINY5, "seeds=[0,1]"], tmp_path, store)
    assert one.returncode == 0, one.stderr[-2000:]
    two = riembench(["method=nystroem", *TINY5, "seeds=[0,1]"], tmp_path, store)
    assert two.returncode == 0, two.stderr[-2000:]
    # ad hoc, outside the plan (another size): never enters the table
    adhoc = riembench(["method=svd", "dataset.n=30", "size.ratio=0.3",
                       "dataset.family=lp_field"], tmp_path, store)
    assert adhoc.returncode == 0, adhoc.stderr[-2000:]
    before = records(store)
    assert len(before) == 1 + 2 + 1  # svd is deterministic: one seed
    svd = [r for r in before if r["method"] == "svd" and r["cell"]["ratio"] == 0.1]
    assert svd[0]["deterministic"] is True and svd[0]["seeds_requested"] == [0, 1]

    narrowed = ["method=svd,nystroem", *TINY5, "seeds=[0,1]"]
    text = dry_run("table5", [*narrowed, f"store.root={store}"])
    assert "2 cell(s) in 1 row group(s): 3 seed(s) recorded, 0 to run" in text
    assert "deterministic, of [0,1]" in text

    plan = riembench(["table=table5", *narrowed, "hydra.launcher.n_jobs=1"], tmp_path, store)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert sorted(p["key"] for p in records(store)) == sorted(p["key"] for p in before)

    out = tmp_path / "tables-out"  # the plan's own report (RIEMBENCH_TABLES), not tables/
    with open(out / "table5.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["method"], float(r["ratio"])) for r in rows} == {("svd", 0.1), ("nystroem", 0.1)}
    by = {r["method"]: r for r in rows}
    assert by["svd"]["deterministic"] == "True" and by["svd"]["n_seeds"] == "1"
    assert by["nystroem"]["command"] == ("riembench experiment=table5 method=nystroem "
                                         "size.ratio=0.1 dataset.family=lp_field dataset.n=30 "
                                         "'seeds=[0,1]'")
    md = (out / "table5.md").read_text()
    assert by["svd"]["command"] in md  # each row shows the command that reproduces it
    svd_rows = [line for line in md.splitlines() if line.startswith("| SVD")]
    assert svd_rows and all("*" not in line.replace("**", "").split("`")[0]
                            for line in svd_rows)  # 1 seed: enough

    # the reproduced command of a row writes no new record either
    again = riembench(shlex.split(by["nystroem"]["command"])[1:], tmp_path, store)
    assert again.returncode == 0 and len(records(store)) == len(before)


def test_slurm_launcher_config_is_accepted_by_submitit(tmp_path, monkeypatch):
    """One GPU per job; every field the config sets is a parameter submitit's SLURM executor
    takes, and the sbatch script asks for one GPU (no cluster here: nothing is submitted)."""
    submitit = pytest.importorskip("submitit")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=table2", "hydra/launcher=slurm_gpu",
                                           "hydra.launcher.partition=gpu"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == 1 and launcher.tasks_per_node == 1 and launcher.nodes == 1
    params = OmegaConf.to_container(launcher, resolve=False)
    params = {k: v for k, v in params.items() if k not in ("_target_", "submitit_folder")}
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))  # "srun" found
    # the launcher's own translation: max_num_timeout to the executor, shared keys as they
    # are, the rest prefixed slurm_
    executor = submitit.AutoExecutor(cluster="slurm", folder=str(tmp_path),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python -m riembench.cli.main", "uid")
    assert "#SBATCH --gpus-per-node=1" in script and "#SBATCH --partition=gpu" in script
    assert "#SBATCH --ntasks-per-node=1" in script and "#SBATCH --time=720" in script


def test_migrate_rekeys_legacy_records_flags_determinism_and_sets_duplicates_aside(tmp_path):
    from riembench.store.migrate import migrate

    folder = tmp_path / "runs" / "table5"
    folder.mkdir(parents=True)
    config = {"method": {"name": "svd"}, "dataset": {"name": "synthetic", "n": 30},
              "size": {"name": "ratio", "ratio": 0.1}, "seeds": [0, 1, 2]}
    legacy = [("aaaa", {**config, "threads": 1}, "2026-01-02"), ("bbbb", config, "2026-01-01")]
    for key, cfg, when in legacy:  # one result, written twice under the old keys
        rec = {"table": "table5", "seed": 0, "method": "svd", "config": cfg, "key": key,
               "status": "ok", "created_at": when, "cell": {"method": "svd"}}
        (folder / f"{key}.json").write_text(json.dumps(rec))
    dry = migrate(tmp_path / "runs")
    assert len(dry.rekeyed) == 1 and len(dry.superseded) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["aaaa.json", "bbbb.json"]  # untouched
    done = migrate(tmp_path / "runs", apply=True)
    assert done.superseded == [str(folder / "bbbb.json")]  # the older one
    (kept,) = list(folder.glob("*.json"))
    rec = json.loads(kept.read_text())
    # a record made before protocols existed was fitted strictly, and is keyed as such now
    assert rec["config"]["protocol"]["name"] == "strict"
    assert rec["key"] == kept.stem == run_key(rec["config"], 0) != run_key(config, 0)
    assert rec["deterministic"] is True and rec["seeds_requested"] == [0, 1, 2]
    assert rec["migrated"]["from_key"] == "aaaa" and rec["created_at"] == "2026-01-02"
    assert (tmp_path / "runs" / ".superseded" / "table5" / "bbbb.json").is_file()
    assert migrate(tmp_path / "runs").unchanged == 1


def test_migrate_marks_old_byte_budgets_as_counting_numbers_only(tmp_path):
    """A size=bytes record from before size.overhead existed budgeted the numbers only: it is
    re-keyed as overhead=unbudgeted, not as what size=bytes computes now."""
    from riembench.store.migrate import migrate

    folder = tmp_path / "runs" / "equal_bytes"
    folder.mkdir(parents=True)
    config = {"method": {"name": "svd"}, "size": {"name": "bytes", "bytes": 30000, "bits": 8},
              "protocol": {"name": "strict"}, "seeds": [0]}
    rec = {"table": "equal_bytes", "seed": 0, "method": "svd", "config": config, "key": "old",
           "status": "ok", "created_at": "2026-01-01", "cell": {"method": "svd"},
           "deterministic": True, "seeds_requested": [0]}
    (folder / "old.json").write_text(json.dumps(rec))
    migrate(tmp_path / "runs", apply=True)
    (kept,) = list(folder.glob("*.json"))
    moved = json.loads(kept.read_text())
    assert moved["config"]["size"]["overhead"] == "unbudgeted"
    assert "overhead_from" in moved["migrated"]
    now = {**config, "size": {**config["size"], "overhead": "measured"}}
    assert moved["key"] != run_key(now, 0)
