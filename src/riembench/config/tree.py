"""Where the Hydra config tree is: ``RIEMBENCH_CONF`` if set, else the package's own
``riembench/conf`` (a wheel, where setup.py maps the checkout's top-level ``conf/``), else the
top-level ``conf/`` of the checkout this module runs from (an editable install)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import yaml


def config_dir() -> str:
    return os.environ.get("RIEMBENCH_CONF") or _package_tree()


@cache
def _package_tree() -> str:
    package = Path(__file__).resolve().parents[1]  # riembench/
    installed = package / "conf"
    if (installed / "config.yaml").is_file():
        return str(installed)
    return str(package.parents[1] / "conf")  # src/riembench -> the checkout's conf/


def record_tables() -> list[str]:
    """The store folders runs may write to: each plan's ``record_table`` and each experiment's
    ``table`` (an experiment run by its own recipe, e.g. equal_bytes, has no plan)."""
    return list(_record_tables(config_dir()))


@cache
def _record_tables(root: str) -> tuple[str, ...]:
    names = set()
    for folder, key in (("table", "record_table"), ("experiment", "table")):
        for path in (Path(root) / folder).glob("*.yaml"):
            node = yaml.safe_load(path.read_text()) or {}
            if isinstance(node, dict) and node.get(key):
                names.add(str(node[key]))
    return tuple(sorted(names))
