"""The reporter: seed rule, paper join, renderers and CLI, on a synthetic store (no fitting)."""

import csv
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from riembench.cli.report import main as report_main
from riembench.report.paper import load_paper_table, paper_dir
from riembench.report.registry import TABLES
from riembench.report.select import select_top_k
from riembench.report.tables import build_table, write_table
from riembench.store.records import RunRecord, RunStore

SHARED = Path(__file__).resolve().parents[2] / "shared" / "paper_tables"

# dev / test error per seed; seed 5 is a failed run (no metrics). Best 3 by dev: seeds 1, 3, 4.
DEV = {0: 5e-4, 1: 1e-4, 2: 4e-4, 3: 2e-4, 4: 3e-4}
TEST = {0: 9e-4, 1: 1e-4, 2: 8e-4, 3: 2e-4, 4: 3e-4}
# per (family, method, ratio): scale of the errors; svd wins at ratio 0.3, riem at 0.1
SCALE = {("lp_field", "riem", 0.1): 1.0, ("lp_field", "svd", 0.1): 10.0,
         ("lp_field", "riem", 0.3): 5.0, ("lp_field", "svd", 0.3): 0.5,
         ("randn", "riem", 0.1): 100.0, ("randn", "svd", 0.1): 90.0,
         ("randn", "riem", 0.3): 80.0, ("randn", "svd", 0.3): 70.0}


def _record(family, method, ratio, seed, failed=False, config_extra=None, created_at=""):
    cell = {"method": method, "variant": "", "family": family, "n": 1000, "ratio": ratio}
    config = {"method": {"name": method}, "dataset": {"family": family, "n": 1000},
              "size": {"ratio": ratio}, **(config_extra or {})}
    rec = RunRecord(table="table5", seed=seed, method=method, dataset="synthetic", cell=cell,
                    config=config, cost={"params": 123, "budget": int(ratio * 1000 ** 2)},
                    git_rev="abc123", created_at=created_at or "2026-01-01T00:00:00+00:00")
    if failed:
        rec.status, rec.error = "failed", "diverged"
    else:
        scale = SCALE[(family, method, ratio)]
        rec.metrics = {"dev_error": DEV[seed] * scale, "test_error": TEST[seed] * scale}
    return rec


@pytest.fixture()
def store(tmp_path):
    root = tmp_path / "runs"
    st = RunStore(root)
    for family, method, ratio in SCALE:
        for seed in DEV:
            st.write(_record(family, method, ratio, seed))
        st.write(_record(family, method, ratio, 5, failed=True))
    return root


def test_select_top_k_rule_ties_direction_and_short_groups():
    df = pd.DataFrame({
        "g": ["a"] * 5 + ["b"] * 2,
        "seed": [0, 1, 2, 3, 4, 0, 1],
        "status": ["ok", "ok", "ok", "failed", "ok", "ok", "ok"],
        "dev": [0.2, 0.1, 0.1, None, 0.3, 1.0, float("nan")],  # b/1: ok status but no metric
        "test": [2.0, 1.0, 3.0, None, 4.0, 7.0, 8.0],
        "key": ["k0", "k1", "k2", "k3", "k4", "j0", "j1"],
    })
    out = select_top_k(df, ["g"], "dev", "test", k=3).set_index("g")
    assert out.loc["a", "selected_seeds"] == "1,2,0"  # tie at 0.1 broken by the lower seed
    assert out.loc["a", "mean"] == pytest.approx(2.0)
    assert out.loc["a", "std"] == pytest.approx(1.0)
    assert out.loc["a", "record_keys"] == "k1,k2,k0"
    assert (out.loc["a", "n_seeds"], out.loc["a", "n_selected"], out.loc["a", "n_failed"]) == (4, 3, 1)
    assert (out.loc["b", "n_seeds"], out.loc["b", "n_selected"], out.loc["b", "n_failed"]) == (1, 1, 1)
    assert out.loc["b", "mean"] == 7.0 and pd.isna(out.loc["b", "std"])
    higher = select_top_k(df, ["g"], "dev", "test", k=2, lower_is_better=False).set_index("g")
    assert higher.loc["a", "selected_seeds"] == "4,0"


