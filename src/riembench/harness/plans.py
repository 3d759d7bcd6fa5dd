"""Table plans: a paper table as config data, run, listed (dry run) and reported as one unit.

A plan (``conf/table/<name>.yaml``, schema :class:`riembench.config.run.PlanConfig`) holds the row
groups of one table; each group is a set of Hydra overrides (sweeps allowed) on the table's
experiment plus the seeds its cells ask for. ``riembench table=<name>`` expands every group into
one ``riembench -m ...`` multirun, so the launcher (joblib here, submitit on a cluster) is
Hydra's own. Values given on the command line with ``table=`` narrow or adjust the plan
(:func:`narrow`); the same expansion lists the cells before any work (dry run) and tells the
reporter which records make up the table, with the command that reproduces each cell.

Why every cell is composed with Hydra's compose API: a cell's record key is computed from its
validated config (:func:`riembench.harness.cell.resolve_cell`), so the plan knows exactly which keys a
table needs, which the store already has, and which records belong to it (ad-hoc runs do not).
"""

from __future__ import annotations

import itertools
import logging
import math
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from riembench.core.errors import RiembenchError

log = logging.getLogger("riembench.harness.plans")

#: top-level keys of the user's overrides that riembench-train also understands (prepare steps)
TRAIN_KEYS = ("backbone", "dataset", "data", "train")


def plan_dir() -> Path:
    from riembench.config.tree import config_dir

    return Path(config_dir()) / "table"


def plan_names() -> list[str]:
    """Every table plan in the config tree (``table=`` accepts exactly these)."""
    return sorted(p.stem for p in plan_dir().glob("*.yaml") if not p.stem.startswith("_"))


def load_plan(name: str) -> DictConfig:
    """The composed, validated plan ``name`` (its variant defaults and interpolations applied)."""
    from riembench.harness.compose_cache import composed

    if name not in plan_names():
        raise RiembenchError(f"unknown table plan '{name}'; known: {', '.join(plan_names())}")
    plan = composed([f"table={name}"]).plan
    OmegaConf.resolve(plan)
    return plan


# --------------------------------------------------------------------------------------------
# overrides: parsing, narrowing, expansion


def _parse(text: str) -> Any:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([text])[0]


def _values(override: Any) -> list[str]:
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def _same(a: str, b: str) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12)
    except ValueError:
        return a == b


def _is_group(key: str) -> bool:
    from riembench.config.tree import config_dir

    return (Path(config_dir()) / key).is_dir()


def narrow(overrides: Sequence[str], user: Sequence[str]) -> list[str] | None:
    """A row group's overrides with the command line's applied, or None if it drops the group.

    - a key the group sweeps (``size.mb=8.36,5.58``) or a config group it chooses
      (``method=riem``): the command line narrows it to the values both have, and a group with
      none left is dropped (``method=svd`` keeps only the groups that run svd);
    - ``seeds`` and any other setting the group fixes: the command line's value replaces it
      (``dataset.n=40`` runs the table at a tiny size, ``seeds=[0,1]`` fewer seeds);
    - a key the group does not set is added to it (``data.root=/data``, ``device=cuda``).
    """
    out = list(overrides)
    for text in user:
        given = _parse(text)
        key = given.key_or_group
        at = next((i for i, o in enumerate(out) if _parse(o).key_or_group == key), None)
        if at is None:
            out.append(text)
            continue
        mine = _parse(out[at])
        if mine.is_sweep_override() or _is_group(key):
            wanted = _values(given)
            keep = [v for v in _values(mine) if any(_same(v, w) for w in wanted)]
            if not keep:
                return None
            out[at] = f"{key}={','.join(keep)}"
        else:
            out[at] = text
    return out


