"""ImageNet backbones from torchvision (tables 2 and 3), loaded from local files only.

This machine has no network, so weights are never downloaded: they come from ``backbone.weights``
(an explicit file) or from torchvision's own cache, ``<torch.hub.get_dir()>/checkpoints/<file>``,
where ``<file>`` is the name torchvision gives the download (e.g. ``resnet18-f37072fd.pth``). A
machine that has run ``torchvision.models.resnet18(weights="IMAGENET1K_V1")`` once has that file;
copying its cache directory here is all the setup needed. The eight hex digits in the file name
are the start of the file's SHA-256, which we check (``check_hash``) so a truncated copy fails
with a clear message instead of a confusing size mismatch.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision.models as tvm
from torch import nn

from riembench.backbones.originals import paper_backbone
from riembench.backbones.registry import BackboneEntry, TaskShape
from riembench.config.backbones import TorchvisionConfig
from riembench.core.digest import file_digest
from riembench.core.errors import RiembenchError
from riembench.core.validate import require_finite_state
from riembench.data.preprocess import EvalPreprocessing

log = logging.getLogger("riembench")

#: backbone name -> (torchvision builder, weights enum)
MODELS: dict[str, tuple[Any, Any]] = {
    "resnet18": (tvm.resnet18, tvm.ResNet18_Weights),
    "resnet34": (tvm.resnet34, tvm.ResNet34_Weights),
    "resnet50": (tvm.resnet50, tvm.ResNet50_Weights),
    "resnet101": (tvm.resnet101, tvm.ResNet101_Weights),
    "densenet121": (tvm.densenet121, tvm.DenseNet121_Weights),
}

# DenseNet checkpoints predate module names without dots ('norm.1' -> 'norm1'); torchvision
# renames the keys when it loads them itself, so we must too.
_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")




def weights_enum(name: str, variant: str) -> Any:
    try:
        return MODELS[name][1][variant]
    except KeyError:
        known = ", ".join(w.name for w in MODELS[name][1])
        raise RiembenchError(f"{name} has no torchvision weights '{variant}'; known: {known}") from None


def weight_file_name(name: str, variant: str = "IMAGENET1K_V1") -> str:
    """torchvision's file name for these weights, e.g. ``resnet18-f37072fd.pth``."""
    return Path(urlparse(weights_enum(name, variant).url).path).name


def cache_path(name: str, variant: str = "IMAGENET1K_V1") -> Path:
    """Where torchvision would have saved the download (honours TORCH_HOME / hub.set_dir)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weight_file_name(name, variant)


def download_hint(name: str, variant: str) -> str:
    return (f"on a machine with network run\n  python -c \"import torchvision; "
            f"torchvision.models.{name}(weights='{variant}')\"\nthen copy "
            f"{cache_path(name, variant).parent} (or just {weight_file_name(name, variant)}) to "
            f"this machine's {cache_path(name, variant).parent}, or set backbone.weights=<file>")


def build_torchvision(cfg: TorchvisionConfig, shape: TaskShape | None = None) -> nn.Module:
    """The architecture with random init (ImageNet head: 1000 classes)."""
    return MODELS[cfg.name][0](weights=None)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict from ``path`` with messages that name the file."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle errors differ by torch version; all mean "bad file"
        raise RiembenchError(f"cannot read weights file {path}: it is corrupt or not a PyTorch "
                             f"file ({type(exc).__name__}: {exc})") from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise RiembenchError(f"weights file {path} does not hold a state dict (got "
                             f"{type(obj).__name__})")
    require_finite_state(obj, f"weights file {path}")
    return obj


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``model.load_state_dict(state)`` (every key, every shape) with an error naming the file."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RiembenchError(f"weights file {path} does not fit {what}: {str(exc)[:500]}") from exc


def check_file_hash(path: Path) -> None:
    """Compare the SHA-256 of ``path`` with the prefix torchvision put in its name."""
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        return
    digest = file_digest(path)
    if not digest.startswith(match.group(1)):
        raise RiembenchError(
            f"weights file {path} has SHA-256 {digest[:12]}..., not {match.group(1)}... "
            "as its name says: the copy is incomplete or corrupt (copy it again, or set "
            "backbone.check_hash=false for a file you made yourself)")


def load_torchvision(cfg: TorchvisionConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The model on CPU with its weights, and a provenance record of where they came from."""
    weights_enum(cfg.name, cfg.variant)  # unknown variant -> error listing the known ones
    if cfg.weights == "random":
        torch.manual_seed(cfg.init_seed)
        log.warning("%s: RANDOM weights (init_seed=%d), not ImageNet-trained", cfg.name,
                    cfg.init_seed)
        return build_torchvision(cfg), {"source": "random", "init_seed": cfg.init_seed}
    path = Path(cfg.weights).expanduser() if cfg.weights else cache_path(cfg.name, cfg.variant)
    if not path.is_file():
        where = "backbone.weights" if cfg.weights else "torchvision's cache"
        raise RiembenchError(f"{cfg.name} weights not found at {path} ({where}); "
                             + download_hint(cfg.name, cfg.variant))
    if cfg.check_hash:
        check_file_hash(path)
    state = read_state_dict(path)
    if cfg.name.startswith("densenet"):
        state = {_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    model = build_torchvision(cfg)
    load_strict(model, state, path, f"torchvision's {cfg.name}")
    weights = weights_enum(cfg.name, cfg.variant)
    return model, {"source": "torchvision", "variant": cfg.variant, "path": str(path),
                   "file": path.name, "paper_backbone": paper_backbone(cfg.name),
                   "expected_top1": weights.meta["_metrics"]["ImageNet-1K"]["acc@1"],
                   "expected_top1_from": f"torchvision {tvm_version()} "
                                         f"{type(weights).__name__}.{cfg.variant}.meta"}


def tvm_version() -> str:
    import torchvision

    return torchvision.__version__


def preprocessing(cfg: TorchvisionConfig) -> EvalPreprocessing:
    """torchvision's own ``weights.transforms()`` for the variant (ImageClassification)."""
    weights = weights_enum(cfg.name, cfg.variant)
    tf = weights.transforms()
    return EvalPreprocessing(int(tf.crop_size[0]), int(tf.resize_size[0]),
                             tf.interpolation.value, tuple(tf.mean), tuple(tf.std),
                             origin=f"torchvision {tvm_version()} {type(weights).__name__}."
                                    f"{cfg.variant}.transforms()")


#: every name of config.backbones.TORCHVISION_MODELS (a test checks they agree with MODELS)
ENTRY = BackboneEntry(source="torchvision", build=build_torchvision, preprocessing=preprocessing)
