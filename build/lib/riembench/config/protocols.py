"""What a fit may see (docs/protocols.md): the protocol schemas and their registry (the
protocols themselves: ``riembench.harness.protocols``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from riembench.core.errors import RiembenchError
from riembench.core.registry import Registry


@dataclass
class ProtocolConfig:
    """``strict``: the weights only; each fit keeps its lowest weight error and dev accuracy only
    ranks seeds. ``dev_guided`` (the paper's): every ``every`` fit steps each seed's network is
    rebuilt as stored and scored on the dev split, and each seed keeps its best-dev state;
    ``stop_at_original`` stops a seed once its dev score reaches the original model's. Neither
    ever sees the test split. (``every`` and ``stop_at_original`` are dev_guided's settings;
    strict carries them unused, so that its records keep their keys.)"""

    name: str = "strict"
    every: int = 100
    stop_at_original: bool = False

    def __post_init__(self) -> None:
        if self.every < 1:
            raise RiembenchError(f"protocol.every must be >= 1, got {self.every}")


#: name -> schema and the protocol's implementation
PROTOCOLS: Registry[Any] = Registry("protocol")
for _name in ("strict", "dev_guided"):
    PROTOCOLS.declare(_name, ProtocolConfig, f"riembench.harness.protocols:{_name.upper()}")
