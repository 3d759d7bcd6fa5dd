"""The benchmark scripts run (smoke sizes) and write the fields docs/benchmarks.md promises.

Why a test: benchmarks are run rarely and by hand on a GPU machine, so a broken import or a
renamed field would otherwise only show up there. The scripts run at once in subprocesses
(as `make bench` runs them) to keep this test to seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV_FIELDS = {"device", "device_kind", "date", "git_revision", "python", "torch", "versions",
              "settings", "mode"}


def test_benchmark_smoke_modes_write_their_json(tmp_path: Path) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled"}
    scripts = {"convert.py": ["--smoke"], "eval_throughput.py": ["--smoke"],
               "engine_ablation.py": ["--shapes", "4x16x40", "--d", "8", "--d-mu", "3"],
               "init_compare.py": ["--quick", "--steps", "20", "--families", "lp_field",
                                   "--resnet-layers", "layer1.0.conv1", "--lenet-epochs", "1"]}
    out_of = {"init_compare.py": ["--out", str(tmp_path / "init_compare.json")]}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / s), *args,
                               *out_of.get(s, ["--device", "cpu", "--out", str(tmp_path)])],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for s, args in scripts.items()]
    for script, proc in zip(scripts, procs, strict=True):
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, f"{script}:\n{out[-3000:]}"

    conv = json.loads((tmp_path / "convert-cpu-smoke.json").read_text())
    assert ENV_FIELDS <= conv.keys() and conv["mode"] == "smoke"
    cmp = conv["compare"]
    for key in ("engine", "naive_batch1", "naive_plain"):
        assert cmp[key]["wall_s"] > 0
        assert set(cmp[key]["rel_mse_per_layer"]) == set(cmp["layers"])
    # same init, loss, optimizer and steps: the three fits agree (float reassociation only)
    assert abs(cmp["engine"]["rel_mse_mean"] - cmp["naive_batch1"]["rel_mse_mean"]) < 1e-4
    assert abs(cmp["engine"]["rel_mse_mean"] - cmp["naive_plain"]["rel_mse_mean"]) < 1e-4
    assert cmp["speed_ratio_engine_over_naive_batch1"] > 0
    (row,) = conv["convert"]
    assert row["arch"] == "resnet18" and row["seeds"] == 2 and row["cpu_sized"]
    assert row["wall_s"] > 0 and row["peak_memory_mib"] > 0 and row["failed_seeds"] == 0
    probe = conv["probe"]
    assert probe["prototype_grad_max_rel_diff"] < 1e-4
    assert "engine_default_chunk" in probe["s_per_step"]
    for key in ("cols_once_default_chunk", "cols_once_default_chunk_bf16"):
        assert probe["s_per_step"][key] > 0
    fit = probe["bf16_fit"]
    assert fit["init"] == "svd" and fit["fp32_rel_mse"] > 0 and fit["bf16_over_fp32_rel_mse"] > 0
    init = conv["init_cost"]
    assert init["units"] and init["totals"]["initialize_s"] > 0
    assert all(u["rank_r_rel_err_full_svd"] <= 1 for u in init["units"])
    assert (tmp_path / conv["profile"]["file"]).read_text().count("aten::") >= 5
    # the JSON files docs/benchmarks.md quotes exist and carry the fields it quotes
    doc = (ROOT / "docs" / "benchmarks.md").read_text()
    for name in ("convert-cpu.json", "eval-cpu.json", "riem_ablation.json", "bench-cpu.json"):
        assert name in doc and (ROOT / "benchmarks" / "results" / name).exists(), name

    abl = json.loads((tmp_path / "engine_ablation-cpu.json").read_text())
    (row,) = abl["rows"]
    assert set(abl["settings"]["variants"]) <= row.keys()
    # the variants differ only in how the same gradient is computed
    assert row["rel_mse_max_abs_diff"] < 1e-5 and row["fit_speedup_vs"]["PerChunkRiem"] > 0

    init = json.loads((tmp_path / "init_compare.json").read_text())
    inits = {(c["method"], c["init"]) for c in init["cells"]}
    assert {("lpnorm", "random"), ("lpnorm", "mds"), ("riem", "svd"), ("riem", "spectral")} <= inits

    ev = json.loads((tmp_path / "eval-cpu-smoke.json").read_text())
    assert ENV_FIELDS <= ev.keys()
    assert set(ev["images_per_s"]) == {f"{m}_{p}" for m in ("original", "converted")
                                       for p in ("project", "timm", "timm_cl")}
    assert ev["converted"]["embedded_layers"] >= 1 and ev["paths_agree"]
    assert all(r > 0 for r in ev["ratios_project_over"].values())


def test_gpu_session_script_runs_every_part_in_smoke_mode(tmp_path: Path) -> None:
    """benchmarks/gpu_session.sh is what a lent GPU machine runs, once: its plumbing (parts,
    limits, result files) is checked here on the CPU at smoke sizes."""
    env = {**os.environ, "SMOKE": "1", "RESULTS": str(tmp_path), "PYTHON": sys.executable}
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_session.sh")], env=env, check=False,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = (tmp_path / "gpu_session-log.txt").read_text()
    for name in ("engine_ablation", "convert_resnet50", "compare", "eval", "profile", "memory"):
        assert f"== {name}: rc=0" in log, log[-3000:]
    names = {p.name for p in tmp_path.iterdir()}
    assert {"engine_ablation-cpu.json", "convert-cpu-smoke-resnet50.json",
            "convert-cpu-smoke-compare-layer3.json", "eval-cpu-smoke.json",
            "convert-cpu-smoke-profile.json", "memory-cpu-n10000.json"} <= names, names
    mem = json.loads((tmp_path / "memory-cpu-n10000.json").read_text())
    assert mem["settings"]["n"] == 500 and mem["added_over_model"] > 0