def test_table5_numbers_selection_and_paper_join(store, tmp_path):
    out = tmp_path / "tables"
    paths = write_table("table5", store, out)
    assert [p.name for p in paths] == ["table5.csv", "table5.tex", "table5.md", "table5.png"]
    with open(out / "table5.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(SCALE)
    assert list(rows[0]) == ["family", "method", "variant", "n", "ratio", "ours_mean", "ours_std",
                             "n_seeds", "n_selected", "n_failed", "selected_seeds", "params",
                             "budget", "paper", "ours_over_paper", "beats_paper", "record_keys",
                             "git_revs", "deterministic", "command"]
    # row order: family, then the paper's method order (riem) before ours (svd), then n, ratio
    assert [(r["family"], r["method"], r["ratio"]) for r in rows[:4]] == [
        ("lp_field", "riem", "0.1"), ("lp_field", "riem", "0.3"),
        ("lp_field", "svd", "0.1"), ("lp_field", "svd", "0.3")]
    by = {(r["family"], r["method"], float(r["ratio"])): r for r in rows}
    riem = by[("lp_field", "riem", 0.1)]
    assert riem["selected_seeds"] == "1,3,4"
    assert float(riem["ours_mean"]) == pytest.approx((1e-4 + 2e-4 + 3e-4) / 3, rel=1e-9)
    assert float(riem["ours_std"]) == pytest.approx(1e-4, rel=1e-9)
    assert (riem["n_seeds"], riem["n_selected"], riem["n_failed"]) == ("5", "3", "1")
    assert float(riem["paper"]) == 2.20e-4
    assert float(riem["ours_over_paper"]) == pytest.approx(2e-4 / 2.2e-4, rel=1e-9)
    assert riem["beats_paper"] == "True"
    assert (riem["params"], riem["budget"], riem["git_revs"]) == ("123", "100000", "abc123")
    assert float(by[("lp_field", "riem", 0.3)]["paper"]) == 1.20e-4
    assert by[("randn", "riem", 0.1)]["beats_paper"] == "False"
    svd = by[("lp_field", "svd", 0.1)]
    assert svd["paper"] == svd["ours_over_paper"] == svd["beats_paper"] == ""  # not in the paper
    # provenance: the keys are the selected seeds' records, in selection order
    recs = {(r["seed"], r["cell"]["method"], r["cell"]["family"], r["cell"]["ratio"]): r["key"]
            for r in RunStore(store).iter_records("table5")}
    assert riem["record_keys"] == ",".join(recs[(s, "riem", "lp_field", 0.1)] for s in (1, 3, 4))


def test_table5_latex_markdown_and_plot(store, tmp_path):
    out = tmp_path / "tables"
    write_table("table5", store, out)
    tex = (out / "table5.tex").read_text()
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    assert "lp\\_field" in tex and "randn" in tex and "\\caption{" in tex
    lines = [ln for ln in tex.splitlines() if ln.startswith(("RieM &", "SVD &"))]
    assert len(lines) == 4  # two methods in two family blocks
    lp_riem, lp_svd = lines[0], lines[1]
    cells = lambda line: [c.strip() for c in line.removesuffix("\\\\").split("&")[1:]]
    # ratio 0.1: riem is our best in lp_field; ratio 0.3: svd is. Real minus signs, mean ± std
    assert cells(lp_riem)[0] == ("\\textbf{2.00E$-$04 $\\pm$ 1.0E$-$04}$^{\\dagger}$ / "
                                 "2.20E$-$04")
    assert "\\textbf" not in cells(lp_riem)[1] and "\\textbf" not in cells(lp_svd)[0]
    assert cells(lp_svd)[1].startswith("\\textbf{1.00E$-$04 $\\pm$ 5.0E$-$05}$^{\\dagger}$")
    assert cells(lp_svd)[1].endswith("/ --")
    assert tex.count("\\textbf") == 4 + 1  # one per (family, column), one in the caption
    assert tex.count("{") == tex.count("}")
    assert tex.count("\\caption{") == 1 and "Table 5" not in tex.split("\\caption{")[1]
    md = (out / "table5.md").read_text()
    assert "## family: Lp field (`lp_field`)" in md
    assert "| RieM | **2.00E\u221204 ± 1.0E\u221204**† / 2.20E\u221204 | " in md
    png = out / "table5.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_older_config_of_a_cell_is_left_out(store, tmp_path):
    """A changed default makes new records; the old ones must not mix into the new mean."""
    old = _record("lp_field", "riem", 0.1, 0, config_extra={"fit": {"steps": 1}},
                  created_at="2020-01-01T00:00:00+00:00")
    old.metrics = {"dev_error": 0.0, "test_error": 1.0}  # would win the dev ranking if mixed in
    RunStore(store).write(old)
    df = build_table("table5", store).set_index(["family", "method", "ratio"])
    assert df.loc[("lp_field", "riem", 0.1), "selected_seeds"] == "1,3,4"


def test_cli_all_with_empty_store_fails_clearly(tmp_path, capsys):
    assert report_main(["all", "--store", str(tmp_path / "empty"), "--out", str(tmp_path / "t")]) == 1
    err = capsys.readouterr().err
    assert "no records" in err and "table5" in err
    assert not (tmp_path / "t" / "table5.csv").exists()


def test_cli_module_writes_table_from_env_store(store, tmp_path):
    env = {**os.environ, "RIEMBENCH_STORE": str(store)}
    res = subprocess.run([sys.executable, "-m", "riembench.cli.report", "all", "--out", str(tmp_path / "t"),
                          "--all-records"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert "table5: wrote" in res.stdout and (tmp_path / "t" / "table5.tex").is_file()
    bad = subprocess.run([sys.executable, "-m", "riembench.cli.report", "table5", "--store",
                          str(tmp_path / "none"), "--out", str(tmp_path / "t2")],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode != 0 and "no records for table 'table5'" in bad.stderr


def test_registry_and_paper_loader():
    assert "table5" in TABLES
    paper = load_paper_table("table5")
    row = paper[(paper.method == "riem") & (paper.matrix_n == 1000) & (paper.compute_ratio == 0.1)]
    assert row["error"].item() == 2.20e-4
    assert len(load_paper_table("table1_fc_mnist_cifar100")) == 22


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared/paper_tables not present (a user's clone)")
def test_vendored_paper_tables_equal_shared():
    vendored = Path(str(paper_dir()))
    names = sorted(p.name for p in SHARED.iterdir() if p.suffix in (".csv", ".md"))
    assert names == sorted(p.name for p in vendored.iterdir() if p.suffix in (".csv", ".md"))
    for name in names:
        assert filecmp.cmp(SHARED / name, vendored / name, shallow=False), name


def test_imagenet_rows_match_the_paper_only_at_the_same_setting():
    from types import SimpleNamespace as Row

    from riembench.report.imagenet import match_paper

    t2, t3 = load_paper_table("table2"), load_paper_table("table3")
    nan = float("nan")

    def row(method, backbone, **kw):
        base = {"paper_method": method, "method": method, "backbone": backbone, "size_mb": nan,
                "w_bits": nan, "a_bits": nan, "ratio": nan, "prune_ratio": nan,
                "mode": "structured"}
        return Row(**{**base, **kw})

    assert match_paper(row("dfq", "resnet18", w_bits=6, a_bits=6), t2, False)["top1"] == 66.30
    assert match_paper(row("dfq", "resnet18", w_bits=8, a_bits=8), t2, False) is None
    assert match_paper(row("riem", "resnet18", size_mb=5.58), t2, False)["top1"] == 66.30
    assert match_paper(row("riem", "resnet18", size_mb=4.0), t2, False) is None
    assert match_paper(row("lpnorm-p2", "resnet50", size_mb=12.28), t2, False)["top1"] == 72.96
    assert match_paper(row("neuron_merge", "resnet34", ratio=0.1), t3, True)["top1"] == 67.10
    assert match_paper(row("neuron_merge", "resnet34", ratio=0.2), t3, True) is None
    riem = row("riem", "resnet101", size_mb=21.2, prune_ratio=0.3)
    assert match_paper(riem, t3, True)["top1"] == 73.296
    assert match_paper(row("prune", "resnet34", ratio=0.1), t3, True) is None  # not in the paper
