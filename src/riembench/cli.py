"""The ``riembench`` command: Hydra app over riembench/conf/ (one cell, or a sweep with -m / experiment=).

Importing this module does not import torch: ``riembench --help`` and shell completion answer in
about a second. The method, dataset and backbone modules (and their schemas) are imported when
Hydra builds its config repository (:mod:`riembench.help_schemas`), except for help and completion
(:mod:`riembench.help_schemas`).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

import riembench.config  # noqa: F401  (stores the top-level schema, registers the help source)
from riembench.errors import RiembenchError
from riembench.help_schemas import SUFFIX, SchemaStandIns

#: flags for which Hydra only prints or completes, never runs
HELP_FLAGS = ("--help", "-h", "--hydra-help", "--shell-completion", "-sc")
#: the groups whose options are registry entries (schemas are not options)
AXES = ("method", "dataset", "size", "backbone")


def config_dir() -> str:
    """The config tree shipped in the package (riembench/conf), or RIEMBENCH_CONF (a tree kept
    elsewhere)."""
    return os.environ.get("RIEMBENCH_CONF", str(Path(__file__).resolve().parent / "conf"))


def check_choices(choices: dict[str, Any]) -> None:
    """A schema (``method=svd_schema``) is what a config inherits, not something to run."""
    for axis in AXES:
        choice = str(choices.get(axis) or "")
        if choice.endswith(SUFFIX):
            known = sorted(p.stem for p in (Path(config_dir()) / axis).glob("*.yaml"))
            raise RiembenchError(f"{axis}={choice} is the schema of {axis} "
                                 f"'{choice.removesuffix(SUFFIX)}', not a {axis} to run; "
                                 f"use one of: {', '.join(known)}")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def hydra_main(cfg: DictConfig) -> dict[str, Any]:
    from hydra.core.hydra_config import HydraConfig

    from riembench.run_summary import cell_report
    from riembench.runner import run

    try:
        check_choices(dict(HydraConfig.get().runtime.choices))
        outcome = run(cfg)
    except RiembenchError as exc:
        logging.getLogger("riembench").error("%s", exc)
        raise SystemExit(f"riembench: {exc}") from None
    return cell_report(outcome)  # logged and kept in the output folder by run_summary.RunSummary


def main() -> None:
    """``riembench table=<plan> ...`` runs a whole table (riembench.plan); anything else is one
    cell or a Hydra sweep."""
    if any(a in HELP_FLAGS for a in sys.argv[1:]):
        SchemaStandIns.active = True
    else:
        from riembench.plan import plan_argv

        status = plan_argv(sys.argv[1:])
        if status is not None:
            raise SystemExit(status)
    hydra_main()


if __name__ == "__main__":
    main()