def expand(overrides: Sequence[str]) -> list[list[str]]:
    """The single-valued override lists (one per cell) of a multirun's overrides, in Hydra's
    basic sweeper order (cartesian product, first key outermost)."""
    choices = []
    for text in overrides:
        o = _parse(text)
        key = o.get_key_element()
        choices.append([f"{key}={v}" for v in _values(o)] if o.is_sweep_override() else [text])
    return [list(c) for c in itertools.product(*choices)]


def _quote(args: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


@dataclass
class Step:
    """One command of a plan: a row group's multirun (``riembench -m``) or a prepare step
    (``riembench-train``)."""

    group: str
    program: str  # "riembench" | "riembench-train"
    overrides: list[str]
    hydra: list[str] = field(default_factory=list)

    def args(self) -> list[str]:
        multirun = ["-m"] if self.program == "riembench" else []
        return [*multirun, *self.overrides, *self.hydra]

    def argv(self) -> list[str]:
        module = "riembench.cli.main" if self.program == "riembench" else "riembench.harness.training"
        return [sys.executable, "-m", module, *self.args()]

    def command(self) -> str:
        return _quote([self.program, *self.args()])

    def cells(self) -> list[list[str]]:
        return expand(self.overrides)


def _seeds_override(seeds: Sequence[int]) -> str:
    return "seeds=[" + ",".join(str(int(s)) for s in seeds) + "]"


def steps(plan: DictConfig, user: Sequence[str] = ()) -> tuple[list[Step], list[Step]]:
    """The plan's prepare steps and row-group steps with the command line ``user`` applied
    (``hydra...`` overrides, e.g. a launcher, go to every multirun unchanged)."""
    hydra = [u for u in user if _parse(u).key_or_group.split("/")[0].split(".")[0] == "hydra"]
    rest = [u for u in user if u not in hydra]
    if not any(_parse(u).key_or_group == "hydra/launcher" for u in hydra):
        hydra = [f"hydra.launcher.n_jobs={int(plan.local_jobs)}", *hydra]
    prepare = []
    train_user = [u for u in rest if _parse(u).key_or_group.split(".")[0] in TRAIN_KEYS]
    for name, overrides in plan.prepare.items():
        narrowed = narrow([*plan.overrides, *overrides], train_user)
        if narrowed is not None:
            prepare.append(Step(str(name), "riembench-train", narrowed))
    groups = []
    for name, group in plan.groups.items():
        base = [f"experiment={plan.experiment}", *plan.overrides, *group.overrides,
                _seeds_override(group.seeds)]
        narrowed = narrow(base, rest)
        if narrowed is not None:
            groups.append(Step(str(name), "riembench", narrowed, hydra))
    if not groups:
        raise RiembenchError(f"table plan '{plan.name}': no row group is left after "
                             f"{' '.join(user)}")
    return prepare, groups


# --------------------------------------------------------------------------------------------
# cells: composed configs, keys, records


@dataclass
class Cell:
    """One cell of a plan, composed and keyed: what the runner would do with it."""

    group: str
    overrides: list[str]
    table: str
    method: str
    deterministic: bool
    requested: list[int]
    seeds: list[int]
    keys: dict[int, str]
    version: str
    store_root: str

    def command(self) -> str:
        """The single-cell command that reproduces this cell (all its seeds)."""
        return _quote(["riembench", *self.overrides])


def compose_cells(group_steps: Sequence[Step]) -> list[Cell]:
    """Compose and validate every cell of the row groups (nothing is built or run)."""
    from riembench.config.identity import config_version
    from riembench.harness.cell import resolve_cell
    from riembench.harness.compose_cache import composed

    cells = []
    for step in group_steps:
        for overrides in step.cells():
            try:
                planned = resolve_cell(composed(overrides))
            except RiembenchError as exc:
                raise RiembenchError(f"row group '{step.group}' cell {_quote(overrides)}: "
                                     f"{exc}") from exc
            cells.append(Cell(step.group, overrides, planned.table, planned.method.name,
                              planned.deterministic, planned.requested, planned.seeds,
                              planned.keys, config_version(planned.container),
                              str(planned.container["store"]["root"])))
    return cells


def plan_cells(name: str, user: Sequence[str] = ()) -> list[Cell]:
    """Every cell of table plan ``name`` narrowed by the command line ``user``."""
    return compose_cells(steps(load_plan(name), user)[1])


def _store_index(store_root: str | Path, tables: set[str]) -> tuple[set[str], dict[str, list[float]]]:
    """Record keys present, and the seconds per seed (fit + evaluation) of the ok records of
    each config version: the cost estimate of a cell's missing seeds."""
    from riembench.config.identity import config_version
    from riembench.store.records import RunStore

    keys: set[str] = set()
    by_version: dict[str, list[float]] = {}
    store = RunStore(store_root)
    for table in tables:
        for rec in store.iter_records(table):
            keys.add(f"{table}/{rec.get('key', '')}")
            seconds = float(rec.get("wall_time_s") or 0.0) + \
                float((rec.get("fit") or {}).get("eval_wall_time_s") or 0.0)
            if rec.get("status") != "ok" or seconds <= 0:
                continue
            by_version.setdefault(config_version(rec.get("config") or {}), []).append(seconds)
    return keys, by_version


def dry_run(name: str, user: Sequence[str]) -> str:
    """The text of a plan's dry run: every command, cell and seed, what the store already has,
    and the time the rest would take where records of the same cell say (else "unknown")."""
    plan = load_plan(name)
    prepare, groups = steps(plan, user)
    cells = compose_cells(groups)
    store_root = cells[0].store_root
    keys, by_version = _store_index(store_root, {c.table for c in cells})
    lines = [f"table plan {name}: {plan.description}".rstrip(": "),
             f"store: {Path(store_root).resolve()}"]
    for step in prepare:
        lines.append(f"prepare {step.group}: {step.command()}  (skipped when the checkpoint "
                     "exists)")
    total_known, n_unknown, n_pending, n_done = 0.0, 0, 0, 0
    for step in groups:
        lines.append(f"\n[{step.group}] {step.command()}")
        for cell in (c for c in cells if c.group == step.group):
            done = [s for s in cell.seeds if f"{cell.table}/{cell.keys[s]}" in keys]
            todo = [s for s in cell.seeds if s not in done]
            n_done, n_pending = n_done + len(done), n_pending + len(todo)
            varying = [o for o in cell.overrides if o not in step.overrides or "," in o]
            times = by_version.get(cell.version)
            if not todo:
                cost = "nothing to run"
            elif times:
                seconds = sum(times) / len(times) * len(todo)
                total_known += seconds
                cost = f"~{_duration(seconds)} ({len(times)} earlier record(s))"
            else:
                n_unknown += len(todo)
                cost = "cost unknown"
            seeds = _seed_text(cell)
            lines.append(f"  {' '.join(_short(varying)) or '(the group itself)'}: seeds {seeds}; "
                         f"recorded {_list(done)}; to run {_list(todo)}; {cost}")
    known = f"known cost ~{_duration(total_known)}" if total_known else "no known cost"
    lines.append(f"\n{len(cells)} cell(s) in {len(groups)} row group(s): {n_done} seed(s) "
                 f"recorded, {n_pending} to run; {known}"
                 + (f", {n_unknown} seed(s) of unknown cost" if n_unknown else ""))
    return "\n".join(lines)


def _short(overrides: Sequence[str]) -> list[str]:
    return [o for o in overrides if not o.startswith(("experiment=", "seeds="))]


def _seed_text(cell: Cell) -> str:
    if cell.deterministic and len(cell.requested) > 1:
        return f"{_list(cell.seeds)} (deterministic, of {_list(cell.requested)})"
    return _list(cell.seeds)


def _list(seeds: Sequence[int]) -> str:
    return "[" + ",".join(str(s) for s in seeds) + "]"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --------------------------------------------------------------------------------------------
# running a plan (``riembench table=<name>``)
