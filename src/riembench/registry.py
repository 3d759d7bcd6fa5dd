"""One registry per sweep axis (method, dataset, backbone).

A new method is one module that registers a class plus one YAML under ``conf/method/``; the
registry also stores the entry's dataclass schema in Hydra's ConfigStore as ``<name>_schema`` in
the axis group, so ``conf/<axis>/<name>.yaml`` can inherit it and typos fail at composition.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import is_dataclass
from typing import Generic, TypeVar

from riembench.errors import UnknownEntry

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, axis: str) -> None:
        self.axis = axis
        self._entries: dict[str, T] = {}
        self._schemas: dict[str, type] = {}

    def register(self, name: str, schema: type | None = None) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.axis} '{name}' registered twice")
            self._entries[name] = obj
            if schema is not None:
                if not is_dataclass(schema):
                    raise TypeError(f"schema for {self.axis} '{name}' must be a dataclass")
                self._schemas[name] = schema
                _store_schema(self.axis, name, schema)
            return obj

        return deco

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "(none)"
            raise UnknownEntry(f"unknown {self.axis} '{name}'; known: {known}") from None

    def schema(self, name: str) -> type | None:
        self.get(name)
        return self._schemas.get(name)

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
