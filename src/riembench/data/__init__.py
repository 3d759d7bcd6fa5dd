"""Dataset registry. Each entry builds what one table's runs evaluate on."""

from riembench.data import synthetic  # noqa: F401  (registers "synthetic")
from riembench.data.registry import DATASETS  # noqa: F401
