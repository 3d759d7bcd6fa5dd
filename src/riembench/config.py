"""Structured (dataclass) configs: the schema Hydra checks every composed config against.

Top-level keys are fixed by :class:`RunConfig`; each group entry (method, dataset, size) gets its
schema from the registry of its axis, and the runner re-validates each group node against it, so
``method.stpes=10`` or ``size.ratio=abc`` stop with an error before any work.

Importing this module does not import torch (``riembench --help`` and shell completion load it);
the size registry is re-exported lazily.
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
import warnings
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from riembench import help_schemas
from riembench.errors import RiembenchError
from riembench.registry import Registry
from riembench.validate import check_choice

#: field metadata for a setting that never changes a run's result (paths, logging, parallelism,
#: device choice): :func:`identity_view` leaves it out of the run's key, so changing it reuses
#: the records. Every other field counts. Use as ``field(default=..., metadata=NOT_IDENTITY)``.
NOT_IDENTITY = {"identity": False}

#: the registry of each group-valued top-level field (module, attribute): the schema of a group
#: node depends on its ``name`` (``method: riem`` is validated by RieM's dataclass)
GROUP_REGISTRIES = {"method": ("riembench.methods", "METHODS"),
                    "dataset": ("riembench.data", "DATASETS"),
                    "size": ("riembench.size", "SIZES"),
                    "backbone": ("riembench.backbones", "BACKBONES")}


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
    WANDB_ENTITY, WANDB_DIR, WANDB_TAGS, ...) wins over the value here (riembench.tracking)."""

    enabled: bool = True
    mode: str = "offline"
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
class BackboneConfig:
    name: str = "none"


PROTOCOLS = ("strict", "dev_guided")


@dataclass
class ProtocolConfig:
    """What a fit may see (docs/protocols.md). ``strict``: the weights only; each fit keeps its
    lowest weight error and dev accuracy only ranks seeds. ``dev_guided`` (the paper's): every
    ``every`` fit steps each seed's network is rebuilt as stored and scored on the dev split,
    and each seed keeps its best-dev state; ``stop_at_original`` stops a seed once its dev score
    reaches the original model's. Neither ever sees the test split."""

    name: str = "strict"
    every: int = 100
    stop_at_original: bool = False

    def __post_init__(self) -> None:
        check_choice(self.name, "protocol", PROTOCOLS)
        if self.every < 1:
            raise RiembenchError(f"protocol.every must be >= 1, got {self.every}")


@dataclass
class RunConfig:
    method: Any = MISSING
    dataset: Any = MISSING
    size: Any = MISSING
    backbone: Any = field(default_factory=BackboneConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
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
    #: instead of this one cell (riembench.plan)
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
for _protocol in PROTOCOLS:  # `protocol=dev_guided` (then protocol.every=50 etc.)
    ConfigStore.instance().store(group="protocol", name=_protocol, node=ProtocolConfig(name=_protocol))
help_schemas.register()  # conf/config.yaml's search path names it
# the user's config folder (~/.config/riembench) is in the search path whether or not it exists
warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=.*riembench "
                        r"is not available")


def register_plan_schema() -> None:
    """The schema the plans in conf/table/ inherit; stored with the registries' schemas
    (riembench.help_schemas), so help and completion do not list it as a table."""
    ConfigStore.instance().store(group="table", name="plan_schema", node=PlanConfig, package="plan")


def typed_group(node: DictConfig, registry: Registry[Any]) -> Any:
    """Validate one group node against its registered schema and return the dataclass instance."""
    name = node.get("name")
    if name is None:
        raise RiembenchError(f"{registry.axis} config has no 'name'")
    registry.get(name)  # UnknownEntry lists the known names
    schema = registry.schema(name)
    if schema is None:
        return node
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), node)
    except Exception as exc:  # omegaconf's ConfigKeyError / ValidationError
        raise RiembenchError(f"invalid {registry.axis} config for '{name}': {exc}") from exc
    return OmegaConf.to_object(merged)


def __getattr__(name: str) -> Any:
    if name == "SIZES":  # the size axis registry, imported on use (it needs torch)
        from riembench.size import SIZES

        return SIZES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
def counts_for_identity(f: dataclasses.Field[Any]) -> bool:
    """Whether a schema field can change a run's result (every field unless marked)."""
    return bool(f.metadata.get("identity", True))


@cache
def group_registry(axis: str) -> Registry[Any]:
    module, attr = GROUP_REGISTRIES[axis]
    return getattr(importlib.import_module(module), attr)


def group_schema(axis: str, name: Any) -> type | None:
    """The registered schema of one group entry, None when unknown (an old record's method)."""
    registry = group_registry(axis)
    return registry.schema(name) if isinstance(name, str) and name in registry else None


@cache
def _field_schemas(schema: type) -> dict[str, tuple[dataclasses.Field[Any], type | None]]:
    """Each field of a dataclass with the dataclass type of its value, if it has one."""
    hints = typing.get_type_hints(schema)
    out = {}
    for f in dataclasses.fields(schema):
        hint = hints.get(f.name)
        args = typing.get_args(hint) if isinstance(hint, types.UnionType) or \
            typing.get_origin(hint) is typing.Union else (hint,)
        nested = next((a for a in args if isinstance(a, type) and dataclasses.is_dataclass(a)), None)
        out[f.name] = (f, nested)
    return out


def identity_view(value: Any, schema: type | None = RunConfig, axis: str | None = None) -> Any:
    """The part of a resolved config (plain dicts) that can change the result, found by walking
    the schemas: fields marked :data:`NOT_IDENTITY` are dropped at any depth; a group node
    (method, dataset, size, backbone) is walked with its registered entry's schema. Keys a
    schema does not know (a record written before a field was removed) are kept: when in doubt
    a setting counts.
    """
    if axis is not None and isinstance(value, dict):
        schema = group_schema(axis, value.get("name"))
    if schema is None or not isinstance(value, dict):
        return value
    known = _field_schemas(schema)
    out = {}
    for key, sub in value.items():
        f, nested = known.get(key, (None, None))
        if f is not None and not counts_for_identity(f):
            continue
        sub_axis = key if schema is RunConfig and key in GROUP_REGISTRIES else None
        out[key] = identity_view(sub, nested, sub_axis)
    return out
