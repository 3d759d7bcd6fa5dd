"""Fault suite: inject each way a run can go wrong and check exit status, message and what the
store holds afterwards (records lost, duplicated or overwritten must be zero)."""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import riembench.store.records as store_mod
from riembench.config.tree import config_dir
from riembench.core.errors import RiembenchError
from riembench.core.validate import InvalidInput
from riembench.harness.runner import run
from riembench.report.tables import current_records
from riembench.store import cli as store_cli
from riembench.store.records import QUARANTINE, TRASH, RunRecord, RunStore, StoreError

SRC = str(Path(__file__).resolve().parents[1] / "src")
# nystroem: fast, and its seeds differ (a deterministic method would run one seed per cell)
FAST = ["method=nystroem", "dataset.n=20", "size.ratio=0.3", "wandb.enabled=false", "progress=false"]


def _env(store: Path) -> dict[str, str]:
    return {**os.environ, "RIEMBENCH_STORE": str(store), "WANDB_MODE": "disabled",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def cli(args, cwd, store, timeout=300):
    return subprocess.run([sys.executable, "-m", "riembench.cli.main", *args], cwd=cwd, env=_env(store),
                          check=False, capture_output=True, text=True, timeout=timeout)


def run_cell(store: Path, *overrides: str):
    """One cell in this process (no subprocess start-up): compose, then the runner."""
    base = [o for o in FAST if not (o.startswith("size.") and any(x.startswith("size=")
                                                                   for x in overrides))]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*base, f"store.root={store}", *overrides])
    return run(cfg)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every record file's bytes, keyed by table/name (to prove nothing lost or overwritten)."""
    return {f"{p.parent.name}/{p.name}": p.read_bytes()
            for p in root.glob("*/*.json") if not p.parent.name.startswith(".")}


def assert_kept(before: dict[str, bytes], after: dict[str, bytes]) -> None:
    lost = [k for k in before if k not in after]
    overwritten = [k for k in before if k in after and after[k] != before[k]]
    assert not lost and not overwritten, (lost, overwritten)


# ------------------------------------------------------------------------ 1. paths stay inside


@pytest.mark.parametrize("table", ["../../escaped_table", "/tmp/riembench_abs_escape", "..",
                                   ".hidden", "a/b"])
def test_table_name_cannot_leave_the_store(tmp_path, table):
    """The record folder (``table`` in a config, e.g. an experiment's) must be a known table;
    the store itself refuses any name that is not a plain folder name (tested below)."""
    from omegaconf import open_dict

    root = tmp_path / "store" / "runs"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*FAST, f"store.root={root}"])
    with open_dict(cfg):
        cfg.table = table
    with pytest.raises(RiembenchError, match="not a known table"):
        run(cfg)
    assert not list(tmp_path.rglob("*.json"))
    assert not Path("/tmp/riembench_abs_escape").exists()


def test_record_key_and_symlinked_table_cannot_leave_the_store(tmp_path):
    store = RunStore(tmp_path / "runs")
    for key in ("../x", "/etc/passwd", "", "a/b", ".."):
        with pytest.raises(StoreError):
            store.path("table5", key)
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "linked").symlink_to(outside)
    with pytest.raises(StoreError, match="outside store"):
        store.path("linked", "abc")


def test_cli_refuses_escaping_table_with_exit_status(tmp_path):
    out = cli([*FAST, "table=../../escaped_table"], tmp_path, tmp_path / "runs")
    assert out.returncode == 2
    assert "../../escaped_table" in out.stderr and "known" in out.stderr
    assert not list(tmp_path.rglob("*.json"))


# ------------------------------------------------------------------------ 2. damaged records


@pytest.mark.parametrize("damage", [b'{"table": "table5", "se', b"\x00\xffgarbage",
                                    b'{"hello": 1}', b"[1, 2]", b""])
