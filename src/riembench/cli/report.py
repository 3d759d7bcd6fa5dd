"""``python -m riembench.report <table|all> [overrides...] [--plan NAME] [--store runs] [--out DIR]``:
render from the store.

Reads the run store only (no rerun). A table's cells come from its plan (conf/table/<table>.yaml,
or ``--plan``, e.g. table1_mnist) with the same command-line values it was run with (e.g.
``dataset.n=40``), so ad-hoc runs never enter a paper table and each row names the command that
reproduces it. ``all`` renders every registered table that has records and says which had none;
asking for one table that has no records is an error (exit 1). ``--all-records`` renders every
record of the table's folder instead (ad-hoc runs included). Output goes to ``--out``
(default ``./riembench-tables``); only ``make tables`` writes the committed ``tables/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from riembench.core.errors import RiembenchError
from riembench.harness.plans import plan_cells, plan_names
from riembench.report.registry import TABLES
from riembench.store.records import RunStore


def default_out_dir() -> Path:
    """``$RIEMBENCH_TABLES`` or ``./riembench-tables``: never the committed ``tables/`` unless
    asked for (``--out tables``, as ``make tables`` does)."""
    return Path(os.environ.get("RIEMBENCH_TABLES", "riembench-tables"))


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = TABLES.names()
    ap = argparse.ArgumentParser(prog="python -m riembench.report",
                                 description="Write paper tables (CSV, LaTeX, markdown, plot) "
                                             "from the run store.")
    ap.add_argument("table", choices=[*names, "all"], help="a registered table, or all")
    ap.add_argument("overrides", nargs="*",
                    help="command-line values the table was run with (e.g. dataset.n=40): they "
                         "select the same cells of its plan")
    ap.add_argument("--plan", default=None,
                    help="the table plan whose cells make up the table (default: the plan named "
                         "like the table; e.g. table1_mnist for table 1 on MNIST)")
    ap.add_argument("--all-records", action="store_true",
                    help="every record of the table's store folder, planned or not (a look at "
                         "ad-hoc runs; not the paper table)")
    ap.add_argument("--store", default=os.environ.get("RIEMBENCH_STORE", "runs"),
                    help="run store root (default: $RIEMBENCH_STORE or ./runs)")
    ap.add_argument("--out", default=None,
                    help="output folder (default: $RIEMBENCH_TABLES or ./riembench-tables)")
    args = ap.parse_args(argv)
    out = Path(args.out) if args.out else default_out_dir()
    wanted = names if args.table == "all" else [args.table]
    if args.plan and args.table == "all":
        ap.error("--plan names the plan of one table, not of all")
    if args.all_records and (args.plan or args.overrides):
        ap.error("--all-records takes every record: no --plan or overrides")
    written, empty = [], []
    store = RunStore(args.store)
    for name in wanted:
        if not store.record_files(name):  # said before pandas, the plan or a renderer loads
            empty.append(name)
            hint = f"riembench table={name}" if name in plan_names() else "its recipe"
            print(f"{name}: no records for table '{name}' in store '{args.store}' (run "
                  f"`{hint}` first)", file=sys.stderr)
            continue
        from riembench.harness.tracking import log_table_files
        from riembench.report.tables import NoRecords, write_table

        try:
            # a table with no plan (equal_bytes: its own recipe, riembench.cli.equal_bytes) takes
            # every record of its folder
            planned = args.plan or (name if name in plan_names() else None)
            cells = None if args.all_records or planned is None else plan_cells(planned,
                                                                                  args.overrides)
            paths = write_table(name, args.store, out, cells=cells)
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
        root = Path(args.store).resolve()
        print(f"error: no table written, the store {root} has no records for "
              f"{', '.join(wanted)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
