"""The ``riembench`` command: Hydra app over riembench/conf/ (one cell, or a sweep with -m / experiment=)."""

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

import riembench.backbones  # registers backbones and their schemas
import riembench.config  # stores the schemas
import riembench.data  # registers datasets and their schemas
import riembench.methods  # noqa: F401  (registers methods and their schemas)
from riembench.errors import RiembenchError


def config_dir() -> str:
    """The config tree shipped in the package (riembench/conf), or RIEMBENCH_CONF (a tree kept
    elsewhere)."""
    return os.environ.get("RIEMBENCH_CONF", str(Path(__file__).resolve().parent / "conf"))


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
        from riembench.store import RunStore

        try:
            StoreSnapshot.root = Path(str(config.store.root)).resolve()
            StoreSnapshot.before = len(RunStore(StoreSnapshot.root).record_files())
        except Exception:  # noqa: BLE001  (a bad setting is reported by the run itself)
            StoreSnapshot.root = None


def interrupted_message() -> str:
    """One line: what an interrupted command kept, and how to go on."""
    from riembench.store import RunStore

    root = StoreSnapshot.root
    if root is None:
        return "riembench: interrupted; nothing was recorded"
    total = len(RunStore(root).record_files())
    return (f"riembench: interrupted; kept {total} finished record(s) in store {root} "
            f"({max(total - StoreSnapshot.before, 0)} new); seeds in progress were not recorded "
            "and a rerun of the same command computes only those")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def _app(cfg: DictConfig) -> None:
    from riembench.runner import run

    if os.environ.get(_MAIN_PID, str(os.getpid())) != str(os.getpid()):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a sweep worker: the main process stops it
    try:
        outcome = run(cfg)
    except RiembenchError as exc:
        logging.getLogger("riembench").error("%s", exc)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            raise CellFailed(f"riembench: {exc}") from None
        raise SystemExit(f"riembench: {exc}") from None
    logging.getLogger("riembench").info("%s: wrote %d record(s), skipped %d, failed %d",
                                        outcome.table, len(outcome.written), len(outcome.skipped),
                                        len(outcome.failed))


def main() -> None:
    """The command: the Hydra app, with Ctrl-C reported as one line (exit status 130)."""
    os.environ[_MAIN_PID] = str(os.getpid())  # workers inherit it; a nested command sets its own
    try:
        _app()
    except KeyboardInterrupt:
        _stop_sweep_workers()
        print(interrupted_message(), file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _stop_sweep_workers() -> None:
    """Kill the joblib launcher's worker processes (they ignore Ctrl-C, see ``_app``): joblib's
    abort starts fresh idle workers for reuse, which would outlive the command."""
    reusable = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(reusable, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=True)


if __name__ == "__main__":
    # run the imported module's main, not this __main__ copy: the Hydra callback notes the store
    # on riembench.cli.StoreSnapshot, and the interrupted message must read the same class
    from riembench.cli import main as _imported_main

    _imported_main()
