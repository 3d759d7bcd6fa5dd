"""W&B logging of runs: offline by default, ``WANDB_MODE`` / ``WANDB_PROJECT`` respected.

One W&B run per runner job (a table cell with its seeds), grouped by table, so a sweep shows as
one group in the W&B UI with a run per cell and a row per seed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Protocol


class Logger(Protocol):
    def log(self, data: dict[str, Any]) -> None: ...
    def summary(self, data: dict[str, Any]) -> None: ...


class _NullLogger:
    def log(self, data: dict[str, Any]) -> None:
        pass

    def summary(self, data: dict[str, Any]) -> None:
        pass


class _WandbLogger:
    def __init__(self, run: Any) -> None:
        self.run = run

    def log(self, data: dict[str, Any]) -> None:
        self.run.log(data)

    def summary(self, data: dict[str, Any]) -> None:
        self.run.summary.update(data)


def resolve_mode(enabled: bool, mode: str) -> str:
    if not enabled:
        return "disabled"
    return os.environ.get("WANDB_MODE", mode)


@contextlib.contextmanager
def wandb_run(*, enabled: bool, mode: str, project: str, entity: str | None, directory: str,
              group: str, name: str, job_type: str, config: dict[str, Any]) -> Iterator[Logger]:
    mode = resolve_mode(enabled, mode)
    if mode == "disabled":
        yield _NullLogger()
        return
    import wandb

    os.makedirs(directory, exist_ok=True)
    run = wandb.init(mode=mode, project=os.environ.get("WANDB_PROJECT", project),
                     entity=os.environ.get("WANDB_ENTITY", entity), dir=directory, group=group,
                     name=name, job_type=job_type, config=config, reinit="finish_previous")
    try:
        yield _WandbLogger(run)
    finally:
        run.finish()
