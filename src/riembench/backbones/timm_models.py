"""Any timm model by name (``backbone=timm backbone.model=resnet18.a1_in1k``), never downloaded.

timm's pretrained weights live on the Hugging Face hub (``timm/<model>``); a machine that ran
``timm.create_model(name, pretrained=True)`` has them in the hub cache
(``$HF_HUB_CACHE``, default ``~/.cache/huggingface/hub/models--timm--<model>/snapshots/<rev>/
model.safetensors``). The loader resolves that file itself with ``huggingface_hub``'s
cache lookup (no request is made) or takes ``backbone.weights=<file>``, then lets timm load it
(``pretrained_cfg_overlay=dict(file=...)``), so timm's own key filters and head handling apply.

Evaluation preprocessing is timm's: ``timm.data.resolve_data_config(model=...)`` gives input
size, interpolation, ``crop_pct``, crop mode and mean/std, and ``timm.data.create_transform``
builds the transform.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from riembench.backbones.originals import paper_backbone
from riembench.backbones.registry import BackboneEntry, TaskShape
from riembench.config.backbones import TimmConfig
from riembench.core.errors import RiembenchError
from riembench.data.preprocess import TimmPreprocessing

log = logging.getLogger("riembench")

#: the files timm looks for in a hub repository, in its order of preference
HUB_FILES = ("model.safetensors", "pytorch_model.bin")




def version() -> str:
    return importlib.metadata.version("timm")


@functools.cache
def pretrained_cfg(model: str) -> dict[str, Any]:
    """timm's pretrained config of ``model`` (hub id, url, input size, crop, mean/std)."""
    import timm

    if not timm.is_model(model.split(".")[0]):
        raise RiembenchError(f"timm {version()} has no model '{model}' (see timm.list_models())")
    try:
        cfg = timm.models.get_pretrained_cfg(model)
    except RuntimeError:  # a known architecture with an unknown tag
        cfg = None
    if cfg is None:
        raise RiembenchError(f"timm {version()} has no pretrained tag '{model}'; known: "
                             + ", ".join(timm.list_pretrained(model.split(".")[0] + ".*")[:20]))
    return cfg.to_dict()


def hub_cache(cfg: TimmConfig) -> Path:
    if cfg.hub_cache:
        return Path(cfg.hub_cache).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_file(cfg: TimmConfig) -> tuple[Path | None, Path]:
    """(the cached weights file or None, where it was looked for)."""
    pcfg = pretrained_cfg(cfg.model)
    hub_id = pcfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        for name in HUB_FILES:
            found = try_to_load_from_cache(hub_id, name, cache_dir=str(hub_cache(cfg)))
            if isinstance(found, str):
                return Path(found), Path(found)
        where = hub_cache(cfg) / f"models--{hub_id.replace('/', '--')}" / "snapshots" / "<rev>" / HUB_FILES[0]
        return None, where
    url = pcfg.get("url")
    if not url:
        raise RiembenchError(f"timm's '{cfg.model}' has neither a hub id nor a url: give "
                             "backbone.weights=<file>")
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    return (path if path.is_file() else None), path


def _fetched(pcfg: dict[str, Any]) -> str:
    """What the fetch command leaves on the networked machine (its default cache paths)."""
    hub_id = pcfg.get("hf_hub_id")
    if hub_id:
        return f"~/.cache/huggingface/hub/models--{hub_id.replace('/', '--')} (the whole folder)"
    return f"~/.cache/torch/hub/checkpoints/{Path(str(pcfg.get('url'))).name}"


def fetch_command(cfg: TimmConfig) -> str:
    return (f"python -c \"import timm; timm.create_model('{cfg.model}', pretrained=True)\"   "
            f"(timm=={version()})")


def build_timm(cfg: TimmConfig, shape: TaskShape | None = None) -> nn.Module:
    """The architecture with random init and the pretrained tag's head (ImageNet-1k)."""
    import timm

    pretrained_cfg(cfg.model)  # unknown name/tag -> clear error
    return timm.create_model(cfg.model, pretrained=False)


def preprocessing(cfg: TimmConfig) -> TimmPreprocessing:
    from timm.data import resolve_data_config

    data_cfg = resolve_data_config(pretrained_cfg=pretrained_cfg(cfg.model))
    return TimmPreprocessing.from_data_config(
        data_cfg, origin=f"timm {version()} resolve_data_config('{cfg.model}') + create_transform")


def label(cfg: TimmConfig) -> str:
    if cfg.weights == "random":
        return f"timm:{cfg.model}:random"
    if cfg.weights:
        return f"timm:{cfg.model}:{Path(cfg.weights).stem}"
    return f"timm:{cfg.model}"


def load_timm(cfg: TimmConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The model on CPU with its weights, and where they came from."""
    import timm

    pcfg = pretrained_cfg(cfg.model)
    base = {"source": "timm", "model": cfg.model, "timm_version": version(),
            "paper_backbone": paper_backbone(str(pcfg.get("architecture", ""))),
            "hf_hub_id": pcfg.get("hf_hub_id")}
    if cfg.weights == "random":
        torch.manual_seed(cfg.init_seed)
        log.warning("timm %s: RANDOM weights (init_seed=%d), not pretrained", cfg.model,
                    cfg.init_seed)
        return build_timm(cfg), {**base, "source": "random", "init_seed": cfg.init_seed}
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not path.is_file():
            raise RiembenchError(f"backbone.weights={cfg.weights}: no such file")
    else:
        found, where = cached_file(cfg)
        if found is None:
            raise RiembenchError(
                f"timm {cfg.model} weights not found at {where} (the Hugging Face hub cache). "
                f"On a machine with network run\n  {fetch_command(cfg)}\nthen copy "
                f"{_fetched(pcfg)} into {where.parents[2].parent if pcfg.get('hf_hub_id') else where.parent} "
                "on this machine (or set backbone.hub_cache, or backbone.weights=<file>)")
        path = found
    try:
        # the overlay's file wins over the hub id in timm's source resolution: no request
        model = timm.create_model(cfg.model, pretrained=True,
                                  pretrained_cfg_overlay={"file": str(path)})
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        raise RiembenchError(f"weights file {path} does not load into timm's {cfg.model}: "
                             f"{type(exc).__name__}: {str(exc)[:500]}") from exc
    return model, {**base, "file": path.name, "path": str(path), "expected_top1": None,
                   "expected_top1_from": "timm's package ships no accuracy table (its "
                                         "results/results-imagenet.csv is in the repository)"}


ENTRY = BackboneEntry(source="timm", build=build_timm, preprocessing=preprocessing, label=label)
