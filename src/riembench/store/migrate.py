"""``python -m riembench.store.migrate STORE [--apply]``: bring records written before keys came from
the schemas up to date, so reruns skip them and reports read their determinism.

What changes, per record: its file name and ``key`` become :func:`riembench.store.records.run_key` of
its own config (the settings marked as not changing a result no longer count), and a record
without the ``deterministic`` / ``seeds_requested`` facts gets them (from the method's
``deterministic`` flag for the record's config, and the config's ``seeds``); ``migrated`` says
what was done. Two records that now have the same key are one result computed twice (e.g. with
different ``threads``): the newest keeps the key, the other moves to ``<store>/.superseded/``,
so no seed is counted twice and nothing is deleted. Without ``--apply`` it only says what it
would do.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from riembench.config.identity import run_key
from riembench.core.atomic import atomic_write


@dataclass
class Migration:
    rekeyed: list[str] = field(default_factory=list)
    flagged: list[str] = field(default_factory=list)
    superseded: list[str] = field(default_factory=list)
    unchanged: int = 0


def method_is_deterministic(method: dict[str, Any]) -> bool:
    """The method's own flag for this config (an instance may refine its class's, e.g. a
    randomized eigen-solver); the class flag when an old config no longer validates."""
    from omegaconf import OmegaConf

    from riembench.config.identity import typed_group
    from riembench.config.methods import METHODS

    name = method.get("name")
    if name not in METHODS:
        return False
    assert isinstance(name, str)  # a registry's names are strings
    try:
        settings = typed_group(OmegaConf.create(method), METHODS)
    except Exception:  # noqa: BLE001  (an old config: fields since renamed or removed)
        schema = METHODS.schema(name)
        settings = schema() if schema is not None else None
    return bool(settings is not None and settings.deterministic)


def _add_protocol(rec: dict[str, Any], config: dict[str, Any]) -> bool:
    """A record made before protocols existed was fitted on the weights alone: the ``strict``
    protocol. Writes that into its config and cell (so its key is what the same run gets
    now); returns whether anything was added."""
    if "protocol" in config:
        return False
    from dataclasses import asdict

    from riembench.config.protocols import ProtocolConfig

    config["protocol"] = asdict(ProtocolConfig())
    rec["config"] = config
    if isinstance(rec.get("cell"), dict):
        rec["cell"].setdefault("protocol", "strict")
    return True


def _add_bytes_overhead(config: dict[str, Any]) -> bool:
    """A ``size=bytes`` record made before ``size.overhead`` existed budgeted the numbers only:
    ``overhead: unbudgeted``. Returns whether it was added."""
    size = config.get("size")
    if not isinstance(size, dict) or size.get("name") != "bytes" or "overhead" in size:
        return False
    size["overhead"] = "unbudgeted"
    return True


def migrate(root: str | Path, apply: bool = False) -> Migration:
    root = Path(root)
    out = Migration()
    loaded = []
    for path in sorted(root.glob("*/*.json")):
        if path.name.startswith("."):
            continue
        loaded.append((path, json.loads(path.read_text())))
    # newest first: it keeps a key that two records now share
    loaded.sort(key=lambda item: str(item[1].get("created_at", "")), reverse=True)
    taken: set[Path] = set()
    now = datetime.now(UTC).isoformat(timespec="seconds")
    writes: list[tuple[Path, Path, dict[str, Any]]] = []
    moves: list[Path] = []
    for path, rec in loaded:
        config = rec.get("config") or {}
        protocol_added = _add_protocol(rec, config)
        overhead_added = _add_bytes_overhead(config)
        key = run_key(config, int(rec["seed"]))
        dest = path.with_name(f"{key}.json")
        if dest in taken:
            moves.append(path)
            continue
        taken.add(dest)
        changes: dict[str, Any] = {}
        if rec.get("key") != key or path != dest:
            changes["from_key"] = rec.get("key") or path.stem
        if "deterministic" not in rec:
            rec["deterministic"] = method_is_deterministic(config.get("method") or {})
            changes["deterministic_from"] = "the method's flag for the record's config"
        if protocol_added:
            changes["protocol_from"] = "records made before protocols existed were all strict"
        if overhead_added:
            changes["overhead_from"] = ("size=bytes records made before size.overhead existed "
                                        "budgeted the numbers only")
        if "seeds_requested" not in rec:
            rec["seeds_requested"] = list(config.get("seeds") or [rec["seed"]])
        if not changes:
            out.unchanged += 1
            continue
        (out.rekeyed if "from_key" in changes else out.flagged).append(str(path))
        rec["key"] = key
        rec["migrated"] = {**changes, "at": now}
        writes.append((path, dest, rec))
    out.superseded = [str(p) for p in moves]
    if not apply:
        return out
    for path in moves:  # before any write, while every file still holds its own record
        target = root / ".superseded" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    for _, dest, rec in writes:
        _write_record(dest, rec)
    for path, dest, _ in writes:
        if path != dest and path not in taken and path.exists():
            path.unlink()
    return out


def _write_record(dest: Path, rec: dict[str, Any]) -> None:
    """Write ``rec`` to ``dest`` as indented JSON with sorted keys, atomically."""
    blob = json.dumps(rec, indent=1, sort_keys=True).encode()
    atomic_write(dest, lambda fh: fh.write(blob))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m riembench.store.migrate", description=__doc__)
    ap.add_argument("store", help="run store root (e.g. runs, tables/records)")
    ap.add_argument("--apply", action="store_true", help="do it (default: only say what)")
    args = ap.parse_args(argv)
    if not Path(args.store).is_dir():
        print(f"error: no store at {Path(args.store).resolve()}", file=sys.stderr)
        return 1
    m = migrate(args.store, args.apply)
    verb = "" if args.apply else "would be "
    print(f"{len(m.rekeyed)} record(s) {verb}re-keyed, {len(m.flagged)} {verb}given their "
          f"determinism, {len(m.superseded)} {verb}moved to .superseded/ (the same result as a "
          f"newer record), {m.unchanged} already current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
