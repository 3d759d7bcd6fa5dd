"""Any pytorchcv (imgclsmob) ImageNet model by name, weights from its model store, never downloaded.

``backbone=pytorchcv backbone.model=resnet18``. pytorchcv keeps its downloads as
``~/.torch/models/<model>-<error>-<sha1[:8]>.pth`` (``model_store.get_model_file``); the loader
looks there (``backbone.store_dir``) for the file the installed package names for the model, or
for ``backbone.weights_file`` (another release's file, e.g. the paper's ResNet-18), or reads
``backbone.weights=<path>``. The SHA-1 is checked against the package's table (or the eight hex
digits in the name), so a truncated copy fails clearly.

Evaluation preprocessing is pytorchcv's own (imgclsmob's ``imagenet_val_transform``): bilinear
resize of the shorter side to ``ceil(img_size / img_scale)``, centre crop ``img_size``, ImageNet
mean/std, with ``img_size``/``img_scale`` per model from the package's ``model_metainfos.csv``.
The expected top-1 is ``100 - Top1 error`` from the package's own model table (its README, shipped
as the package description), or from :data:`~riembench.backbones.originals.PYTORCHCV_RETIRED`
for a file the current package no longer lists.
"""

from __future__ import annotations

import csv
import functools
import importlib.metadata
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from riembench.backbones.originals import PYTORCHCV_RETIRED, ZooFile, paper_backbone
from riembench.backbones.registry import BackboneEntry, TaskShape
from riembench.backbones.torchvision_models import load_strict, read_state_dict
from riembench.config.backbones import PytorchcvConfig
from riembench.core.digest import file_digest
from riembench.core.errors import RiembenchError
from riembench.data.preprocess import EvalPreprocessing

log = logging.getLogger("riembench")

REPO_URL = "https://github.com/osmr/imgclsmob"
_FILE = re.compile(r"^(?P<model>.+)-(?P<error>\d{4})-(?P<sha>[0-9a-f]{8})\.pth$")
_TABLE_ROW = re.compile(r"^\|\s*(?P<caption>[^|]+?)\s*\|\s*(?P<top1>\d+\.\d+)\s*\|\s*"
                        r"(?P<top5>\d+\.\d+)\s*\|\s*(?P<params>[\d,]+)\s*\|.*?/(?P<file>[^/()]+\.pth)"
                        r"\.log\)")




@functools.cache
def metainfo() -> dict[str, dict[str, str]]:
    """pytorchcv's ``model_metainfos.csv`` rows by model name (file hash, input size, scale)."""
    from pytorchcv.models.common import model_store

    with open(model_store.get_model_metainfos_file_path(), encoding="utf-8") as fh:
        return {row["model_name"]: row for row in csv.DictReader(fh)}


@functools.cache
def zoo_table() -> dict[str, ZooFile]:
    """The installed package's ImageNet model table (its README), keyed by weights file."""
    try:
        text = importlib.metadata.metadata("pytorchcv").get_payload()  # type: ignore[attr-defined]
    except importlib.metadata.PackageNotFoundError:
        return {}
    rows: dict[str, ZooFile] = {}
    for line in str(text or "").splitlines():
        match = _TABLE_ROW.match(line)
        if match is None or _FILE.match(match["file"]) is None:
            continue
        model = _FILE.match(match["file"])["model"]  # type: ignore[index]
        info = metainfo().get(model, {})
        sha = info.get("checksum", "") if _file_of(info) == match["file"] else ""
        rows.setdefault(match["file"], ZooFile(
            model, match["file"], sha, info.get("repo_release_tag", ""), float(match["top1"]),
            float(match["top5"]), int(match["params"].replace(",", "")),
            f"pytorchcv {version()} README, ImageNet-1K table, row {match['caption']}"))
    return rows


def version() -> str:
    try:
        return importlib.metadata.version("pytorchcv")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _file_of(info: dict[str, str]) -> str | None:
    if not info or info.get("checksum") in (None, "", "NA"):
        return None
    return f"{info['model_name']}-{info['error_value']}-{info['checksum'][:8]}.pth"


def weight_file_name(cfg: PytorchcvConfig) -> str:
    """The model-store file this config loads (``weights_file`` or the package's current one)."""
    if cfg.weights_file:
        return cfg.weights_file
    name = _file_of(metainfo().get(cfg.model, {}))
    if name is None:
        raise RiembenchError(f"pytorchcv {version()} has no pretrained weights for "
                             f"'{cfg.model}'; name a file with backbone.weights_file or "
                             "backbone.weights=<path>")
    return name


def zoo_entry(file_name: str) -> ZooFile | None:
    """What pytorchcv's table (current, or a retired release's) says about this file."""
    return zoo_table().get(file_name) or PYTORCHCV_RETIRED.get(file_name)


def store_dir(cfg: PytorchcvConfig) -> Path:
    return Path(cfg.store_dir).expanduser()


