"""The ``riembench-store`` command: look into a run store and tidy it, without losing records.

``list`` counts records per table and cell, ``show`` prints one record, ``verify`` checks every
file (and with ``--fix`` moves damaged records to quarantine and clears stale claims and
abandoned temp files), ``remove`` and ``retry`` set records aside in the store's ``.trash/``
(``retry`` picks the failed ones, so the next run of their command computes them again).
Nothing is deleted: set-aside files keep their content under a timestamped name.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from riembench.store.records import (
    CLAIMS,
    QUARANTINE,
    TRASH,
    DamagedRecord,
    RunStore,
    StoreError,
)

#: a dot-temp file older than this is an abandoned write (a killed process), not one in progress
TEMP_FILE_AGE_S = 3600.0


def _default_root() -> str:
    return os.environ.get("RIEMBENCH_STORE", "runs")


def _cell_label(record: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(record.get("cell", {}).items())
                    if v not in ("", None))


def _matches(record: dict[str, Any], where: list[str]) -> bool:
    """``cell.method=svd``-style filters on a record's (nested) fields, compared as strings."""
    for cond in where:
        field, sep, want = cond.partition("=")
        if not sep:
            raise SystemExit(f"riembench-store: --where takes FIELD=VALUE, got {cond!r}")
        value: Any = record
        for part in field.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if str(value) != want:
            return False
    return True


def _selected(store: RunStore, args: argparse.Namespace) -> list[tuple[Path, dict[str, Any]]]:
    """Records named by key (prefix) or chosen by --table/--where, with their files."""
    chosen = []
    for path in store.record_files(args.table):
        try:
            record = store.read_file(path)
        except (DamagedRecord, FileNotFoundError):
            continue
        if args.keys and not any(path.stem.startswith(k) for k in args.keys):
            continue
        if _matches(record, args.where):
            chosen.append((path, record))
    return chosen


def cmd_list(store: RunStore, args: argparse.Namespace) -> int:
    tables = [args.table] if args.table else store.tables()
    if not tables:
        print(f"store {store.root}: no records")
    for table in tables:
        cells: dict[str, Counter[str]] = defaultdict(Counter)
        revisions: dict[str, set[str]] = defaultdict(set)
        damaged = 0
        for path in store.record_files(table):
            try:
                record = store.read_file(path)
            except DamagedRecord:
                damaged += 1
                continue
            label = _cell_label(record)
            cells[label][record["status"]] += 1
            revisions[label].add(str(record.get("git_rev", "")))
        total = sum(sum(c.values()) for c in cells.values())
        print(f"{table}: {total} record(s) in {len(cells)} cell(s)"
              + (f", {damaged} damaged (run `verify --fix`)" if damaged else ""))
        for label in sorted(cells):
            counts = cells[label]
            n_revs = len(revisions[label])
            mixed = f"  [{n_revs} code revisions]" if n_revs > 1 else ""
            print(f"  {label}: {counts['ok']} ok, {counts['failed']} failed{mixed}")
    claims = store.claims()
    if claims:
        print(f"{len(claims)} claim(s) held (seeds being computed) in {store.root / CLAIMS}")
    for folder in (QUARANTINE, TRASH):
        n = len(list((store.root / folder).glob("*/*.json")))
        if n:
            print(f"{n} file(s) set aside in {store.root / folder}")
    return 0


def cmd_show(store: RunStore, args: argparse.Namespace) -> int:
    found = _selected(store, args)
    if not found:
        print(f"riembench-store: no record matching {' '.join(args.keys)} in {store.root}",
              file=sys.stderr)
        return 1
    for path, record in found:
        print(f"# {path}")
        print(json.dumps(record, indent=1, sort_keys=True))
    return 0


