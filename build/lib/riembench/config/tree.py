"""Where the Hydra config tree is: ``RIEMBENCH_CONF`` if set, else the package's own
``riembench/conf`` (a wheel, where setup.py maps the checkout's top-level ``conf/``), else the
top-level ``conf/`` of the checkout this module runs from (an editable install)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path


def config_dir() -> str:
    return os.environ.get("RIEMBENCH_CONF") or _package_tree()


@cache
def _package_tree() -> str:
    package = Path(__file__).resolve().parents[1]  # riembench/
    installed = package / "conf"
    if (installed / "config.yaml").is_file():
        return str(installed)
    return str(package.parents[1] / "conf")  # src/riembench -> the checkout's conf/
