"""Start-up of the commands that compute nothing (help, printing a config, a typo's error, a table
plan's dry run, the reporter on an empty store), this tree against a reference checkout of
riembench, alternating the two (A B A B) in one run, each command in a fresh process.

    python benchmarks/cli_startup.py --reference ../riembench-old [--repeats 5]
        ->  benchmarks/results/cli_startup-cpu.json

The reference is any riembench checkout (its ``src/`` goes first on PYTHONPATH; both run with
this interpreter and its packages). Each run also records whether torch or scikit-learn were
imported. The dry runs are timed with their compose cache warm (a first, untimed run fills it);
the cold first run is recorded separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

#: name -> the command's arguments (the report's module differs between trees: see _argv)
COMMANDS = {
    "help": ["cli", "--help"],
    "cfg_job": ["cli", "--cfg", "job", "method=svd"],
    "typo_error": ["cli", "method=svdd"],
    "bad_value_error": ["cli", "method.fit.stpes=3"],
    "dry_run_table5": ["cli", "table=table5", "dry_run=true"],
    "dry_run_table1": ["cli", "table=table1", "dry_run=true"],
    "report_empty_store": ["report", "table5", "--store", "{store}"],
}

#: printed by the child after the command: which heavy packages it imported
PROBE = ("import sys, runpy; sys.argv = [{name!r}, *{args!r}]\n"
         "try:\n    runpy.run_module({module!r}, run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('IMPORTED', sorted(m for m in ('torch', 'sklearn') if m in sys.modules),"
         " file=sys.stderr)")


def _report_module(tree: Path) -> str:
    old = tree / "src" / "riembench" / "report" / "__main__.py"
    return "riembench.report" if old.exists() else "riembench.cli.report"


def _cli_module(tree: Path) -> str:
    return "riembench.cli" if (tree / "src" / "riembench" / "cli.py").exists() else \
        "riembench.cli.main"


def _run(tree: Path, command: list[str], env: dict[str, str]) -> tuple[float, list[str]]:
    kind, *args = command
    module = _cli_module(tree) if kind == "cli" else _report_module(tree)
    args = [a.format(store=env["BENCH_EMPTY_STORE"]) for a in args]
    code = PROBE.format(name=kind, args=args, module=module)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(tree / "src")},
                         capture_output=True, text=True, timeout=600, cwd=env["BENCH_CWD"],
                         check=False)
    seconds = time.perf_counter() - start
    line = next((x for x in out.stderr.splitlines() if x.startswith("IMPORTED")), "IMPORTED ?")
    return seconds, json.loads(line.split(" ", 1)[1].replace("'", '"')) if "[" in line else ["?"]


def _revision(tree: Path) -> str:
    """The reference as a commit (never a path of this machine)."""
    out = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"],
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, required=True, help="a riembench checkout")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=HERE / "benchmarks" / "results")
    args = ap.parse_args()
    trees = {"this": HERE, "reference": args.reference.resolve()}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "WANDB_MODE": "disabled", "RIEMBENCH_CACHE": str(Path(tmp) / "cache"),
               "BENCH_EMPTY_STORE": str(Path(tmp) / "empty-store"), "BENCH_CWD": tmp}
        env.pop("RIEMBENCH_CONF", None)
        cold = {t: {n: _run(tree, COMMANDS[n], env)[0] for n in ("dry_run_table5", "dry_run_table1")}
                for t, tree in trees.items()}  # fills the compose cache where a tree has one
        times: dict[str, dict[str, list[float]]] = {t: {n: [] for n in COMMANDS} for t in trees}
        imported: dict[str, dict[str, list[str]]] = {t: {} for t in trees}
        for _ in range(args.repeats):
            for name, command in COMMANDS.items():
                for t, tree in trees.items():  # A B A B
                    seconds, heavy = _run(tree, command, env)
                    times[t][name].append(seconds)
                    imported[t][name] = heavy
    median = {t: {n: statistics.median(v) for n, v in by.items()} for t, by in times.items()}
    result = {"seconds": times, "median_s": median, "cold_first_dry_run_s": cold,
              "ratio_this_over_reference": {n: median["this"][n] / median["reference"][n]
                                            for n in COMMANDS},
              "imported_torch_or_sklearn": imported,
              "reference": _revision(args.reference), "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "device": f"cpu:{platform.machine()} x{os.cpu_count()}",
              "python": platform.python_version(), "loadavg": [round(x, 2) for x in os.getloadavg()]}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "cli_startup-cpu.json"
    path.write_text(json.dumps(result, indent=1))
    for name in COMMANDS:
        print(f"{name:20s} this {median['this'][name]:6.2f} s  reference "
              f"{median['reference'][name]:6.2f} s  imports {imported['this'][name]}")
    print(path)


if __name__ == "__main__":
    main()