def test_damaged_record_is_named_quarantined_and_recomputed(tmp_path, caplog, damage):
    root = tmp_path / "runs"
    run_cell(root, "seeds=[0,1,2]")
    before = snapshot(root)
    victim = sorted((root / "table5").glob("*.json"))[1]
    victim.write_bytes(damage)
    store = RunStore(root)
    with caplog.at_level(logging.WARNING, logger="riembench.store.records"):
        records = list(store.iter_records("table5"))  # what the reporter reads through
    assert len(records) == 2
    assert str(victim) in caplog.text and "damaged" in caplog.text
    assert victim.exists()  # reading does not move anything
    assert not store.read(victim.parent.name, victim.stem, quarantine=False)

    outcome = run_cell(root, "seeds=[0,1,2]")  # the rerun quarantines and recomputes it
    assert len(outcome.written) == 1 and sorted(outcome.skipped) == [0, 2]
    quarantined = list((root / QUARANTINE / "table5").glob(f"{victim.stem}.*.json"))
    assert len(quarantined) == 1 and quarantined[0].read_bytes() == damage
    after = snapshot(root)
    assert set(after) == set(before)
    assert_kept({k: v for k, v in before.items() if victim.name not in k}, after)
    assert json.loads(victim.read_text())["status"] == "ok"


def test_reporter_goes_on_past_a_damaged_record(tmp_path, caplog):
    root = tmp_path / "runs"
    run_cell(root, "seeds=[0,1]")
    bad = min((root / "table5").glob("*.json"))
    bad.write_text("{truncated")
    with caplog.at_level(logging.WARNING):
        df = current_records(root, "table5", ["cell.method"])
    assert len(df) == 1 and bad.name in caplog.text


# ------------------------------------------------------------------------ 3. concurrent sweeps


@pytest.mark.slow
def test_two_concurrent_sweeps_compute_each_seed_once(tmp_path):
    """Two identical sweeps on one store, started together: every (cell, seed) is computed by
    exactly one of them (claims), and no record is written twice (no-overwrite create)."""
    root = tmp_path / "runs"
    args = ["-m", "method=lpnorm", "dataset.n=30", "method.fit.steps=3000", "method.fit.patience=0",
            "method.progress=false",
            "size.ratio=0.4,0.5", "seeds=[0,1,2]", "threads=1", "hydra.launcher.n_jobs=1",
            f"hydra.sweep.dir={tmp_path}/multirun"]
    def start():
        return subprocess.Popen([sys.executable, "-m", "riembench.cli.main", *args], cwd=tmp_path,
                                env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    procs = [start()]
    deadline = time.time() + 300  # the second starts once the first holds claims: they overlap
    while time.time() < deadline and not list((root / ".claims").rglob("*.claim")):
        time.sleep(0.05)
    procs.append(start())
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    computed = sum(int(line.split("computing ")[1].split()[0]) for out in outs
                   for line in out.splitlines() if ": computing " in line)
    written = len(snapshot(root))
    assert computed == written == 6, outs  # 2 cells x 3 seeds, each once
    # they did run at once: one of them found a seed claimed by the other and left it
    assert sum(out.count("being computed by another sweep") for out in outs) >= 1, outs
    assert not any("ours is dropped" in out for out in outs)
    assert len(snapshot(root)) == 6
    assert not list((root / ".claims").rglob("*.claim"))  # every claim released


def test_a_seed_claimed_by_a_live_sweep_is_left_to_it(tmp_path):
    """Deterministic half of the test above: a claim held by a live process on seed 1 makes the
    run compute seeds 0 and 2 only; once that process is gone, a rerun takes the claim over."""
    root = tmp_path / "runs"
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[*FAST, f"store.root={root}", "seeds=[1]"])
    from riembench.config.identity import run_key
    from riembench.harness.cell import resolved_container

    key = run_key(resolved_container(cfg), 1)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        path = RunStore(root).claim_path("table5", key)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid,
                                    "created": time.time(), "token": "other"}))
        outcome = run_cell(root, "seeds=[0,1,2]")
        assert len(outcome.written) == 2 and outcome.skipped == [1]
        assert not RunStore(root).has("table5", key) and path.exists()  # theirs, untouched
    finally:
        holder.kill()
        holder.wait()
    outcome = run_cell(root, "seeds=[0,1,2]")
    assert len(outcome.written) == 1 and RunStore(root).has("table5", key)
    assert not path.exists()


