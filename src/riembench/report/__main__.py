"""``python -m riembench.report <table|all> [--store runs] [--out tables]``: render from the store.

Reads the run store only (no rerun). ``all`` renders every registered table that has records and
says which had none; asking for one table that has no records is an error (exit 1), so
``make table5`` cannot silently produce nothing.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from riembench.errors import RiembenchError
from riembench.report import TABLES, NoRecords, write_table
from riembench.tracking import log_table_files


def default_out_dir() -> Path:
    """``tables/`` at the repository root when running from a checkout, else ``./tables``."""
    root = Path(__file__).resolve().parents[3]
    return root / "tables" if (root / "pyproject.toml").is_file() else Path("tables")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = TABLES.names()
    ap = argparse.ArgumentParser(prog="python -m riembench.report",
                                 description="Write paper tables (CSV, LaTeX, markdown, plot) "
                                             "from the run store.")
    ap.add_argument("table", choices=[*names, "all"], help="a registered table, or all")
    ap.add_argument("--store", default=os.environ.get("RIEMBENCH_STORE", "runs"),
                    help="run store root (default: $RIEMBENCH_STORE or ./runs)")
    ap.add_argument("--out", default=None, help="output folder (default: tables/ at the repo root)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else default_out_dir()
    wanted = names if args.table == "all" else [args.table]
    written, empty = [], []
    for name in wanted:
        try:
            paths = write_table(name, args.store, out)
        except NoRecords as exc:
            empty.append(name)
            print(f"{name}: {exc}", file=sys.stderr)
            continue
        except RiembenchError as exc:
            print(f"{name}: {exc}", file=sys.stderr)
            return 2
        written.append(name)
        print(f"{name}: wrote {', '.join(str(p) for p in paths)}")
        log_table_files(name, list(paths))  # a W&B "table" artifact when WANDB_MODE is set
    if args.table == "all":
        print(f"written: {', '.join(written) or 'none'}; no records: {', '.join(empty) or 'none'}")
    if not written:
        store = Path(args.store).resolve()
        print(f"error: no table written, the store {store} has no records for "
              f"{', '.join(wanted)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
