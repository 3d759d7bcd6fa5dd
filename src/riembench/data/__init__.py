"""Dataset registry. Each entry builds what one table's runs evaluate on."""

from riembench.data import (
    coco,  # noqa: F401  (registers "coco")
    images,  # noqa: F401  (registers "digits", "mnist", "cifar100", "imagenet")
    synthetic,  # noqa: F401  (registers "synthetic")
)
from riembench.data.registry import DATASETS  # noqa: F401
