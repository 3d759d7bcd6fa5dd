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

import contextlib
import functools
import itertools
import logging
import math
import shlex
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
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


def record_tables() -> list[str]:
    """The store folders runs may write to: each plan's ``record_table`` and each experiment's
    ``table`` (an experiment run by its own recipe, e.g. equal_bytes, has no plan)."""
    from riembench.config.tree import config_dir

    return list(_record_tables(config_dir()))


@functools.cache
def _record_tables(root: str) -> tuple[str, ...]:
    names = set()
    for folder, key in (("table", "record_table"), ("experiment", "table")):
        for path in (Path(root) / folder).glob("*.yaml"):
            node = yaml.safe_load(path.read_text()) or {}
            if isinstance(node, dict) and node.get(key):
                names.add(str(node[key]))
    return tuple(sorted(names))


@contextlib.contextmanager
def hydra_context() -> Iterator[None]:
    """Hydra's compose API over the package's config tree, inside a running app or not."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from riembench.config.tree import config_dir

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        yield


def load_plan(name: str) -> DictConfig:
    """The composed, validated plan ``name`` (its variant defaults and interpolations applied)."""
    from hydra import compose

    if name not in plan_names():
        raise RiembenchError(f"unknown table plan '{name}'; known: {', '.join(plan_names())}")
    with hydra_context():
        cfg = compose("config", overrides=[f"table={name}"])
    plan = cfg.plan
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
    from hydra import compose

    from riembench.config.identity import config_version
    from riembench.harness.cell import resolve_cell

    cells = []
    with hydra_context():
        for step in group_steps:
            for overrides in step.cells():
                try:
                    cfg = compose("config", overrides=overrides)
                    planned = resolve_cell(cfg)
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


def plan_argv(argv: Sequence[str]) -> int | None:
    """``riembench table=<name> [overrides...]``: run or list that table plan and return the
    exit status; None when the command line names no plan (an ordinary run or sweep).

    Handled before Hydra parses the command line, so sweeps (``method=svd,riem``) narrow the
    plan instead of making the command a multirun of plans, and ``hydra/launcher=...`` applies
    to the plan's cells, not to the plan itself.
    """
    named = [a for a in argv if a.startswith("table=")]
    if not named:
        return None
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    try:
        if len(named) > 1:
            raise RiembenchError("give one table=<plan>")
        flags = [a for a in argv if a.startswith("-") and a not in ("-m", "--multirun")]
        if flags:
            raise RiembenchError(f"a table plan takes overrides only, not {' '.join(flags)}")
        name = named[0].partition("=")[2]
        user = [a for a in argv if a not in named and a not in ("-m", "--multirun")]
        dry = [a for a in user if _parse(a).key_or_group == "dry_run"]
        user = [a for a in user if a not in dry]
        is_dry = bool(dry) and str(_parse(dry[-1]).value()).lower() == "true"
        if is_dry:
            print(dry_run(name, user))
            return 0
        return run_plan(name, user)
    except RiembenchError as exc:
        print(f"riembench: {exc}", file=sys.stderr)
        return 2


def run_plan(name: str, user: Sequence[str]) -> int:
    """Run every prepare step and row group of table plan ``name`` (each as its own command,
    stopping at the first that fails), then write its report into the plan's ``out`` folder."""
    plan = load_plan(name)
    prepare, groups = steps(plan, user)
    cells = compose_cells(groups)  # every cell validates before the first one runs
    for step in [*prepare, *groups]:
        log.info("%s [%s]: %s", name, step.group, step.command())
        done = subprocess.run(step.argv(), check=False)
        if done.returncode != 0:
            log.error("%s [%s] failed (exit %d): %s", name, step.group, done.returncode,
                      step.command())
            return done.returncode
    return report(plan, cells, str(plan.out))


def report(plan: DictConfig, cells: Sequence[Cell], out: str) -> int:
    from riembench.report import TABLES, NoRecords, write_table

    if plan.record_table not in TABLES:
        log.info("%s: no report for table '%s'", plan.name, plan.record_table)
        return 0
    try:
        paths = write_table(str(plan.record_table), cells[0].store_root, out, cells=cells)
    except NoRecords as exc:
        log.error("%s", exc)
        return 1
    log.info("%s: wrote %s", plan.name, ", ".join(str(p) for p in paths))
    return 0