def test_claims_are_exclusive_and_stale_ones_recovered(tmp_path):
    store = RunStore(tmp_path / "runs", claim_stale_s=3600)
    first = store.claim("table5", "abc")
    assert first is not None and store.claim("table5", "abc") is None  # live owner: refused
    first.release()
    assert not first.path.exists()
    # a dead process on this host: recovered at once
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path = store.claim_path("table5", "abc")
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid,
                                "created": time.time(),
                                "token": "x"}))
    assert store.claim("table5", "abc") is not None
    # another host: recovered only once older than claim_stale_s
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "created": time.time(),
                                "token": "y"}))
    assert store.claim("table5", "abc") is None
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "created": time.time() - 7200,
                                "token": "z"}))
    assert store.claim("table5", "abc") is not None


def test_a_record_is_never_replaced(tmp_path):
    store = RunStore(tmp_path)
    rec = RunRecord(table="table5", seed=0, method="svd", dataset="synthetic", cell={}, config={},
                    key="k0", metrics={"test_error": 1.0})
    path, _ = store.create(rec)
    first = path.read_bytes()
    rec.metrics = {"test_error": 2.0}
    assert store.create(rec) == (path, False) and path.read_bytes() == first


# ------------------------------------------------------------------------ 4. bad inputs


@pytest.mark.parametrize("kind", ["nan_pt", "inf_npy", "empty_npy", "nan_state_dict"])
def test_non_finite_or_empty_matrix_file_is_refused_naming_it(tmp_path, kind):
    a = torch.randn(20, 20)
    a[3, 4] = float("nan") if "nan" in kind else float("inf")
    if kind == "nan_pt":
        path = tmp_path / "m.pt"
        torch.save(a, path)
        extra = []
    elif kind == "inf_npy":
        path = tmp_path / "m.npy"
        np.save(path, a.numpy())
        extra = []
    elif kind == "empty_npy":
        path = tmp_path / "m.npy"
        np.save(path, np.zeros((0, 20), dtype=np.float32))
        extra = []
    else:
        path = tmp_path / "sd.pt"
        torch.save({"fc.weight": a}, path)
        extra = ["dataset.key=fc.weight"]
    with pytest.raises(InvalidInput, match=str(path)) as info:
        run_cell(tmp_path / "runs", "dataset.family=file", f"dataset.path={path}", *extra)
    assert ("empty" if kind == "empty_npy" else "non-finite") in str(info.value)
    if kind == "nan_state_dict":
        assert "fc.weight" in str(info.value)
    assert not list((tmp_path / "runs").rglob("*.json"))


def test_non_finite_checkpoint_and_weights_file_are_refused(tmp_path):
    from riembench.backbones.checkpoints import read_checkpoint, save_checkpoint
    from riembench.backbones.torchvision_models import read_state_dict

    model = torch.nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    ckpt = tmp_path / "lenet5-abc-digits-seed0-xyz.pt"
    save_checkpoint(ckpt, model, {})
    with pytest.raises(InvalidInput, match=r"tensor 'weight' in checkpoint .*lenet5-abc"):
        read_checkpoint(ckpt)
    weights = tmp_path / "resnet18-custom.pth"
    torch.save(model.state_dict(), weights)
    with pytest.raises(InvalidInput, match=r"tensor 'weight' in weights file .*resnet18-custom"):
        read_state_dict(weights)
    torch.save({}, weights)
    with pytest.raises(RiembenchError, match="resnet18-custom"):
        read_state_dict(weights)


