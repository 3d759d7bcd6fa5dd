"""Start-up time of ``riembench --help`` against importing what a run imports (the registries,
which is what ``--help`` cost before it skipped them), alternating the two (A B A B) in one run.

    python benchmarks/cli_startup.py [--repeats 5]   ->  benchmarks/results/cli_startup-cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

VARIANTS = {
    "help": [sys.executable, "-m", "riembench.cli.main", "--help"],
    "completion": [sys.executable, "-m", "riembench.cli.main", "-sc", "query=bash"],
    "import_registries": [sys.executable, "-c",
                          "import riembench.cli.main, riembench.config.sources as h; h.import_registries()"],
}


def _time(cmd: list[str]) -> float:
    env = {**os.environ, "WANDB_MODE": "disabled", "COMP_LINE": "riembench method="}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    times: dict[str, list[float]] = {k: [] for k in VARIANTS}
    _time(VARIANTS["import_registries"])  # warm the file cache once, for every variant alike
    for _ in range(args.repeats):
        for name, cmd in VARIANTS.items():
            times[name].append(_time(cmd))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"seconds": times, "median_s": med,
              "help_over_import_registries": med["help"] / med["import_registries"],
              "completion_over_import_registries": med["completion"] / med["import_registries"],
              "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "python": platform.python_version(),
              "loadavg": [round(x, 2) for x in os.getloadavg()]}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "cli_startup-cpu.json"
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(med), f"help/import = {result['help_over_import_registries']:.3f}", path)


if __name__ == "__main__":
    main()
