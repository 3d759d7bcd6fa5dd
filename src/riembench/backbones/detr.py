"""DETR-R50 (table 4) from transformers' ``DetrForObjectDetection``, loaded from local files only.

Weights come from a ``save_pretrained`` directory (``backbone.weights=<dir>``) or from the
Hugging Face cache (``facebook/detr-resnet-50``, looked up with ``local_files_only``): this
machine never downloads. ``weights=random`` builds the architecture with random weights for
tests and benchmarks, and ``tiny=true`` shrinks it (a two-stage ResNet of width 8, d_model 32,
one encoder and one decoder layer, 10 queries) so an end-to-end run takes seconds on a CPU.

What the layer selection sees (``method.layers``): ``fc`` is every ``nn.Linear``: the
attention projections (q/k/v/o) and MLPs of the transformer's encoder and decoder, the class
head and the 3-layer box MLP; ``conv`` is every ``nn.Conv2d``: the ResNet-50 backbone and the
1x1 ``input_projection`` into the transformer; ``all`` is both. The backbone's BatchNorms are
transformers' ``DetrFrozenBatchNorm2d`` whose statistics are *buffers*, not parameters, so they
are neither compressed nor counted in parameter-based sizes (106k numbers, 0.26% of the model).

transformers is imported inside the functions, not at module import: it takes seconds, and
every ``riembench`` call imports the backbone registry.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from riembench.backbones.registry import BackboneEntry, TaskShape
from riembench.config.backbones import DetrBackboneConfig
from riembench.core.errors import RiembenchError

log = logging.getLogger("riembench")

#: the tiny test architecture (weights=random tiny=true): small enough for seconds on a CPU
TINY: dict[str, Any] = {"d_model": 32, "encoder_layers": 1, "decoder_layers": 1,
                        "encoder_ffn_dim": 64, "decoder_ffn_dim": 64, "encoder_attention_heads": 2,
                        "decoder_attention_heads": 2, "num_queries": 10}
TINY_RESNET: dict[str, Any] = {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1],
                               "layer_type": "basic", "out_features": ["stage2"]}




def detr_config(cfg: DetrBackboneConfig, num_labels: int) -> Any:
    """The DetrConfig of the architecture: DETR-R50 (timm ResNet-50, as the released
    checkpoint) or the tiny test network (transformers' own ResNet, no timm)."""
    from transformers import DetrConfig, ResNetConfig

    # DetrConfig takes keywords beyond its fields (num_labels, use_timm_backbone: its
    # accept_kwargs), which its type does not declare
    if cfg.tiny:
        return DetrConfig(  # type: ignore[call-arg]
            backbone_config=ResNetConfig(num_channels=3, **TINY_RESNET), use_timm_backbone=False,
            num_labels=num_labels, **TINY)
    # DetrConfig's defaults are facebook/detr-resnet-50's; the timm backbone is built with
    # use_pretrained_backbone=False (no ImageNet download)
    return DetrConfig(num_labels=num_labels)  # type: ignore[call-arg]


def build_detr(cfg: DetrBackboneConfig, shape: TaskShape) -> nn.Module:
    """Randomly initialised DETR with a head for ``shape.num_classes`` classes (+ no-object)."""
    from transformers import DetrForObjectDetection

    return DetrForObjectDetection(detr_config(cfg, int(shape.num_classes))).eval()


def _hf_cache(cfg: DetrBackboneConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir).expanduser()
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def download_hint(cfg: DetrBackboneConfig) -> str:
    folder = "models--" + cfg.repo_id.replace("/", "--")
    return (f"on a machine with network run\n"
            f"  huggingface-cli download {cfg.repo_id} --revision {cfg.revision}   "
            f"(newer huggingface_hub: hf download ...)\n"
            f"then copy its ~/.cache/huggingface/hub/{folder} to {_hf_cache(cfg) / folder} here; "
            "or save a directory there with\n"
            f"  python -c \"from transformers import DetrForObjectDetection as D; "
            f"D.from_pretrained('{cfg.repo_id}', revision='{cfg.revision}')"
            f".save_pretrained('detr-resnet-50')\"\n"
            "copy it here and set backbone.weights=<that directory>")


def resolve_weights(cfg: DetrBackboneConfig) -> tuple[Path, dict[str, Any]]:
    """The local directory holding config.json + weights, and where it came from."""
    if cfg.weights:
        path = Path(cfg.weights).expanduser()
        if not (path / "config.json").is_file():
            raise RiembenchError(
                f"backbone.weights={cfg.weights}: not a save_pretrained directory (expected "
                f"{path / 'config.json'} and model.safetensors beside it); " + download_hint(cfg))
        return path, {"path": str(path)}
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(cfg.repo_id, revision=cfg.revision,
                                      cache_dir=cfg.cache_dir, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, or a cache folder that is incomplete
        raise RiembenchError(
            f"{cfg.repo_id} (revision {cfg.revision}) is not in the Hugging Face cache "
            f"{_hf_cache(cfg)} ({type(exc).__name__}); " + download_hint(cfg)) from exc
    return path, {"repo_id": cfg.repo_id, "revision": cfg.revision, "path": str(path)}


def load_detr(cfg: DetrBackboneConfig, task: Any) -> tuple[nn.Module, dict[str, Any]]:
    """The model on CPU (eval mode) and a provenance record of its weights."""
    shape = TaskShape.of(task) if task is not None else TaskShape(91, 3, 800)
    if cfg.tiny and cfg.weights != "random":
        raise RiembenchError("backbone.tiny=true is the random test architecture: it needs "
                             "backbone.weights=random")
    if cfg.weights == "random":
        torch.manual_seed(cfg.init_seed)
        log.warning("%s: RANDOM weights (init_seed=%d%s), not COCO-trained", cfg.name,
                    cfg.init_seed, ", tiny" if cfg.tiny else "")
        return build_detr(cfg, shape), {"source": "random", "init_seed": cfg.init_seed,
                                        "tiny": cfg.tiny}
    from transformers import DetrForObjectDetection

    path, where = resolve_weights(cfg)
    try:
        # output_loading_info=True returns (model, loading info): not in from_pretrained's type
        model, info = cast(tuple[DetrForObjectDetection, dict[str, Any]],
                           DetrForObjectDetection.from_pretrained(
                               str(path), local_files_only=True, output_loading_info=True,
                               dtype=torch.float32))
    except Exception as exc:  # OSError/ValueError/RuntimeError from a damaged or foreign folder
        raise RiembenchError(f"cannot load DETR from {path}: {type(exc).__name__}: "
                             f"{str(exc)[:500]}") from exc
    # from_pretrained fills absent tensors with random values and only warns; a model that is
    # partly random would be reported as "the original", so refuse it
    bad = list(info.get("missing_keys") or []) + [str(k) for k in info.get("mismatched_keys") or []]
    if bad:
        raise RiembenchError(f"DETR weights in {path} do not fit the architecture: "
                             f"{len(bad)} missing or mismatched tensor(s), e.g. {bad[:3]}")
    if info.get("unexpected_keys"):
        log.info("%s: %d unused tensor(s) in the checkpoint, e.g. %s", cfg.name,
                 len(info["unexpected_keys"]), list(info["unexpected_keys"])[:3])
    labels = model.config.num_labels
    assert labels is not None  # a loaded config always has its id2label, hence num_labels
    num_labels = int(labels)
    if shape.num_classes > num_labels:
        raise RiembenchError(f"{path} has a {num_labels}-class head; dataset '{task.name}' needs "
                             f"category ids up to {shape.num_classes - 1}")
    return model.eval(), {"source": "transformers", **where, "num_labels": num_labels}


ENTRY = BackboneEntry(source="transformers", build=build_detr)
