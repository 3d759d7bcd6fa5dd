"""Composed configs of table-plan cells, cached on disk.

Hydra takes about a tenth of a second to compose one config, and a plan has dozens of cells that
its dry run, its run and the reporter compose again each time. A cell's composition depends only
on its overrides, the config tree, the local settings files and the schemas' code, so it is kept
(unresolved, as JSON: ``${oc.env:...}`` values are read when the cell is resolved) under a key that hashes
all of them; any change to one of them is a new key. The cache is an optimisation only: a file
that cannot be read or written is composed again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import riembench
from riembench.config.tree import config_dir
from riembench.core.atomic import atomic_write


def cache_dir() -> Path:
    return Path(os.environ.get("RIEMBENCH_CACHE", "~/.cache/riembench")).expanduser() / "compose"


def composed(overrides: Sequence[str]) -> DictConfig:
    """``hydra.compose("config", overrides)`` inside an initialized Hydra context, or its copy
    from an earlier composition of the same inputs."""
    path = cache_dir() / f"{_key(list(overrides))}.json"
    try:
        cached = OmegaConf.create(json.loads(path.read_text()))
    except Exception:  # noqa: BLE001  (missing or damaged: compose it again)
        cached = None
    if isinstance(cached, DictConfig):
        return cached
    from hydra import compose

    with hydra_context():
        cfg = compose("config", overrides=list(overrides))
    try:
        plain = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
        text = json.dumps(plain).encode()
        atomic_write(path, lambda fh: fh.write(text))
    except OSError:
        pass
    return cfg


@contextlib.contextmanager
def hydra_context() -> Iterator[None]:
    """Hydra's compose API over the package's config tree, inside a running app or not."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from riembench.config.tree import config_dir

    if GlobalHydra.instance().is_initialized():
        yield
        return
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        yield


def _key(overrides: list[str]) -> str:
    return hashlib.sha1(json.dumps([_inputs_digest(), overrides]).encode()).hexdigest()


def _inputs_digest() -> str:
    """What every composition reads besides its overrides: the config tree, the local settings
    folders of the search path, and the schemas' code (their defaults)."""
    home = os.environ.get("RIEMBENCH_CONFIG_HOME") or os.path.join(
        os.environ.get("HOME", "."), ".config", "riembench")
    return _digest(config_dir(), home, riembench.__version__)


@cache
def _digest(tree: str, home: str, version: str) -> str:
    h = hashlib.sha1(version.encode())
    schemas = Path(__file__).resolve().parents[1] / "config"
    for root, pattern in ((Path(tree), "*.yaml"), (Path(home), "*.yaml"), (schemas, "*.py")):
        for path in sorted(root.rglob(pattern)) if root.is_dir() else []:
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()
