"""The ``riembench`` command: Hydra app over riembench/conf/ (one cell, or a sweep with -m / experiment=)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
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


def main() -> None:
    """``riembench table=<plan> ...`` runs a whole table (riembench.plan); anything else is one
    cell or a Hydra sweep."""
    from riembench.plan import plan_argv

    status = plan_argv(sys.argv[1:])
    if status is not None:
        raise SystemExit(status)
    app()


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def app(cfg: DictConfig) -> None:
    from riembench.runner import run

    try:
        outcome = run(cfg)
    except RiembenchError as exc:
        logging.getLogger("riembench").error("%s", exc)
        raise SystemExit(f"riembench: {exc}") from None
    logging.getLogger("riembench").info("%s: wrote %d record(s), skipped %d, failed %d",
                                        outcome.table, len(outcome.written), len(outcome.skipped),
                                        len(outcome.failed))


if __name__ == "__main__":
    main()