def fetch_command(cfg: PytorchcvConfig, file_name: str) -> str:
    """The one command that puts ``file_name`` into the model store on a networked machine."""
    if file_name == _file_of(metainfo().get(cfg.model, {})):
        return (f"python -c \"from pytorchcv.model_provider import get_model; "
                f"get_model('{cfg.model}', pretrained=True)\"   (pytorchcv=={version()})")
    entry = zoo_entry(file_name)
    if entry is not None and entry.release:
        url = f"{REPO_URL}/releases/download/{entry.release}/{file_name}.zip"
        return (f"curl -L -o /tmp/{file_name}.zip {url} && unzip -o /tmp/{file_name}.zip -d "
                f"{cfg.store_dir}")
    return f"(no known release of {file_name}: copy the file there yourself)"


def missing_message(cfg: PytorchcvConfig, path: Path, file_name: str) -> str:
    return (f"pytorchcv {cfg.model} weights not found at {path}. On a machine with network run\n"
            f"  {fetch_command(cfg, file_name)}\nthen copy {path.name} to {path.parent} on this "
            "machine (or set backbone.store_dir, or backbone.weights=<file>)")


def check_file_hash(path: Path, sha1: str | None) -> str:
    """SHA-1 of ``path`` against pytorchcv's full hash (or the 8-hex prefix in the file name)."""
    found = file_digest(path, "sha1")
    match = _FILE.match(path.name)
    expected = sha1 or (match["sha"] if match else None)
    if expected and not found.startswith(expected):
        raise RiembenchError(
            f"weights file {path} has SHA-1 {found[:12]}..., not {expected[:12]}... as pytorchcv "
            "lists it: the copy is incomplete or corrupt (copy it again, or set "
            "backbone.check_hash=false for a file you made yourself)")
    return found


def build_pytorchcv(cfg: PytorchcvConfig, shape: TaskShape | None = None) -> nn.Module:
    """The architecture with random init (pytorchcv's ImageNet head: 1000 classes)."""
    from pytorchcv.model_provider import get_model

    try:
        return get_model(cfg.model, pretrained=False)
    except ValueError as exc:
        raise RiembenchError(f"pytorchcv {version()} has no model '{cfg.model}' ({exc})") from None


def preprocessing(cfg: PytorchcvConfig) -> EvalPreprocessing:
    """imgclsmob's evaluation stack with this model's ``img_size`` / ``img_scale``."""
    info = metainfo().get(cfg.model, {})
    size = int(info.get("img_size") or 224)
    scale = float(info.get("img_scale") or 0.875)
    return EvalPreprocessing(size, math.ceil(size / scale), "bilinear",
                             origin=f"pytorchcv {version()} model_metainfos.csv "
                                    f"(img_size={size}, img_scale={scale}) with imgclsmob's "
                                    "imagenet_val_transform")


def label(cfg: PytorchcvConfig) -> str:
    """The table's name for this backbone: which weights, not just which architecture."""
    if cfg.weights == "random":
        return f"pytorchcv:{cfg.model}:random"
    if cfg.weights:
        return f"pytorchcv:{cfg.model}:{Path(cfg.weights).stem}"
    return f"pytorchcv:{Path(weight_file_name(cfg)).stem}"


def load_pytorchcv(cfg: PytorchcvConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The model on CPU with its weights, and where they came from (with the expected top-1)."""
    base = {"source": "pytorchcv", "model": cfg.model, "pytorchcv_version": version(),
            "paper_backbone": paper_backbone(cfg.model)}
    if cfg.weights == "random":
        torch.manual_seed(cfg.init_seed)
        model = build_pytorchcv(cfg)
        log.warning("pytorchcv %s: RANDOM weights (init_seed=%d), not ImageNet-trained",
                    cfg.model, cfg.init_seed)
        return model, {**base, "source": "random", "init_seed": cfg.init_seed}
    model = build_pytorchcv(cfg)
    if cfg.weights:
        path, file_name = Path(cfg.weights).expanduser(), Path(cfg.weights).name
        if not path.is_file():
            raise RiembenchError(f"backbone.weights={cfg.weights}: no such file")
    else:
        file_name = weight_file_name(cfg)
        path = store_dir(cfg) / file_name
        if not path.is_file():
            raise RiembenchError(missing_message(cfg, path, file_name))
    entry = zoo_entry(file_name)
    sha1 = check_file_hash(path, entry.sha1 if entry else None) if cfg.check_hash else None
    state = read_state_dict(path)
    # strict, unlike pytorchcv's load_model (which drops unknown keys): a deeper model's file
    # holds every key of a shallower one, and would otherwise load without a word
    load_strict(model, state, path, f"pytorchcv's {cfg.model}")
    provenance: dict[str, Any] = {**base, "file": file_name, "path": str(path), "sha1": sha1}
    if entry is not None and entry.model == cfg.model:
        provenance.update(expected_top1=round(100.0 - entry.top1_err, 2),
                          expected_top1_from=entry.table, release=entry.release)
    return model, provenance


ENTRY = BackboneEntry(source="pytorchcv", build=build_pytorchcv, preprocessing=preprocessing,
                      label=label)
