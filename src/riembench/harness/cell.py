"""One table cell resolved from a composed config, once, into the typed object the rest of a run
reads: its validated method, dataset, size, backbone and protocol settings, the record folder,
the seeds asked for and those that will run, and each seed's record key.

Resolving builds nothing and imports no torch, so a dry run, a table plan and the reporter use
the same rule as the runner to know which records a cell has and which it still needs.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from riembench.config.backbones import BACKBONES, BackboneConfig
from riembench.config.choices import TaskKind
from riembench.config.datasets import DATASETS, DatasetConfig, SyntheticConfig
from riembench.config.identity import run_key, typed_group
from riembench.config.methods import METHODS, MethodConfig
from riembench.config.protocols import PROTOCOLS, ProtocolConfig
from riembench.config.sizes import (
    SIZES,
    BytesSizeConfig,
    MbSizeConfig,
    SizeConfig,
    resolve_bits,
)
from riembench.config.tree import record_tables
from riembench.core.errors import RiembenchError
from riembench.core.validate import check_run_settings


@dataclass
class Cell:
    """Everything a run of one cell reads, decided before anything is built."""

    #: the store folder its records go to
    table: str
    #: the resolved config (plain containers): what each record stores and keys hash
    container: dict[str, Any]
    method: MethodConfig
    dataset: DatasetConfig
    size: SizeConfig
    backbone: BackboneConfig
    protocol: ProtocolConfig
    #: the seeds asked for, and those that run (a deterministic method: the first only)
    requested: list[int]
    seeds: list[int]
    keys: dict[int, str]
    device: str
    threads: int | None
    dry_run: bool
    force: bool
    store_root: str
    claim_stale_s: float
    #: the command line that started the run, for its records
    command: str

    @property
    def deterministic(self) -> bool:
        return self.method.deterministic

    def summary(self) -> dict[str, Any]:
        """The cell as records and tables name it (``record.cell``)."""
        if isinstance(self.dataset, SyntheticConfig):
            return {"method": self.method.name, "variant": self.method.label,
                    "protocol": self.protocol.name, "family": self.dataset.family,
                    "n": self.dataset.n, "ratio": self.size.matrix_label()}
        from riembench.backbones.registry import backbone_label

        return {"backbone": backbone_label(self.backbone), "dataset": self.dataset.name,
                "method": self.method.name, "variant": self.method.label,
                "protocol": self.protocol.name, "paper_method": self.method.paper_name(),
                "size": self.size.describe() if self.method.needs_size else ""}


def seeds_to_run(requested: list[int], deterministic: bool) -> list[int]:
    """The one rule for how many seeds a cell runs: every requested seed, except that a
    deterministic method (the seed does not change its result: original, quant, dfq, svd, ...)
    runs only the first, and its record says so."""
    return requested[:1] if deterministic else list(requested)


def known_tables() -> list[str]:
    """Record folders a run may write to (the plans' and experiments'); a name outside this
    list, e.g. ``../x``, would file records outside the store."""
    return record_tables()


def resolved_container(cfg: DictConfig) -> dict[str, Any]:
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert isinstance(container, dict)
    container.pop("hydra", None)
    return cast(dict[str, Any], container)  # a composed config's keys are all strings


def resolve_cell(cfg: DictConfig) -> Cell:
    """Validate every group and decide table, seeds and keys; builds no data, model or fit."""
    check_run_settings(cfg)
    method: MethodConfig = typed_group(cfg.method, METHODS)
    dataset: DatasetConfig = typed_group(cfg.dataset, DATASETS)
    size: SizeConfig = typed_group(cfg.size, SIZES)
    backbone: BackboneConfig = typed_group(cfg.backbone, BACKBONES)
    protocol: ProtocolConfig = typed_group(cfg.protocol, PROTOCOLS)
    resolve_bits(size, method)
    container = resolved_container(cfg)
    if isinstance(size, MbSizeConfig | BytesSizeConfig) and size.bits is not None:
        container["size"]["bits"] = size.bits  # resolved from the method
    table = cfg.table or dataset.table
    if table not in known_tables():
        raise RiembenchError(f"table={table!r} is not a known table; known: "
                             + ", ".join(known_tables()))
    requested = list(cfg.seeds) if cfg.seeds is not None else [int(cfg.seed)]
    if not requested:
        raise RiembenchError("seeds is empty: give at least one seed")
    if len(set(requested)) != len(requested):
        raise RiembenchError(f"seeds has duplicates: {requested}")
    if not cfg.progress:
        method.quiet()  # top-level progress=false silences every bar (sweeps)
    if not method.needs_size:
        # an unsized method (original, quant, dfq, prune) gives the same result under every
        # size setting: one identity, so a sweep over sizes runs it once, not once per size
        container["size"] = {"name": "unused"}
    seeds = seeds_to_run(requested, method.deterministic)
    return Cell(table=table, container=container, method=method, dataset=dataset, size=size,
                backbone=backbone, protocol=protocol, requested=requested, seeds=seeds,
                keys={s: run_key(container, s) for s in seeds}, device=str(cfg.device),
                threads=cfg.threads, dry_run=bool(cfg.dry_run), force=bool(cfg.force),
                store_root=str(container["store"]["root"]),
                claim_stale_s=float(container["store"]["claim_stale_s"]),
                command=" ".join(shlex.quote(a) for a in sys.argv))


def check_cell(cell: Cell) -> None:
    """Refuse a cell whose parts do not fit together (before any claim or work): a method that
    does not take the dataset's task, a network task without a backbone, a protocol the
    method cannot follow."""
    kind = cell.dataset.kind
    if kind not in cell.method.tasks:
        takers = [n for n in METHODS.names() if kind in _schema(n).tasks]
        what = "approximate matrices" if kind == TaskKind.matrix else "compress networks"
        raise RiembenchError(f"method '{cell.method.name}' does not {what}; "
                             f"{kind} methods: " + ", ".join(takers))
    if kind == TaskKind.network and cell.backbone.name == "none":
        known = ", ".join(n for n in BACKBONES.names() if n != "none")
        raise RiembenchError(f"dataset '{cell.dataset.name}' needs a network: set backbone=... "
                             f"(known: {known})")
    PROTOCOLS.get(cell.protocol.name).check(cell)


def _schema(name: str) -> type[MethodConfig]:
    schema = METHODS.schema(name)
    assert schema is not None and issubclass(schema, MethodConfig)
    return schema