def test_empty_mnist_files_are_refused(tmp_path):
    from riembench.data.images import _read_mnist

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            (2051).to_bytes(4, "big") + (0).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            (2049).to_bytes(4, "big") + (0).to_bytes(4, "big"))
    with pytest.raises(RiembenchError, match=r"MNIST.*(empty|0 items)|could not read MNIST"):
        _read_mnist(tmp_path, train=True)


# ------------------------------------------------------------------------ 5. settings


@pytest.mark.parametrize("override,message", [
    ("size.ratio=1.5", "size.ratio"), ("size.ratio=1.0", "size.ratio"),
    ("size.ratio=inf", "must be finite"), ("size.ratio=nan", "must be finite"),
    ("size.ratio=0", "size.ratio"), ("size.ratio=-0.1", "size.ratio"),
    ("seeds=[]", "seeds=[] has no seeds"), ("seed=-1", "seed"),
    ("data.batch_size=0", "data.batch_size"), ("threads=0", "threads"),
    ("store.claim_stale_s=0", "store.claim_stale_s"),
])
def test_bad_settings_fail_before_any_work(tmp_path, override, message):
    with pytest.raises(RiembenchError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_cell(tmp_path / "runs", override)
    assert not list((tmp_path / "runs").rglob("*.json"))


@pytest.mark.parametrize("size", ["mb", "params"])
def test_bad_size_groups_fail_before_any_work(tmp_path, size):
    from riembench.config.identity import typed_group
    from riembench.config.sizes import SIZES

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        bad = {"mb": ["size=mb", "size.mb=inf"], "params": ["size=params", "size.params=0"]}[size]
        cfg = compose("config", overrides=bad)
    with pytest.raises(RiembenchError, match=f"size.{size}"):
        typed_group(cfg.size, SIZES)


def test_params_at_dense_size_is_no_compression(tmp_path):
    outcome = run_cell(tmp_path / "runs", "size=params", "size.params=400")  # 20 x 20 dense
    (record,) = [json.loads(Path(p).read_text()) for p in outcome.written]
    assert record["status"] == "failed" and "no compression" in record["error"]


def test_cli_seeds_empty_exits_nonzero(tmp_path):
    out = cli([*FAST, "seeds=[]"], tmp_path, tmp_path / "runs")
    assert out.returncode == 1 and "seeds=[] has no seeds" in out.stderr
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("*.json"))


# ------------------------------------------------------------------------ 6. full store


