"""The ``riembench`` command: Hydra app over the config tree (one cell, a sweep with -m, or a
table plan with table=).

Composing, validating, printing (``--cfg``), dry runs and errors import no torch: the schemas are
torch-free (:mod:`riembench.config`), and a cell's method, data and backbone are imported only
when it runs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

import riembench.config.run  # noqa: F401  (stores the top-level schema, registers the schema source)
from riembench.config.sources import SUFFIX, SchemaSource, store_schemas
from riembench.config.tree import config_dir
from riembench.core.errors import RiembenchError

#: flags for which Hydra only prints or completes, never runs
HELP_FLAGS = ("--help", "-h", "--hydra-help", "--shell-completion", "-sc")
#: the groups whose options are registry entries (schemas are not options)
AXES = ("method", "dataset", "size", "backbone", "protocol")


def check_choices(choices: dict[str, Any]) -> None:
    """A schema (``method=svd_schema``) is what a config inherits, not something to run."""
    for axis in AXES:
        choice = str(choices.get(axis) or "")
        if choice.endswith(SUFFIX):
            known = sorted(p.stem for p in (Path(config_dir()) / axis).glob("*.yaml"))
            raise RiembenchError(f"{axis}={choice} is the schema of {axis} "
                                 f"'{choice.removesuffix(SUFFIX)}', not a {axis} to run; "
                                 f"use one of: {', '.join(known)}")


#: pid of the process that started the command; a job running in another process (a joblib
#: worker) leaves Ctrl-C to it, so an interrupted sweep prints one line, not one per worker
_MAIN_PID = "RIEMBENCH_MAIN_PID"


class CellFailed(CompactHydraException):
    """A cell of a sweep stopped with a user-facing error: Hydra goes on with the other cells of
    the sweep, then prints this message alone (no traceback) and exits 1."""


class StoreSnapshot(Callback):
    """Notes the store and its record count when a run or sweep starts (in the main process),
    so an interrupted command can say what it kept."""

    root: Path | None = None
    before = 0

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._note(config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._note(config)

    @staticmethod
    def _note(config: DictConfig) -> None:
        from riembench.store.records import RunStore

        try:
            StoreSnapshot.root = Path(str(config.store.root)).resolve()
            StoreSnapshot.before = len(RunStore(StoreSnapshot.root).record_files())
        except Exception:  # noqa: BLE001  (a bad setting is reported by the run itself)
            StoreSnapshot.root = None


def interrupted_message() -> str:
    """One line: what an interrupted command kept, and how to go on."""
    from riembench.store.records import RunStore

    root = StoreSnapshot.root
    if root is None:
        return "riembench: interrupted; nothing was recorded"
    total = len(RunStore(root).record_files())
    return (f"riembench: interrupted; kept {total} finished record(s) in store {root} "
            f"({max(total - StoreSnapshot.before, 0)} new); seeds in progress were not recorded "
            "and a rerun of the same command computes only those")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def hydra_main(cfg: DictConfig) -> dict[str, Any]:
    from riembench.harness.summary import cell_report

    if os.environ.get(_MAIN_PID, str(os.getpid())) != str(os.getpid()):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a sweep worker: the main process stops it
    try:
        check_choices(dict(HydraConfig.get().runtime.choices))
        outcome = _dry_run(cfg) if cfg.dry_run else _run(cfg)
    except RiembenchError as exc:
        logging.getLogger("riembench").error("%s", exc)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise CellFailed(f"riembench: {exc}") from None
        raise SystemExit(f"riembench: {exc}") from None
    return cell_report(outcome)  # logged and kept in the output folder by run_summary.RunSummary


def _dry_run(cfg: DictConfig) -> Any:
    """A cell's dry run, without importing what running it needs (torch and the rest)."""
    from riembench.harness.cell import check_cell, resolve_cell
    from riembench.harness.recorder import dry_run, open_store

    cell = resolve_cell(cfg)
    check_cell(cell)
    return dry_run(cell, open_store(cell))


def _run(cfg: DictConfig) -> Any:
    from riembench.harness.runner import run

    return run(cfg)


def main() -> None:
    """``riembench table=<plan> ...`` runs a whole table (riembench.harness.plans); anything else is one
    cell or a Hydra sweep. Ctrl-C is reported as one line (exit status 130)."""
    if any(a in HELP_FLAGS for a in sys.argv[1:]):
        SchemaSource.help_only = True
        hydra_main()
        return
    os.environ[_MAIN_PID] = str(os.getpid())  # workers inherit it; a nested command sets its own
    # the schemas the group files inherit, whatever the search path (a user's
    # hydra.searchpath=[...] replaces the one that would import them)
    store_schemas()
    try:
        from riembench.cli.plan_command import plan_argv

        status = plan_argv(sys.argv[1:])
        if status is not None:
            raise SystemExit(status)
        hydra_main()
    except KeyboardInterrupt:
        _stop_sweep_workers()
        print(interrupted_message(), file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _stop_sweep_workers() -> None:
    """Kill the joblib launcher's worker processes (they ignore Ctrl-C, see ``hydra_main``): joblib's
    abort starts fresh idle workers for reuse, which would outlive the command."""
    reusable = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(reusable, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)




if __name__ == "__main__":
    # run the imported module's main, not this __main__ copy: the Hydra callback notes the store
    # on riembench.cli.main.StoreSnapshot, and the interrupted message must read the same class
    from riembench.cli.main import main as _imported_main

    _imported_main()
