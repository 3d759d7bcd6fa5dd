"""Backbone registry. Importing this package registers every built-in backbone.

``none`` (table 5, no network), ``lenet5`` and ``resnet9`` (table 1, trained here with
``riembench-train``), torchvision's ``resnet18/34/50/101`` and ``densenet121`` (tables 2, 3), and
any ``pytorchcv`` or ``timm`` model by name (``backbone.model``), each with its library's own
evaluation preprocessing (:func:`eval_preprocessing`).
Load any of them with :func:`load_pretrained` (model) or :func:`load_backbone` (model and the
provenance of its weights). The trainer lives in :mod:`riembench.harness.training`.
"""

from riembench.backbones.checkpoints import (
    LoadedBackbone,
    checkpoint_path,
    find_checkpoint,
    load_backbone,
    load_pretrained,
    read_checkpoint,
    save_checkpoint,
    train_command,
)
from riembench.backbones.lenet5 import LeNet5, lenet5_fc_params
from riembench.backbones.registry import (
    BackboneEntry,
    TaskShape,
    backbone_label,
    build_backbone,
    eval_preprocessing,
    linear_layers,
    linear_param_count,
)
from riembench.backbones.resnet9 import ResNet9, resnet9_fc_params
from riembench.config.backbones import (
    BACKBONES,
    LeNet5Config,
    PytorchcvConfig,
    ResNet9Config,
    TimmConfig,
    TorchvisionConfig,
    TrainedBackboneConfig,
)
from riembench.data.preprocess import EvalPreprocessing

__all__ = [
    "BACKBONES",
    "BackboneEntry",
    "EvalPreprocessing",
    "LeNet5",
    "LeNet5Config",
    "LoadedBackbone",
    "PytorchcvConfig",
    "ResNet9",
    "ResNet9Config",
    "TaskShape",
    "TimmConfig",
    "TorchvisionConfig",
    "TrainedBackboneConfig",
    "backbone_label",
    "build_backbone",
    "checkpoint_path",
    "eval_preprocessing",
    "find_checkpoint",
    "lenet5_fc_params",
    "linear_layers",
    "linear_param_count",
    "load_backbone",
    "load_pretrained",
    "read_checkpoint",
    "resnet9_fc_params",
    "save_checkpoint",
    "train_command",
]