def cmd_verify(store: RunStore, args: argparse.Namespace) -> int:
    problems = 0
    for path in store.record_files(args.table):
        try:
            store.read_file(path)
        except FileNotFoundError:
            continue
        except DamagedRecord as exc:
            problems += 1
            if args.fix:
                moved = store.set_aside(path, QUARANTINE)
                print(f"damaged record {path} ({exc}): moved to {moved}")
            else:
                print(f"damaged record {path}: {exc}")
    for path, owner in store.claims():
        if store.claim_is_stale(owner, path):
            problems += 1
            if args.fix:
                path.unlink(missing_ok=True)
                print(f"stale claim {path} (owner {owner}): removed")
            else:
                print(f"stale claim {path} (owner {owner})")
    now = time.time()
    for table in store.tables():
        for tmp in store.table_dir(table).glob(".*.tmp"):
            if now - tmp.stat().st_mtime > TEMP_FILE_AGE_S:
                problems += 1
                if args.fix:
                    tmp.unlink(missing_ok=True)
                    print(f"abandoned temp file {tmp}: removed")
                else:
                    print(f"abandoned temp file {tmp}")
    n = len(store.record_files(args.table))
    if not problems:
        print(f"store {store.root}: {n} record(s), all readable; no stale claims")
        return 0
    if args.fix:
        print(f"store {store.root}: fixed {problems} problem(s); {n} record(s) remain")
        return 0
    print(f"store {store.root}: {problems} problem(s); `riembench-store verify --fix` moves "
          "damaged records to quarantine (their cells recompute them on the next run)")
    return 1


def _set_aside(store: RunStore, chosen: list[tuple[Path, dict[str, Any]]], reason: str) -> None:
    for path, record in chosen:
        moved = store.set_aside(path, TRASH, reason)
        print(f"{reason}: {path.parent.name}/{path.name} (seed {record['seed']}, "
              f"{_cell_label(record)}) -> {moved}")


def cmd_remove(store: RunStore, args: argparse.Namespace) -> int:
    if not args.keys and not args.where:
        print("riembench-store: remove needs record keys or --where FIELD=VALUE (e.g. "
              "--where cell.method=svd); nothing removed", file=sys.stderr)
        return 2
    chosen = _selected(store, args)
    if not chosen:
        print("riembench-store: no matching record; nothing removed", file=sys.stderr)
        return 1
    _set_aside(store, chosen, "removed")
    print(f"{len(chosen)} record(s) moved to {store.root / TRASH}; the next run of their cells "
          "computes them again")
    return 0


def cmd_retry(store: RunStore, args: argparse.Namespace) -> int:
    chosen = [(p, r) for p, r in _selected(store, args) if r["status"] == "failed"]
    if not chosen:
        print("riembench-store: no failed record matches; nothing to retry")
        return 0
    _set_aside(store, chosen, "retry")
    commands = sorted({r.get("command", "") for _, r in chosen if r.get("command")})
    print(f"{len(chosen)} failed record(s) moved to {store.root / TRASH}; rerun to compute them:")
    for command in commands:
        print(f"  {command}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="riembench-store", description=__doc__.splitlines()[0])
    top.add_argument("--store", default=_default_root(),
                     help="store root (default: $RIEMBENCH_STORE or ./runs)")
    sub = top.add_subparsers(dest="command", required=True)
    for name, helptext in (("list", "records per table and cell"),
                           ("show", "print records by key (a prefix is enough)"),
                           ("verify", "check every record file and claim"),
                           ("remove", "set records aside (moved to .trash/)"),
                           ("retry", "set failed records aside so the next run recomputes them")):
        cmd = sub.add_parser(name, help=helptext)
        cmd.add_argument("--table", help="only this table")
        if name in ("show", "remove", "retry"):
            cmd.add_argument("keys", nargs="*", help="record keys (or prefixes)")
            cmd.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                             help="filter on a record field, e.g. cell.method=svd (repeatable)")
        if name == "verify":
            cmd.add_argument("--fix", action="store_true",
                             help="quarantine damaged records, clear stale claims and temp files")
    return top


COMMANDS = {"list": cmd_list, "show": cmd_show, "verify": cmd_verify, "remove": cmd_remove,
            "retry": cmd_retry}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if not hasattr(args, "keys"):
        args.keys, args.where = [], []
    store = RunStore(args.store)
    if not store.root.is_dir():
        print(f"riembench-store: no store at {store.root} (set --store or RIEMBENCH_STORE)",
              file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.command](store, args)
    except StoreError as exc:
        print(f"riembench-store: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
