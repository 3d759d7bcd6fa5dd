"""The backbone registry and what every backbone entry shares.

A backbone is a config schema (registered in Hydra's ConfigStore as ``backbone/<name>_schema``)
plus a :class:`BackboneEntry` saying how to build the architecture and where its weights come
from. The loaders (:mod:`riembench.backbones.checkpoints`) dispatch on ``entry.source``, so a new
backbone is one module and one YAML, like a new method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from omegaconf import DictConfig
from torch import nn

from riembench.backbones.preprocess import EvalPreprocessing
from riembench.config import BackboneConfig, typed_group
from riembench.errors import RiembenchError
from riembench.registry import Registry

#: where trained-here checkpoints live unless ``backbone.cache_dir`` says otherwise
DEFAULT_CACHE_DIR = "${oc.env:RIEMBENCH_CACHE,'~/.cache/riembench'}/checkpoints"

#: config fields that choose *which weights* to load, not the architecture; they are left out
#: of the architecture tag in checkpoint names so the same network trained once is found again
LOADING_FIELDS = frozenset({"name", "cache_dir", "weights", "train_seed", "train_hash",
                            "init_seed"})


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


@dataclass
class TrainedBackboneConfig(BackboneConfig):
    """Fields shared by backbones trained here (lenet5, resnet9).

    ``weights``: None loads the cached checkpoint for the dataset (``cache_dir``), ``"random"``
    builds a seeded random network (tests and benchmarks; recorded as such), anything else is
    the path of a checkpoint file written by ``riembench-train``.
    """

    cache_dir: str = field(default=DEFAULT_CACHE_DIR, metadata={"identity": False})
    weights: str | None = None
    #: which training run to load: the ``train.seed`` it was trained with ...
    train_seed: int = 0
    #: ... and, when several recipes were trained, the 8-hex hash in the file name
    train_hash: str | None = None
    #: seed of the random init for ``weights=random``
    init_seed: int = 0

    def arch(self) -> dict[str, Any]:
        """The architecture fields (everything that is not about choosing weights)."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in LOADING_FIELDS}


BACKBONES: Registry[BackboneEntry] = Registry("backbone")
# table 5's synthetic matrices have no network; the schema is the one config.py stores
BACKBONES.register("none", BackboneConfig)(BackboneEntry(source="none"))


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