def test_full_disk_stops_the_cell_with_one_clear_error_and_no_partial_file(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    real_link = os.link
    calls = []

    def link_then_full(src, dst, *a, **k):
        calls.append(dst)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_link(src, dst, *a, **k)

    monkeypatch.setattr(store_mod.os, "link", link_then_full)
    with pytest.raises(StoreError) as info:
        run_cell(root, "seeds=[0,1,2]")
    msg = str(info.value)
    assert f"store {root}" in msg and str(calls[1]) in msg and "No space left" in msg
    assert "1 of its record(s) were written" in msg
    files = [p for p in root.rglob("*") if p.is_file()]
    assert [p.name for p in files] == [Path(calls[0]).name]  # no temp file, no claim left
    monkeypatch.setattr(store_mod.os, "link", real_link)
    before = snapshot(root)
    outcome = run_cell(root, "seeds=[0,1,2]")  # space again: the rest is computed
    assert len(outcome.written) == 2 and len(outcome.skipped) == 1
    assert_kept(before, snapshot(root))


def test_sweep_goes_on_with_the_next_cell_when_one_cannot_be_written(tmp_path):
    """A cell whose record cannot be written (here: the first record write hits ENOSPC) stops;
    the sweep runs its other cells, then exits 1 with the one-line error naming store and file."""
    root = tmp_path / "runs"
    script = textwrap.dedent(f"""
        import errno, os, sys
        import riembench.store.records as s
        real = os.link
        calls = []
        def link(src, dst, *a, **k):
            calls.append(dst)
            if len(calls) == 1:  # the first cell's first record: the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(src, dst, *a, **k)
        s.os.link = link
        sys.argv = ["riembench", "-m", *{[*FAST, "dataset.n=20,21", "seeds=[0,1]",
                                         "hydra.launcher.n_jobs=1",
                                         f"hydra.sweep.dir={tmp_path}/multirun"]!r}]
        from riembench.cli.main import main
        main()
    """)
    out = subprocess.run([sys.executable, "-c", script], check=False, cwd=tmp_path, env=_env(root),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stderr
    assert f"cannot write record {root}/table5/" in out.stderr and f"in store {root}" in out.stderr
    assert "Traceback" not in out.stderr
    records = [json.loads(p.read_text()) for p in (root / "table5").glob("*.json")]
    assert len(records) == 2 and {r["config"]["dataset"]["n"] for r in records} == {21}  # next cell done


def test_full_disk_at_the_claim_stops_before_any_fitting(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    real_open = os.open

    def full(path, flags, *a, **k):
        if str(path).endswith(".claim"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(store_mod.os, "open", full)
    with pytest.raises(StoreError, match=rf"cannot create claim {root}/.claims/table5/.*\.claim "
                                         rf"in store {root}: No space left"):
        run_cell(root, "seeds=[0,1]")
    assert not list(root.rglob("*.json")) and not list(root.rglob("*.claim"))


def test_unwritable_store_names_store_and_file(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(store_mod.tempfile, "mkstemp", refuse)
    store = RunStore(tmp_path / "ro")
    rec = RunRecord(table="table5", seed=0, method="svd", dataset="synthetic", cell={}, config={},
                    key="k0")
    with pytest.raises(StoreError, match=rf"cannot write record .*k0.json in store {tmp_path}/ro: "
                                         "Read-only"):
        store.create(rec)
    assert not list((tmp_path / "ro").rglob("*.json"))


# ------------------------------------------------------------------------ 7. Ctrl-C


@pytest.mark.slow
def _default_sigint() -> None:
    """In the child before exec: one signal call, nothing that takes a lock."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_a_parallel_sweep_with_one_line(tmp_path):
    root = tmp_path / "runs"
    # no convergence test (patience 0): every fit runs all its steps, long enough to interrupt
    args = ["-m", "method=lpnorm", "dataset.n=30", "size.ratio=0.4", "method.fit.steps=6000",
            "method.fit.patience=0",
            "method.progress=false", "seed=0,1,2,3", "threads=1",
            "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp_path}/multirun"]
    # started as from a terminal: Ctrl-C at its default, whatever this test process inherited
    # (a process that ignores SIGINT passes that on to its children, and Python keeps it)
    proc = subprocess.Popen([sys.executable, "-m", "riembench.cli.main", *args], cwd=tmp_path,
                            env=_env(root), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=_default_sigint)  # noqa: PLW1509 (see _default_sigint)
    deadline = time.time() + 300
    while time.time() < deadline and not list(root.glob("table5/*.json")):
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole group
    _, err = proc.communicate(timeout=120)
    kept = snapshot(root)
    assert proc.returncode == 130, (signal.getsignal(signal.SIGINT), err[-2000:])
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    lines = [ln for ln in err.splitlines() if "interrupted" in ln]
    assert len(lines) == 1 and f"kept {len(kept)} finished record(s) in store {root}" in lines[0]
    assert 1 <= len(kept) < 4
    # a rerun recovers the claims the killed workers left and computes only what is missing
    again = cli(args[:-1] + [f"hydra.sweep.dir={tmp_path}/m2"], tmp_path, root, timeout=600)
    assert again.returncode == 0, again.stderr
    assert_kept(kept, snapshot(root))
    assert len(snapshot(root)) == 4


# ------------------------------------------------------------------------ 8. store tools


def test_store_command_list_show_verify_remove_retry(tmp_path, capsys):
    root = tmp_path / "runs"
    run_cell(root, "seeds=[0,1]")
    run_cell(root, "seeds=[0]", "size.ratio=0.001")  # impossible budget: a failed record
    assert store_cli.main(["--store", str(root), "list"]) == 0
    out = capsys.readouterr().out
    assert "table5: 3 record(s) in 2 cell(s)" in out and "1 failed" in out
    key = next(p.stem for p in sorted((root / "table5").glob("*.json"))
               if json.loads(p.read_text())["status"] == "ok")
    assert store_cli.main(["--store", str(root), "show", key[:8]]) == 0
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["key"] == key
    assert store_cli.main(["--store", str(root), "verify"]) == 0
    (root / "table5" / f"{key}.json").write_text("{oops")
    assert store_cli.main(["--store", str(root), "verify"]) == 1
    assert store_cli.main(["--store", str(root), "verify", "--fix"]) == 0
    assert len(list((root / QUARANTINE / "table5").glob("*.json"))) == 1
    assert store_cli.main(["--store", str(root), "retry"]) == 0
    assert "1 failed record(s) moved" in capsys.readouterr().out
    assert len(snapshot(root)) == 1
    assert store_cli.main(["--store", str(root), "remove"]) == 2  # nothing chosen: refuses
    assert store_cli.main(["--store", str(root), "remove", "--where", "cell.method=nystroem"]) == 0
    assert snapshot(root) == {} and len(list((root / TRASH / "table5").glob("*.json"))) == 2
    outcome = run_cell(root, "seeds=[0]", "size.ratio=0.001")  # the retried seed runs again
    assert len(outcome.written) == 1


def test_force_recomputes_and_keeps_the_old_record_aside(tmp_path):
    root = tmp_path / "runs"
    run_cell(root, "seeds=[0,1]")
    before = snapshot(root)
    outcome = run_cell(root, "seeds=[0,1]", "force=true")
    assert len(outcome.written) == 2 and not outcome.skipped
    assert set(snapshot(root)) == set(before)  # same keys: force is not part of the identity
    aside = sorted((root / TRASH / "table5").glob("*.force.json"))
    assert sorted(p.read_bytes() for p in aside) == sorted(before.values())  # nothing lost


def test_records_carry_a_code_revision_also_when_installed(tmp_path, monkeypatch):
    store_mod.git_revision.cache_clear()
    monkeypatch.setattr(store_mod, "__file__", str(tmp_path / "site" / "riembench" / "store.py"))
    try:
        rev = store_mod.git_revision()
    finally:
        store_mod.git_revision.cache_clear()
    assert rev.startswith("riembench==") or rev == "unknown"
    assert store_mod.git_revision() not in ("", "unknown")  # this checkout: its commit


def test_reporter_warns_when_a_cell_mixes_revisions(tmp_path, caplog):
    store = RunStore(tmp_path)
    for seed, rev in ((0, "aaa"), (1, "bbb")):
        store.write(RunRecord(table="table5", seed=seed, method="svd", dataset="synthetic",
                              cell={"method": "svd"}, config={"method": {"name": "svd"}},
                              git_rev=rev, metrics={"test_error": 1.0}))
    with caplog.at_level(logging.WARNING):
        current_records(tmp_path, "table5", ["cell.method"])
    assert "mixes 2 code revisions (aaa, bbb)" in caplog.text


# ------------------------------------------------------------------------ handled before


@pytest.mark.parametrize("override,message", [("method=nosuch", "nosuch"),
                                              ("method.fit.stpes=5", "stpes")])
def test_unknown_names_and_typos_exit_nonzero_recording_nothing(tmp_path, override, message):
    out = cli(["method=riem", "dataset.n=20", "wandb.enabled=false", override], tmp_path,
              tmp_path / "runs")
    assert out.returncode != 0 and message in out.stderr + out.stdout
    assert not (tmp_path / "runs").exists()
