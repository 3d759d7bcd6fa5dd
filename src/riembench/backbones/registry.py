"""The backbone registry and what every backbone entry shares.

A backbone is a config schema (registered in Hydra's ConfigStore as ``backbone/<name>_schema``)
plus a :class:`BackboneEntry` saying how to build the architecture and where its weights come
from. The loaders (:mod:`riembench.backbones.checkpoints`) dispatch on ``entry.source``, so a new
backbone is one module and one YAML, like a new method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig
from torch import nn

from riembench.config.backbones import BACKBONES
from riembench.config.identity import typed_group
from riembench.core.errors import RiembenchError
from riembench.data.preprocess import EvalPreprocessing


@dataclass(frozen=True)
class TaskShape:
    """The three facts about a dataset that an architecture depends on."""

    num_classes: int
    in_channels: int
    image_size: int

    @classmethod
    def of(cls, task: Any) -> TaskShape:
        """Read the shape from anything ImageTask-like (duck-typed, so tests can fake a task)."""
        return cls(int(task.num_classes), int(task.in_channels), int(task.image_size))


@dataclass(frozen=True)
class BackboneEntry:
    """How one backbone is built and where its weights come from.

    ``source`` is ``"none"`` (no network: table 5's bare matrices), ``"trained"`` (trained here by
    ``riembench-train`` and cached), or the library whose pretrained ImageNet weights it loads
    from a local cache: ``"torchvision"``, ``"pytorchcv"``, ``"timm"``. ``fc_params`` is the
    closed-form count of the Linear layers' parameters, kept beside the module so tests can check
    one against the other. ``preprocessing`` gives the library's own evaluation stack for the
    config (None: the dataset's). ``label`` names the backbone in tables when the config name
    alone does not say which weights (``pytorchcv``, ``timm``).
    """

    source: str
    build: Callable[[Any, TaskShape], nn.Module] | None = None
    fc_params: Callable[[Any, TaskShape], int] | None = None
    preprocessing: Callable[[Any], EvalPreprocessing] | None = None
    label: Callable[[Any], str] | None = None




#: table 5's synthetic matrices have no network
NO_NETWORK = BackboneEntry(source="none")


def linear_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """Every ``nn.Linear`` with its qualified name: the FC layers table 1 compresses."""
    return [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]


def linear_param_count(model: nn.Module) -> int:
    """Parameters (weights and biases) of all Linear layers: the paper's 'No. params (FC layer)'."""
    return sum(p.numel() for _, mod in linear_layers(model) for p in mod.parameters())


def as_typed(cfg: Any) -> Any:
    """The schema dataclass for a backbone node (a DictConfig from Hydra is validated first)."""
    if isinstance(cfg, DictConfig):
        return typed_group(cfg, BACKBONES)
    return cfg


def build_backbone(cfg: Any, shape: TaskShape) -> nn.Module:
    """The randomly initialised architecture of ``cfg.name`` for a task of this shape."""
    cfg = as_typed(cfg)
    entry = BACKBONES.get(cfg.name)
    if entry.build is None:
        raise RiembenchError(f"backbone '{cfg.name}' has no network to build")
    return entry.build(cfg, shape)


def eval_preprocessing(cfg: Any) -> EvalPreprocessing | None:
    """The evaluation preprocessing ``cfg``'s library uses (None: the backbone has none)."""
    cfg = as_typed(cfg)
    entry = BACKBONES.get(cfg.name)
    return entry.preprocessing(cfg) if entry.preprocessing is not None else None


def backbone_label(cfg: Any) -> str:
    """The backbone's name in records and tables: the config name, or for a hub source the
    model and weights (``pytorchcv:resnet18-0982-0126861b``, ``timm:resnet18.a1_in1k``)."""
    cfg = as_typed(cfg)
    entry = BACKBONES.get(cfg.name)
    return entry.label(cfg) if entry.label is not None else cfg.name
