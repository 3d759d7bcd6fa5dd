"""One registry per sweep axis (method, dataset, backbone, size, init): name -> schema and
implementation.

An entry is declared where its schema is (``riembench.config``), with the implementation as an
import path (``"riembench.compression.methods.svd:SvdMethod"``) that is imported on first
:meth:`Registry.get`. Composing, validating and keying a run therefore never imports torch; only
building the run does. Declaring also stores the schema in Hydra's ConfigStore as
``<name>_schema`` in the axis group, so ``conf/<axis>/<name>.yaml`` inherits it and a typo fails
at composition.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, is_dataclass
from typing import Any, Generic, TypeVar

from riembench.core.errors import UnknownEntry

T = TypeVar("T")


@dataclass
class _Entry:
    schema: type | None
    impl: str | None
    obj: Any = None


class Registry(Generic[T]):
    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._entries: dict[str, _Entry] = {}

    def declare(self, name: str, schema: type | None, impl: str | None = None) -> None:
        """Declare ``name`` with its schema dataclass and the import path ``"module:attr"`` of its
        implementation (None: the entry has none, e.g. a size setting)."""
        if name in self._entries:
            raise ValueError(f"{self.axis} '{name}' registered twice")
        if schema is not None and not is_dataclass(schema):
            raise TypeError(f"schema for {self.axis} '{name}' must be a dataclass")
        self._entries[name] = _Entry(schema, impl)

    def register(self, name: str, schema: type | None = None) -> Callable[[T], T]:
        """Declare ``name`` with an implementation object already at hand (a plug-in or a
        test's stand-in); the built-in entries are declared with :meth:`declare`."""
        def deco(obj: T) -> T:
            self.declare(name, schema)
            self._entries[name].obj = obj
            if schema is not None:
                _store_schema(self.axis, name, schema)
            return obj

        return deco

    def _entry(self, name: str) -> _Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownEntry(f"unknown {self.axis} '{name}'; known: {known}") from None

    def get(self, name: str) -> T:
        """The implementation of ``name``, imported on first use."""
        entry = self._entry(name)
        if entry.obj is None and entry.impl is not None:
            module, _, attr = entry.impl.partition(":")
            entry.obj = getattr(importlib.import_module(module), attr)
        if entry.obj is None:
            raise UnknownEntry(f"{self.axis} '{name}' has no implementation")
        return entry.obj

    def schema(self, name: str) -> type | None:
        return self._entry(name).schema

    def store_schemas(self) -> None:
        """Put every entry's schema into Hydra's ConfigStore as ``<axis>/<name>_schema``, the
        name ``conf/<axis>/<name>.yaml`` inherits (riembench.config.sources does, before Hydra
        composes)."""
        for name, entry in self._entries.items():
            if entry.schema is not None:
                _store_schema(self.axis, name, entry.schema)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries


def _store_schema(axis: str, name: str, schema: type) -> None:
    try:
        from hydra.core.config_store import ConfigStore
    except ImportError:  # registry usable without Hydra (e.g. in a notebook)
        return
    ConfigStore.instance().store(group=axis, name=f"{name}_schema", node=schema)
