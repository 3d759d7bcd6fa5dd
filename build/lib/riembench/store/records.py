"""The run store: one immutable JSON record per (resolved config, seed).

Layout: ``<root>/<table>/<key>.json`` where ``key`` hashes the identity of the run (the resolved
config minus the schema fields marked as not changing the result, such as paths, logging,
parallelism and device choice: :func:`identity`).
Records are created complete (temp file, fsync, hard link) and never overwritten, so a sweep
killed at any point loses nothing finished and a rerun skips what exists. Failed seeds are
records too (``status="failed"`` with the reason), so a diverged seed is visible in the table's
seed count. Beside the tables: ``.claims/`` (who is computing which seed now), ``.quarantine/``
(damaged records moved aside, recomputed by the next run) and ``.trash/`` (records set aside on
request: ``force=true``, ``riembench-store retry`` / ``remove``). See docs/store.md.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import platform
import re
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from riembench.config.identity import run_key
from riembench.core.errors import RiembenchError

log = logging.getLogger("riembench.store.records")

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
    """Code revision records carry: the riembench checkout's commit (``+dirty`` with uncommitted
    changes), or ``riembench==<version>`` for an installed package that is not a checkout."""
    repo = Path(__file__).resolve().parents[3]
    rev = dirty = ""
    if (repo / ".git").exists():  # not an enclosing repository of a site-packages install
        try:
            rev = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
                                 capture_output=True, text=True, timeout=10,
                                 check=False).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                    "--untracked-files=no"], capture_output=True, text=True,
                                   timeout=10, check=False).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            rev = ""
    if rev:
        return rev + ("+dirty" if dirty else "")
    try:
        return f"riembench=={metadata.version('riembench')}"
    except metadata.PackageNotFoundError:
        return "unknown"


class StoreError(RiembenchError):
    """A store operation that cannot proceed: a name that would leave the store, or a record
    that cannot be written (full disk, no permission). The message names the store and file."""


#: table names and record keys become path segments: letters, digits, ``_ - .``, not leading dot
_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
#: keys every record has, with their JSON types (what ``has``/``iter_records`` call well-formed)
_REQUIRED = {"table": str, "seed": int, "key": str, "status": str, "config": dict, "cell": dict,
             "metrics": dict}
#: where records are set aside instead of deleted: damaged ones, and ones retired on request
QUARANTINE, TRASH, CLAIMS = ".quarantine", ".trash", ".claims"
#: a claim whose owner cannot be checked (another host) is stale after this many seconds
DEFAULT_CLAIM_STALE_S = 24 * 3600.0


class DamagedRecord(ValueError):
    """A record file that is not a well-formed record (truncated, garbage, wrong schema)."""


@dataclass
class Claim:
    """An exclusive right to compute one (table, key): the claim file exists while it is held."""

    path: Path
    owner: dict[str, Any]

    def release(self) -> None:
        """Remove the claim file if it is still ours (a recovered stale claim is someone else's)."""
        try:
            current = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return
        if current.get("token") == self.owner["token"]:
            self.path.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunStore:
    """Records under ``root``, with the guarantees the module docstring promises.

    Every name that comes from a config (table, key) is checked to be one path segment, so no
    setting can write outside ``root``. Writes create the record with no-overwrite semantics
    (hard link of a complete temp file), so two sweeps can never replace each other's record;
    claims make them not compute the same seed twice in the first place.
    """

    def __init__(self, root: str | os.PathLike[str],
                 claim_stale_s: float = DEFAULT_CLAIM_STALE_S) -> None:
        self.root = Path(root)
        self.claim_stale_s = float(claim_stale_s)

    # ---------------------------------------------------------------------------- paths

    def _segment(self, value: str, what: str) -> str:
        value = str(value)
        if not _SEGMENT.match(value) or value in (".", ".."):
            raise StoreError(f"invalid {what} {value!r} for store {self.root}: use letters, "
                             "digits, '_', '-', '.' (not leading), so the record stays inside "
                             "the store")
        return value

    def table_dir(self, table: str) -> Path:
        return self.root / self._segment(table, "table name")

    def path(self, table: str, key: str) -> Path:
        path = self.table_dir(table) / f"{self._segment(key, 'record key')}.json"
        # belt and braces: a symlinked table folder must not lead out of the store either
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):
            raise StoreError(f"record path {path} resolves outside store {root}")
        return path

    def tables(self) -> list[str]:
        """Table folders in the store (the dot-folders for claims and set-aside files excluded)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _SEGMENT.match(p.name))

    # ---------------------------------------------------------------------------- reading

    @staticmethod
    def read_file(path: Path) -> dict[str, Any]:
        """One record file, checked; raises :class:`DamagedRecord` saying what is wrong."""
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            raise
        except OSError as exc:  # permissions, I/O error: as unusable as a garbled file
            raise DamagedRecord(f"unreadable ({exc.strerror or exc})") from None
        try:
            data = json.loads(raw)
        except UnicodeDecodeError as exc:
            raise DamagedRecord(f"not text ({exc.reason})") from None
        except json.JSONDecodeError as exc:
            raise DamagedRecord(f"not valid JSON ({exc.msg} at line {exc.lineno}, column "
                                f"{exc.colno}): truncated or overwritten") from None
        if not isinstance(data, dict):
            raise DamagedRecord(f"a JSON {type(data).__name__}, not a record object")
        for name, kind in _REQUIRED.items():
            if name not in data:
                raise DamagedRecord(f"missing field '{name}'")
            if not isinstance(data[name], kind) or (kind is int and isinstance(data[name], bool)):
                raise DamagedRecord(f"field '{name}' is {type(data[name]).__name__}, not "
                                    f"{kind.__name__}")
        if data["status"] not in ("ok", "failed"):
            raise DamagedRecord(f"status '{data['status']}' is neither ok nor failed")
        if data["key"] != path.stem:
            raise DamagedRecord(f"its key {data['key']!r} does not match its file name")
        return data

    def read(self, table: str, key: str, quarantine: bool = True) -> dict[str, Any] | None:
        """The record, or None when there is none or it is damaged (then moved to quarantine,
        so the next run recomputes it instead of trusting it)."""
        path = self.path(table, key)
        try:
            return self.read_file(path)
        except FileNotFoundError:
            return None
        except DamagedRecord as exc:
            if quarantine:
                try:
                    moved = self.set_aside(path, QUARANTINE)
                except OSError as err:
                    raise StoreError(f"damaged record {path} ({exc}) cannot be moved to "
                                     f"{self.root / QUARANTINE}: {err.strerror or err}") from err
                log.warning("damaged record %s (%s): moved to %s; it will be recomputed",
                            path, exc, moved)
            return None

    def has(self, table: str, key: str) -> bool:
        """Whether a readable record exists; a damaged one counts as missing (and moves aside)."""
        return self.read(table, key) is not None

    def record_files(self, table: str | None = None) -> list[Path]:
        tables = [table] if table else self.tables()
        files: list[Path] = []
        for name in tables:
            folder = self.table_dir(name)
            if folder.is_dir():  # dot-files are writes in progress (or killed mid-write)
                files += sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))
        return files

    def iter_records(self, table: str | None = None) -> Iterator[dict[str, Any]]:
        """Every well-formed record (of one table, or all). A damaged file is skipped with a
        warning naming it; the next run of its cell moves it to quarantine and recomputes it."""
        for path in self.record_files(table):
            try:
                yield self.read_file(path)
            except FileNotFoundError:  # removed while we listed
                continue
            except DamagedRecord as exc:
                log.warning("skipping damaged record %s: %s (rerun its cell to recompute it, or "
                            "`riembench-store verify --fix` to move it aside)", path, exc)

    def load(self, table: str | None = None) -> Any:
        """Records as a flat pandas DataFrame (nested dicts become ``metrics.test_error`` etc.)."""
        import pandas as pd

        rows = list(self.iter_records(table))
        if not rows:
            return pd.DataFrame()
        return pd.json_normalize(rows)

    # ---------------------------------------------------------------------------- writing

    def write(self, record: RunRecord) -> Path:
        """Create a new record; an existing record with the same key is kept as is."""
        return self.create(record)[0]

    def create(self, record: RunRecord) -> tuple[Path, bool]:
        """Create the record file unless one exists: ``(path, created)``.

        The record is written completely to a dot-temp file, fsynced, then hard-linked to its
        name: the link fails if the name exists, so a record is never replaced, and a reader
        never sees a partial file. Any OS error (full disk, read-only, permissions) becomes one
        :class:`StoreError` naming the store and the file, with the temp file removed.
        """
        if not record.key:
            record.key = run_key(record.config, record.seed)
        record.versions = record.versions or package_versions()
        record.git_rev = record.git_rev or git_revision()
        record.host = record.host or platform.node()
        record.created_at = record.created_at or datetime.now(UTC).isoformat(timespec="seconds")
        dest = self.path(record.table, record.key)
        if self.read(record.table, record.key) is not None:
            return dest, False
        blob = json.dumps(asdict(record), indent=1, sort_keys=True, default=_jsonable).encode()
        tmp: str | None = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(tmp, dest)
            except FileExistsError:
                return dest, False
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                    raise
                _exclusive_create(dest, blob)  # a filesystem without hard links
        except FileExistsError:
            return dest, False
        except OSError as exc:
            raise StoreError(f"cannot write record {dest} in store {self.root}: "
                             f"{exc.strerror or exc} (errno {exc.errno}); nothing partial was "
                             "left behind") from exc
        finally:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
        return dest, True

    def set_aside(self, path: Path, folder: str, reason: str = "") -> Path:
        """Move a record file to ``<root>/<folder>/<table>/`` (timestamped, never deleted)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        suffix = f".{reason}" if reason else ""
        dest = self.root / folder / path.parent.name / f"{path.stem}.{stamp}{suffix}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dest)
        return dest

    # ---------------------------------------------------------------------------- claims

    def claim_path(self, table: str, key: str) -> Path:
        return self.root / CLAIMS / self._segment(table, "table name") / \
            f"{self._segment(key, 'record key')}.claim"

    def claim(self, table: str, key: str) -> Claim | None:
        """Take the exclusive claim to compute (table, key), or None while another live owner
        holds it. A stale claim (its process is dead on this host, or it is older than
        ``claim_stale_s``) is recovered."""
        path = self.claim_path(table, key)
        owner = {"host": platform.node(), "pid": os.getpid(), "created": time.time(),
                 "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                 "token": uuid.uuid4().hex}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create claim folder {path.parent} in store {self.root}: "
                             f"{exc.strerror or exc}") from exc
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.claim_owner(path)
                if held is not None and not self.claim_is_stale(held):
                    return None
                if not self._break_claim(path, held):
                    return None
                continue
            except OSError as exc:
                raise StoreError(f"cannot create claim {path} in store {self.root}: "
                                 f"{exc.strerror or exc}") from exc
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump(owner, fh)
            except OSError as exc:
                path.unlink(missing_ok=True)
                raise StoreError(f"cannot write claim {path} in store {self.root}: "
                                 f"{exc.strerror or exc}") from exc
            return Claim(path, owner)
        return None

    @staticmethod
    def claim_owner(path: Path) -> dict[str, Any] | None:
        """The claim's owner, or None if it is unreadable (being written, or damaged)."""
        try:
            owner = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def claim_is_stale(self, owner: dict[str, Any] | None, path: Path | None = None) -> bool:
        if owner is None:  # unreadable: stale once it is older than a write could take
            try:
                return path is not None and time.time() - path.stat().st_mtime > 60
            except OSError:
                return True
        if owner.get("host") == platform.node() and not _pid_alive(int(owner.get("pid", 0))):
            return True
        return time.time() - float(owner.get("created", 0)) > self.claim_stale_s

    def _break_claim(self, path: Path, judged: dict[str, Any] | None) -> bool:
        """Remove a stale claim, making sure it is the one judged stale (not a fresh one another
        process created since); True if the caller may try to claim again."""
        if judged is None and not self.claim_is_stale(None, path):
            return False
        aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return True  # someone else broke it: race for the fresh claim
        if self.claim_owner(aside) != judged:  # we took a fresh claim: give it back
            try:
                os.link(aside, path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        log.warning("recovered stale claim %s (owner %s)", path, judged or "unreadable")
        return True

    def claims(self) -> list[tuple[Path, dict[str, Any] | None]]:
        folder = self.root / CLAIMS
        return [(p, self.claim_owner(p)) for p in sorted(folder.glob("*/*.claim"))]


def _exclusive_create(dest: Path, blob: bytes) -> None:
    fd = os.open(dest, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")
