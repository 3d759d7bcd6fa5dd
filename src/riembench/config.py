"""Structured (dataclass) configs: the schema Hydra checks every composed config against.

Top-level keys are fixed by :class:`RunConfig`; each group entry (method, dataset, size) gets its
schema from the registry of its axis, and the runner re-validates each group node against it, so
``method.stpes=10`` or ``size.ratio=abc`` stop with an error before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from riembench.errors import RiembenchError
from riembench.registry import Registry
from riembench.size import SIZES  # noqa: F401  (re-exported: the size axis registry)


@dataclass
class StoreConfig:
    #: where run records go (relative to the working directory unless absolute)
    root: str = "${oc.env:RIEMBENCH_STORE,runs}"
    #: a claim on a seed from another host (whose process cannot be checked) is taken over after
    #: this many seconds; a claim of a dead process on this host is taken over at once
    claim_stale_s: float = 86400.0


@dataclass
class WandbConfig:
    enabled: bool = True
    #: used unless the WANDB_MODE environment variable is set (it wins, as W&B users expect)
    mode: str = "offline"
    project: str = "riembench"
    entity: str | None = None
    dir: str = "${oc.env:RIEMBENCH_WANDB_DIR,.}"


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


@dataclass
class RunConfig:
    method: Any = MISSING
    dataset: Any = MISSING
    size: Any = MISSING
    backbone: Any = field(default_factory=BackboneConfig)
    #: which paper table the records belong to; None takes the dataset's table
    table: str | None = None
    seed: int = 0
    #: run several seeds in one process (batched by the fitting engine); None means [seed]
    seeds: list[int] | None = None
    #: "auto" (cuda if present), "cpu", "cuda", "cuda:1", ...
    device: str = "auto"
    #: torch CPU threads per job (None: torch's default); set to cores / joblib jobs in sweeps
    threads: int | None = None
    progress: bool = True
    #: recompute the cell's seeds even if recorded (the old records move to the store's .trash/)
    force: bool = False
    store: StoreConfig = field(default_factory=StoreConfig)
    data: DataConfig = field(default_factory=DataConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)



ConfigStore.instance().store(name="base_config", node=RunConfig)
ConfigStore.instance().store(group="backbone", name="none_schema", node=BackboneConfig)


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
