"""Trained-here checkpoints (lenet5, resnet9) and the one loader every backbone goes through.

A checkpoint is ``<cache_dir>/<name>-<arch>-<dataset>-seed<seed>-<recipe>.pt``:

* ``arch``: 6 hex of the architecture fields (``width``, ``head_hidden``, ``conv_bn`` ...), so a
  width-0.25 ResNet-9 never loads a full-width one's weights;
* ``recipe``: 8 hex of the training config (epochs, lr, ...; not device/threads), so changing the
  recipe trains a new file instead of silently reusing an old one.

The ``.pt`` holds ``{"format", "state_dict", "meta"}`` and a ``.json`` beside it repeats ``meta``
for people and scripts (accuracy, epochs, wall time, versions, date). Both are written to a temp
file and renamed, so a killed training never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn

from riembench.backbones.pytorchcv_models import load_pytorchcv
from riembench.backbones.registry import TaskShape, as_typed, backbone_label
from riembench.backbones.timm_models import load_timm
from riembench.backbones.torchvision_models import load_torchvision
from riembench.config.backbones import BACKBONES, TrainedBackboneConfig
from riembench.core.atomic import atomic_write
from riembench.core.digest import file_digest
from riembench.core.errors import RiembenchError
from riembench.core.validate import require_finite_module, require_finite_state

log = logging.getLogger("riembench")

FORMAT = "riembench-checkpoint/1"
#: the pretrained-library sources' loaders: config -> (model, provenance)
IMAGENET_LOADERS: dict[str, Callable[[Any], tuple[nn.Module, dict[str, Any]]]] = {
    "torchvision": load_torchvision, "pytorchcv": load_pytorchcv, "timm": load_timm}
#: dataset fields that decide which images are train vs dev; a checkpoint trained under other
#: values may have trained on the evaluation's dev images
SPLIT_FIELDS = ("split_seed", "dev_fraction", "dev_size")


@dataclass
class LoadedBackbone:
    """A network ready to evaluate, and where its weights came from (goes into run records)."""

    model: nn.Module
    provenance: dict[str, Any] = field(default_factory=dict)


def short_hash(obj: Any, n: int) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def arch_tag(cfg: TrainedBackboneConfig) -> str:
    return short_hash({"name": cfg.name, **cfg.arch()}, 6)


def cache_dir(cfg: TrainedBackboneConfig) -> Path:
    """The checkpoint directory, also for a config built in Python (interpolation unresolved)."""
    value = str(cfg.cache_dir)
    if "${" in value:
        value = str(OmegaConf.create({"dir": value}).dir)
    return Path(os.path.expandvars(value)).expanduser()


def checkpoint_path(cfg: TrainedBackboneConfig, dataset: str, seed: int, recipe: str) -> Path:
    """Where ``riembench-train`` writes (and the loader looks for) this training run."""
    return cache_dir(cfg) / f"{cfg.name}-{arch_tag(cfg)}-{dataset}-seed{seed}-{recipe}.pt"


def save_checkpoint(path: Path, model: nn.Module, meta: dict[str, Any]) -> None:
    """Write the state dict and metadata atomically (JSON first: the .pt marks completion)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    text = json.dumps(meta, indent=2, sort_keys=True, default=str).encode()
    atomic_write(path.with_suffix(".json"), lambda fh: fh.write(text))
    payload = {"format": FORMAT, "state_dict": state, "meta": json.loads(text)}
    atomic_write(path, lambda fh: torch.save(payload, fh))


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State dict and metadata of a checkpoint, with errors that name the file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip/pickle/EOF errors: the file is damaged or not ours
        raise RiembenchError(f"checkpoint {path} is corrupt or not a PyTorch file "
                             f"({type(exc).__name__}: {exc}); delete it and train again") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RiembenchError(f"{path} is not a riembench checkpoint (expected format {FORMAT}); "
                             "delete it and train again")
    require_finite_state(payload["state_dict"], f"checkpoint {path}")
    return payload["state_dict"], payload.get("meta", {})


def train_command(cfg: TrainedBackboneConfig, dataset: str) -> str:
    """The exact ``riembench-train`` call that writes the checkpoint ``cfg`` asks for."""
    args = [f"backbone={cfg.name}", f"dataset={dataset}", f"train.seed={cfg.train_seed}"]
    args += [f"backbone.{k}={_override_value(v)}" for k, v in cfg.arch().items()]
    if cache_dir(cfg) != cache_dir(type(cfg)()):
        args.append(f"backbone.cache_dir={cache_dir(cfg)}")
    return "riembench-train " + " ".join(shlex.quote(a) for a in args)


def _override_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def find_checkpoint(cfg: TrainedBackboneConfig, dataset: str) -> Path:
    """The one checkpoint matching the config's architecture, dataset, seed (and recipe)."""
    recipe = cfg.train_hash or "*"
    pattern = checkpoint_path(cfg, dataset, cfg.train_seed, recipe).name
    found = sorted(cache_dir(cfg).glob(pattern))
    if not found:
        raise RiembenchError(
            f"no trained {cfg.name} for dataset '{dataset}': expected "
            f"{cache_dir(cfg) / pattern}\ntrain it with\n  {train_command(cfg, dataset)}\n"
            "(or point backbone.weights at a checkpoint file)")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise RiembenchError(f"several {cfg.name} checkpoints for '{dataset}' seed "
                             f"{cfg.train_seed} in {cache_dir(cfg)}: {names}; choose one with "
                             "backbone.train_hash=<the 8 hex before .pt>")
    return found[0]


