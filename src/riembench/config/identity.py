"""A run's identity: each group node validated against its registered schema, and the part of a
resolved config that can change a result (what a record's key hashes)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from functools import cache
from typing import Any

from omegaconf import DictConfig, OmegaConf

from riembench.config.backbones import BACKBONES
from riembench.config.datasets import DATASETS
from riembench.config.methods import METHODS
from riembench.config.protocols import PROTOCOLS
from riembench.config.run import RunConfig
from riembench.config.sizes import SIZES
from riembench.core.errors import RiembenchError
from riembench.core.registry import Registry

#: the registry of each group-valued top-level field: the schema of a group node depends on its
#: ``name`` (``method: riem`` is validated by RieM's dataclass)
GROUP_REGISTRIES: dict[str, Registry[Any]] = {"method": METHODS, "dataset": DATASETS,
                                              "size": SIZES, "backbone": BACKBONES,
                                              "protocol": PROTOCOLS}


def typed_group(node: DictConfig, registry: Registry[Any]) -> Any:
    """Validate one group node against its registered schema and return the dataclass instance."""
    name = node.get("name")
    if name is None:
        raise RiembenchError(f"{registry.axis} config has no 'name'")
    schema = registry.schema(name)  # UnknownEntry lists the known names
    if schema is None:
        return node
    try:
        merged = OmegaConf.merge(_template(schema), node)
    except Exception as exc:  # omegaconf's ConfigKeyError / ValidationError
        raise RiembenchError(f"invalid {registry.axis} config for '{name}': {exc}") from exc
    return OmegaConf.to_object(merged)


@cache
def _template(schema: type) -> DictConfig:
    """The schema as a structured config (built once: merging copies it)."""
    return OmegaConf.structured(schema)


def counts_for_identity(f: dataclasses.Field[Any]) -> bool:
    """Whether a schema field can change a run's result (every field unless marked)."""
    return bool(f.metadata.get("identity", True))


def group_schema(axis: str, name: Any) -> type | None:
    """The registered schema of one group entry, None when unknown (an old record's method)."""
    registry = GROUP_REGISTRIES[axis]
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
    the schemas: fields marked ``NOT_IDENTITY`` are dropped at any depth; a group node
    (method, dataset, size, backbone, protocol) is walked with its registered entry's schema.
    Keys a schema does not know (a record written before a field was removed) are kept: when in
    doubt a setting counts.
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


def identity(config: dict[str, Any], seed: int) -> dict[str, Any]:
    """The part of a resolved config that determines a run's result, with its single seed.

    Which settings count is declared on the schemas (:mod:`riembench.config`): a field with
    ``metadata=NOT_IDENTITY`` (threads, progress, device, store, W&B, data paths, chunk sizes,
    caches ...) never changes the key; every other field of the run, its method, dataset, size,
    backbone and protocol does.
    """
    ident = identity_view({k: v for k, v in config.items() if k != "hydra"})
    ident["seed"] = int(seed)
    return ident


def run_key(config: dict[str, Any], seed: int) -> str:
    """A record's key: the hash of its identity."""
    blob = json.dumps(identity(config, seed), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def config_version(config: dict[str, Any]) -> str:
    """Hash of a record's identity without its seed: records of one cell made with different
    settings (e.g. before and after a default changed) get different versions."""
    ident = identity(config, 0)
    ident.pop("seed")
    return hashlib.sha1(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:12]
