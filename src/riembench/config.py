"""Structured (dataclass) configs: the schema Hydra checks every composed config against.

Top-level keys are fixed by :class:`RunConfig`; each group entry (method, dataset, size) gets its
schema from the registry of its axis, and the runner re-validates each group node against it, so
``method.stpes=10`` or ``size.ratio=abc`` stop with an error before any work.

Importing this module does not import torch (``riembench --help`` and shell completion load it);
the size registry is re-exported lazily.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from riembench import help_schemas
from riembench.errors import RiembenchError
from riembench.registry import Registry


@dataclass
class StoreConfig:
    #: where run records go (relative to the working directory unless absolute)
    root: str = "${oc.env:RIEMBENCH_STORE,runs}"


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
        if self.name not in PROTOCOLS:
            raise RiembenchError(f"protocol must be one of {', '.join(PROTOCOLS)}, got '{self.name}'")
        if self.every < 1:
            raise RiembenchError(f"protocol.every must be >= 1, got {self.every}")


@dataclass
class RunConfig:
    method: Any = MISSING
    dataset: Any = MISSING
    size: Any = MISSING
    backbone: Any = field(default_factory=BackboneConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
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
    store: StoreConfig = field(default_factory=StoreConfig)
    data: DataConfig = field(default_factory=DataConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)



ConfigStore.instance().store(name="base_config", node=RunConfig)
for _protocol in PROTOCOLS:  # `protocol=dev_guided` (then protocol.every=50 etc.)
    ConfigStore.instance().store(group="protocol", name=_protocol, node=ProtocolConfig(name=_protocol))
help_schemas.register()  # conf/config.yaml's search path names it
# the user's config folder (~/.config/riembench) is in the search path whether or not it exists
warnings.filterwarnings("ignore", message=r"provider=hydra\.searchpath in main, path=.*riembench "
                        r"is not available")


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