def _check_shape(path: Path, meta: dict[str, Any], shape: TaskShape) -> None:
    recorded = meta.get("task_shape")
    if recorded and TaskShape(**recorded) != shape:
        raise RiembenchError(f"checkpoint {path} was trained for {recorded}, but the dataset "
                             f"has {shape}")


def _check_split(cfg: TrainedBackboneConfig, path: Path, meta: dict[str, Any],
                 dataset_cfg: Any) -> None:
    recorded = meta.get("dataset_config") or {}
    for key in SPLIT_FIELDS:
        now = getattr(dataset_cfg, key, None)
        if key in recorded and now is not None and recorded[key] != now:
            raise RiembenchError(f"checkpoint {path} was trained with dataset.{key}="
                                 f"{recorded[key]} but this run uses {now}: its training images "
                                 "may be in this run's dev split; train a matching one with\n  "
                                 f"{train_command(cfg, meta.get('dataset', '?'))} "
                                 f"dataset.{key}={now}")


def load_trained(cfg: TrainedBackboneConfig, task: Any, dataset_cfg: Any = None) -> LoadedBackbone:
    """A lenet5/resnet9 on CPU: cached checkpoint, explicit file, or seeded random init."""
    entry = BACKBONES.get(cfg.name)
    shape = TaskShape.of(task)
    if cfg.weights == "random":
        torch.manual_seed(cfg.init_seed)
        log.warning("%s: RANDOM weights (init_seed=%d), not trained", cfg.name, cfg.init_seed)
        return LoadedBackbone(entry.build(cfg, shape), {"source": "random",
                                                        "init_seed": cfg.init_seed})
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise RiembenchError(f"backbone.weights={cfg.weights}: no such file")
    else:
        path = find_checkpoint(cfg, task.name)
    state, meta = read_checkpoint(path)
    _check_shape(path, meta, shape)
    if dataset_cfg is not None:
        _check_split(cfg, path, meta, dataset_cfg)
    model = entry.build(cfg, shape)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise RiembenchError(f"checkpoint {path} does not fit {cfg.name} with {cfg.arch()}: "
                             f"{str(exc)[:500]}") from exc
    # the file's digest: a retrained checkpoint under the same name (training is not bitwise
    # reproducible across machines) is other weights, and the reporter can tell them apart
    return LoadedBackbone(model, {"source": "checkpoint", "path": str(path),
                                  "sha256": file_digest(path)[:16],
                                  "dev_acc": meta.get("dev_acc"), "test_acc": meta.get("test_acc"),
                                  "recipe": meta.get("recipe")})


def load_backbone(cfg: Any, task: Any, device: torch.device | str = "cpu",
                  dataset_cfg: Any = None) -> LoadedBackbone:
    """Any registered backbone with its weights, in eval mode on ``device``.

    ``task`` is ImageTask-like (name, num_classes, in_channels, image_size); the torchvision
    models ignore it except to refuse a dataset whose class count is not ImageNet's. Pass the
    run's ``dataset_cfg`` to refuse a checkpoint trained under another train/dev split.
    """
    cfg = as_typed(cfg)
    source = BACKBONES.get(cfg.name).source
    if source == "trained":
        loaded = load_trained(cfg, task, dataset_cfg)
    elif source in IMAGENET_LOADERS:
        if task is not None and int(task.num_classes) != 1000:
            raise RiembenchError(f"{backbone_label(cfg)} is an ImageNet-1k model (1000 classes); "
                                 f"dataset '{task.name}' has {task.num_classes}")
        loaded = LoadedBackbone(*IMAGENET_LOADERS[source](cfg))
    elif source == "transformers":
        from riembench.backbones.detr import load_detr

        loaded = LoadedBackbone(*load_detr(cfg, task))
    else:
        raise RiembenchError(f"backbone '{cfg.name}' has no network to load")
    loaded.provenance = {"backbone": backbone_label(cfg), **loaded.provenance}
    used = getattr(task, "preprocessing", None)  # what the dataset's loader actually applies
    if used is not None:
        loaded.provenance["preprocessing"] = used
    origin = loaded.provenance.get("path") or loaded.provenance.get("source")
    require_finite_module(loaded.model, f"{cfg.name} weights ({origin})")  # before any fitting
    # visible to whoever holds it (Module.__setattr__ takes any value; torch types it for
    # tensors and modules only)
    loaded.model.riembench_weights = dict(loaded.provenance)  # type: ignore[assignment]
    loaded.model.to(device).eval()
    return loaded


def load_pretrained(backbone_cfg: Any, task: Any, device: torch.device | str = "cpu",
                    dataset_cfg: Any = None) -> nn.Module:
    """:func:`load_backbone` without the provenance: the model, in eval mode on ``device``."""
    return load_backbone(backbone_cfg, task, device, dataset_cfg).model
