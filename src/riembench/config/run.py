"""The top-level run schema Hydra checks every composed config against, with the settings of the
store, W&B and the data root, the protocol, and a table plan.

Top-level keys are fixed by :class:`RunConfig`; each group entry (method, dataset, size,
backbone, protocol) gets its schema from the registry of its axis, and the runner re-validates
each group node against it (:func:`riembench.config.identity.typed_group`), so
``method.stpes=10`` or ``size.ratio=abc`` stop with an error before any work.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from riembench.config.backbones import BackboneConfig
from riembench.config.choices import WandbMode
from riembench.config.protocols import ProtocolConfig

#: field metadata for a setting that never changes a run's result (paths, logging, parallelism,
#: device choice): :func:`riembench.config.identity.identity_view` leaves it out of the run's
#: key, so changing it reuses the records. Every other field counts.
NOT_IDENTITY = {"identity": False}


@dataclass
class StoreConfig:
    #: where run records go (relative to the working directory unless absolute)
    root: str = "${oc.env:RIEMBENCH_STORE,runs}"
    #: a claim on a seed from another host (whose process cannot be checked) is taken over after
    #: this many seconds; a claim of a dead process on this host is taken over at once
    claim_stale_s: float = 86400.0


@dataclass
class WandbConfig:
    """W&B settings; each standard environment variable (WANDB_MODE, WANDB_PROJECT,
    WANDB_ENTITY, WANDB_DIR, WANDB_TAGS, ...) wins over the value here (riembench.harness.tracking)."""

    enabled: bool = True
    mode: WandbMode = WandbMode.offline
    project: str = "riembench"
    entity: str | None = None
    #: extra tags on every run (table/method/backbone/size/protocol tags are added anyway)
    tags: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    """Where datasets live on this machine (not part of a run's identity: same data, any path)."""

    #: root holding MNIST/, cifar-100-python/, imagenet/, coco/ ... (see docs/data.md)
    root: str = "${oc.env:RIEMBENCH_DATA,data}"
    #: DataLoader workers for evaluation and training
    num_workers: int = 0
    #: evaluation batch size
    batch_size: int = 256


@dataclass
class RunConfig:
    method: Any = MISSING
    dataset: Any = MISSING
    size: Any = MISSING
    backbone: Any = field(default_factory=BackboneConfig)
    protocol: Any = field(default_factory=ProtocolConfig)
    #: which paper table's folder of the store the records go to (a known table); None takes
    #: the dataset's table. Where a record is filed, not what it holds: not part of its key
    table: str | None = field(default=None, metadata=NOT_IDENTITY)
    seed: int = 0
    #: run several seeds in one process (batched by the fitting engine); None means [seed].
    #: A deterministic method runs only the first (the record says so)
    seeds: list[int] | None = field(default=None, metadata=NOT_IDENTITY)
    #: "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
    device: str = field(default="auto", metadata=NOT_IDENTITY)
    #: torch CPU threads per job (None: torch's default); set to cores / joblib jobs in sweeps
    threads: int | None = field(default=None, metadata=NOT_IDENTITY)
    progress: bool = field(default=True, metadata=NOT_IDENTITY)
    #: list the seeds this cell (or, with a table plan, every cell of the table) would run and
    #: which are already recorded, then stop before building anything
    dry_run: bool = field(default=False, metadata=NOT_IDENTITY)
    #: recompute the cell's seeds even if recorded (the old records move to the store's .trash/)
    force: bool = field(default=False, metadata=NOT_IDENTITY)
    #: a table plan (conf/table/<name>.yaml, chosen by ``table=<name>``): its row groups are run
    #: instead of this one cell (riembench.harness.plans)
    plan: Any = field(default=None, metadata=NOT_IDENTITY)
    store: StoreConfig = field(default_factory=StoreConfig, metadata=NOT_IDENTITY)
    data: DataConfig = field(default_factory=DataConfig, metadata=NOT_IDENTITY)
    wandb: WandbConfig = field(default_factory=WandbConfig, metadata=NOT_IDENTITY)


@dataclass
class RowGroup:
    """One row group of a table plan: Hydra overrides (sweeps allowed: ``size.mb=8.36,5.58``)
    added to the plan's experiment, and the seeds each of its cells asks for."""

    overrides: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class PlanConfig:
    """A paper table as data (conf/table/<name>.yaml): what ``riembench table=<name>`` runs.

    Each row group becomes one Hydra multirun ``riembench -m experiment=<experiment>
    <plan overrides> <group overrides> seeds=[...]``; ``prepare`` steps (riembench-train
    overrides, e.g. table 1's backbones) run first.
    """

    name: str = MISSING
    #: the store folder its records go to, and the report that renders them
    record_table: str = MISSING
    experiment: str = MISSING
    description: str = ""
    #: added to every row group (a full-size variant: ``dataset=mnist``)
    overrides: list[str] = field(default_factory=list)
    prepare: dict[str, list[str]] = field(default_factory=dict)
    groups: dict[str, RowGroup] = field(default_factory=dict)
    #: values the overrides interpolate (``${plan.vars.r9_head_hidden}``), so a variant changes
    #: one value instead of repeating the groups
    vars: dict[str, Any] = field(default_factory=dict)
    #: cells run in parallel by the default (joblib) launcher; a launcher chosen on the command
    #: line (``hydra/launcher=slurm_gpu``) brings its own parallelism instead
    local_jobs: int = 1
    #: where the report of a plan run is written (the committed tables/ only by `make tables`)
    out: str = "${oc.env:RIEMBENCH_TABLES,riembench-tables}"


ConfigStore.instance().store(name="base_config", node=RunConfig)
# the user's config folder (~/.config/riembench) is in the search path whether or not it exists
warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=.*riembench "
                        r"is not available")


def store_plan_schema() -> None:
    """The schema the plans in conf/table/ inherit (stored with the axes' schemas, so help and
    completion do not list it as a table)."""
    ConfigStore.instance().store(group="table", name="plan_schema", node=PlanConfig, package="plan")
