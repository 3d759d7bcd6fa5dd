"""Backbone schemas and the backbone registry (entries: ``riembench.backbones``, imported when a
cell runs)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from riembench.core.errors import RiembenchError
from riembench.core.registry import Registry

#: where trained-here checkpoints live unless ``backbone.cache_dir`` says otherwise
DEFAULT_CACHE_DIR = "${oc.env:RIEMBENCH_CACHE,'~/.cache/riembench'}/checkpoints"

#: config fields that choose *which weights* to load, not the architecture; they are left out
#: of the architecture tag in checkpoint names so the same network trained once is found again
LOADING_FIELDS = frozenset({"name", "cache_dir", "weights", "train_seed", "train_hash",
                            "init_seed"})

#: torchvision architectures with ImageNet weights (``backbone=resnet18`` etc.)
TORCHVISION_MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "densenet121")


@dataclass
class BackboneConfig:
    #: ``none``: no network (table 5's bare matrices)
    name: str = "none"


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


@dataclass
class LeNet5Config(TrainedBackboneConfig):
    name: str = "lenet5"
    #: BatchNorm after each conv, as in the authors' 2023 LeNet notebook (flat-learning repo);
    #: off by default (classic LeNet-5). Does not change the FC layers or their count.
    conv_bn: bool = False


@dataclass
class ResNet9Config(TrainedBackboneConfig):
    name: str = "resnet9"
    #: channel multiplier for every conv (1.0 = the paper's network)
    width: float = 1.0
    #: None: one Linear(512, classes) (Myrtle); an int h: Linear(512, h) -> relu -> Linear(h, C)
    head_hidden: int | None = None
    #: constant multiplier on the logits (Myrtle's ResNet-9: 0.125; 1.0 = plain Linear head)
    logit_scale: float = 0.125

    def __post_init__(self) -> None:
        if not self.width > 0:
            raise RiembenchError(f"resnet9 width must be > 0, got {self.width}")
        if self.head_hidden is not None and self.head_hidden < 1:
            raise RiembenchError(f"resnet9 head_hidden must be >= 1 or null, got {self.head_hidden}")


@dataclass
class TorchvisionConfig(BackboneConfig):
    name: str = "resnet18"
    #: None: torchvision's cache file for ``variant``; "random": seeded random init (tests,
    #: benchmarks; recorded as such); anything else: path of a state-dict file
    weights: str | None = None
    #: torchvision weights enum member; IMAGENET1K_V1 is what the paper's sizes correspond to
    variant: str = "IMAGENET1K_V1"
    #: compare the file's SHA-256 with the prefix in torchvision's file name
    check_hash: bool = True
    init_seed: int = 0


@dataclass
class TimmConfig(BackboneConfig):
    name: str = "timm"
    #: timm model name with its pretrained tag (``timm.list_pretrained()``)
    model: str = "resnet18.a1_in1k"
    #: None: the Hugging Face hub cache; "random": seeded random init (tests; recorded as such);
    #: anything else: a weights file (.safetensors, .bin, .pth) in timm's format
    weights: str | None = None
    #: the hub cache directory; None: huggingface_hub's (HF_HUB_CACHE / HF_HOME)
    hub_cache: str | None = None
    init_seed: int = 0


@dataclass
class PytorchcvConfig(BackboneConfig):
    name: str = "pytorchcv"
    #: pytorchcv's model name (``pytorchcv.model_provider.get_model``)
    model: str = "resnet18"
    #: None: ``weights_file`` in ``store_dir``; "random": seeded random init (tests; recorded as
    #: such); anything else: path of a state-dict file in pytorchcv's format
    weights: str | None = None
    #: the model-store file name; None: the one the installed pytorchcv serves for ``model``
    weights_file: str | None = None
    #: pytorchcv's model store (its ``get_model(..., root=)`` default)
    store_dir: str = "~/.torch/models"
    #: compare the file's SHA-1 with pytorchcv's table (or the hash prefix in its name)
    check_hash: bool = True
    init_seed: int = 0


@dataclass
class DetrBackboneConfig(BackboneConfig):
    name: str = "detr_r50"
    #: None: the Hugging Face cache entry of ``repo_id`` at ``revision``; "random": seeded random
    #: init (tests, benchmarks; recorded as such); else a ``save_pretrained`` directory
    weights: str | None = None
    repo_id: str = "facebook/detr-resnet-50"
    revision: str = "main"
    #: Hugging Face hub cache to look in; None: huggingface_hub's default (HF_HUB_CACHE/HF_HOME)
    cache_dir: str | None = field(default=None, metadata={"identity": False})
    #: weights=random only: the tiny test architecture instead of DETR-R50
    tiny: bool = False
    #: seed of the random init for weights=random
    init_seed: int = 0


#: name -> schema and :class:`riembench.backbones.registry.BackboneEntry`
BACKBONES: Registry[Any] = Registry("backbone")

for _name, _schema, _impl in (
    ("none", BackboneConfig, "registry:NO_NETWORK"),
    ("lenet5", LeNet5Config, "lenet5:ENTRY"),
    ("resnet9", ResNet9Config, "resnet9:ENTRY"),
    *((_tv, TorchvisionConfig, "torchvision_models:ENTRY") for _tv in TORCHVISION_MODELS),
    ("pytorchcv", PytorchcvConfig, "pytorchcv_models:ENTRY"),
    ("timm", TimmConfig, "timm_models:ENTRY"),
    ("detr_r50", DetrBackboneConfig, "detr:ENTRY"),
):
    BACKBONES.declare(_name, _schema, f"riembench.backbones.{_impl}")
