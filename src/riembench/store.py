"""The run store: one immutable JSON record per (resolved config, seed).

Layout: ``<root>/<table>/<key>.json`` where ``key`` hashes the identity of the run (the resolved
config minus the schema fields marked as not changing the result, such as paths, logging,
parallelism and device choice: :func:`identity`).
Records are written atomically (temp file + rename), never overwritten, so a sweep killed at
any point loses nothing finished and a rerun skips what exists. Failed seeds are records too
(``status="failed"`` with the reason), so a diverged seed is visible in the table's seed count.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from riembench.atomic import atomic_write

_TRACKED_PACKAGES = ("riembench", "torch", "numpy", "scikit-learn", "hydra-core", "omegaconf",
                     "timm", "transformers", "pandas", "wandb")


@dataclass
class RunRecord:
    table: str
    seed: int
    method: str
    dataset: str
    #: coordinates of the table cell this run belongs to (e.g. family, n, ratio for table 5)
    cell: dict[str, Any]
    config: dict[str, Any]
    status: str = "ok"  # "ok" | "failed"
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float = 0.0
    device: str = "cpu"
    key: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    git_rev: str = ""
    host: str = ""
    created_at: str = ""
    command: str = ""
    #: where the run was tracked (W&B run id, project, group, local run folder); not identity
    tracker: dict[str, Any] = field(default_factory=dict)
    #: the method's result does not depend on the seed: one seed was run for the whole cell
    deterministic: bool = False
    #: the seeds the cell asked for (a deterministic method ran only the first)
    seeds_requested: list[int] = field(default_factory=list)


def identity(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The part of a resolved config that determines a run's result, with its single seed.

    Which settings count is declared on the schemas (:mod:`riembench.config`): a field with
    ``metadata=NOT_IDENTITY`` (threads, progress, device, store, W&B, data paths, chunk sizes,
    caches ...) never changes the key; every other field of the run, its method, dataset, size
    and backbone does.
    """
    from riembench.config import identity_view

    ident = identity_view({k: v for k, v in config.items() if k != "hydra"})
    ident["seed"] = int(seed)
    return ident


def run_key(config: dict[str, Any], seed: int) -> str:
    blob = json.dumps(identity(config, seed), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def git_revision() -> str:
    """Revision of the riembench checkout, with ``+dirty`` when it has uncommitted changes."""
    repo = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (rev or "unknown") + ("+dirty" if dirty else "")


class RunStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def path(self, table: str, key: str) -> Path:
        return self.root / table / f"{key}.json"

    def has(self, table: str, key: str) -> bool:
        return self.path(table, key).is_file()

    def write(self, record: RunRecord) -> Path:
        """Atomically write a new record; an existing record with the same key is kept as is."""
        if not record.key:
            record.key = run_key(record.config, record.seed)
        record.versions = record.versions or package_versions()
        record.git_rev = record.git_rev or git_revision()
        record.host = record.host or platform.node()
        record.created_at = record.created_at or datetime.now(UTC).isoformat(timespec="seconds")
        dest = self.path(record.table, record.key)
        if dest.exists():
            return dest
        blob = json.dumps(asdict(record), indent=1, sort_keys=True, default=_jsonable).encode()
        return atomic_write(dest, lambda fh: fh.write(blob))

    def iter_records(self, table: str | None = None) -> Iterator[dict[str, Any]]:
        """Every finished record (of one table, or all); half-written temp files are skipped."""
        pattern = f"{table}/*.json" if table else "*/*.json"
        for path in sorted(self.root.glob(pattern)):
            if path.name.startswith("."):  # a write in progress (or killed mid-write)
                continue
            with open(path) as fh:
                yield json.load(fh)

    def load(self, table: str | None = None) -> Any:
        """Records as a flat pandas DataFrame (nested dicts become ``metrics.test_error`` etc.)."""
        import pandas as pd

        rows = list(self.iter_records(table))
        if not rows:
            return pd.DataFrame()
        return pd.json_normalize(rows)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
