"""The ``riembench`` command: Hydra app over riembench/conf/ (one cell, or a sweep with -m / experiment=)."""

from __future__ import annotations

import logging
import os
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


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    from riembench.runner import run

    if cfg.get("plan") is not None:  # table=<name>: the table plan's row groups, not one cell
        from riembench.plan import run_plan

        raise SystemExit(run_plan(cfg))
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
