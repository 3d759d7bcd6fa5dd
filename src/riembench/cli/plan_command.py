"""``riembench table=<plan> [overrides...]``: run or list a table plan (riembench.harness.plans),
then write its report (riembench.report)."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence

from omegaconf import DictConfig

from riembench.core.errors import RiembenchError
from riembench.harness.plans import Cell, _parse, compose_cells, dry_run, load_plan, steps

log = logging.getLogger("riembench.plan")


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
    from riembench.report.registry import TABLES
    from riembench.report.tables import NoRecords, write_table

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
