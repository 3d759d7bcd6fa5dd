"""``riembench-train``: train a table-1 backbone (lenet5, resnet9) on one dataset and cache it.

Table 1 compresses networks the paper trained itself, so we train them here, once per
(backbone, dataset, seed, recipe), and every compression run loads the cached checkpoint
(:func:`riembench.backbones.load_pretrained`). The recipe is ``conf/train.yaml``'s ``train``
block; keys left null there come from its ``presets`` for the (backbone, dataset) pair, so
``riembench-train backbone=lenet5 dataset=mnist`` needs no further flags. Training uses only
the dataset's train split; dev accuracy is printed each epoch and test accuracy is measured once,
at the end, and stored with the checkpoint.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import hydra
import torch
import torch.nn.functional as F
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

import riembench
from riembench.backbones.checkpoints import checkpoint_path, save_checkpoint, short_hash
from riembench.backbones.registry import TaskShape, as_typed, build_backbone, linear_param_count
from riembench.config.backbones import BACKBONES
from riembench.config.datasets import DATASETS
from riembench.config.identity import typed_group
from riembench.config.run import DataConfig, WandbConfig
from riembench.config.sources import store_schemas
from riembench.config.tree import config_dir
from riembench.core.errors import RiembenchError
from riembench.harness.device import resolve_device
from riembench.harness.evaluate import evaluate_accuracy
from riembench.harness.tracking import log_file_artifact, training_run

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

log = logging.getLogger("riembench")

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("onecycle", "cosine", "constant")
AUGMENTS = ("none", "crop", "crop_flip")
#: used when neither the train block nor the presets set a key
FALLBACKS = {"epochs": 10, "lr": 0.05, "batch_size": 128, "weight_decay": 5e-4,
             "label_smoothing": 0.0, "augment": "none"}
#: keys that do not change the trained weights' recipe (left out of the checkpoint's hash)
NON_RECIPE = ("device", "threads", "force", "progress")


@dataclass
class TrainConfig:
    #: null: from ``presets`` (then FALLBACKS)
    epochs: int | None = None
    #: peak learning rate
    lr: float | None = None
    batch_size: int | None = None
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = True
    #: L2 on weights of conv/linear layers (not on biases or BatchNorm)
    weight_decay: float | None = None
    schedule: str = "onecycle"
    #: fraction of all steps spent warming up (OneCycle's pct_start)
    warmup: float = 0.2
    label_smoothing: float | None = None
    #: batch augmentation on the device: none | crop (random translation) | crop_flip
    augment: str | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    #: retrain even if the checkpoint exists
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        for key, value, known in (("optimizer", self.optimizer, OPTIMIZERS),
                                  ("schedule", self.schedule, SCHEDULES)):
            if value not in known:
                raise RiembenchError(f"train.{key}='{value}' unknown; known: {', '.join(known)}")
        if self.augment is not None and self.augment not in AUGMENTS:
            raise RiembenchError(f"train.augment='{self.augment}' unknown; known: "
                                 f"{', '.join(AUGMENTS)}")

    def recipe(self) -> dict[str, Any]:
        """The fields that determine the trained weights (hashed into the checkpoint name)."""
        return {k: v for k, v in asdict(self).items() if k not in NON_RECIPE}


@dataclass
class TrainAppConfig:
    """Top level of ``conf/train.yaml`` (typos in train.* fail at composition)."""

    backbone: Any = MISSING
    dataset: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    #: the training run is logged to W&B like the compression runs (job type "train")
    wandb: WandbConfig = field(default_factory=WandbConfig)
    #: presets[backbone][dataset or "default"] -> train keys used where train.<key> is null
    presets: dict[str, Any] = field(default_factory=dict)


ConfigStore.instance().store(name="train_base_config", node=TrainAppConfig)
store_schemas()  # the backbone/ and dataset/ files train.yaml composes inherit them


def resolve_recipe(train: TrainConfig, presets: dict[str, Any], backbone: str,
                   dataset: str) -> TrainConfig:
    """Fill the train block's null keys from presets[backbone][dataset], then its "default"."""
    table = presets.get(backbone, {}) or {}
    layers = [table.get(dataset) or {}, table.get("default") or {}, FALLBACKS]
    known = {f.name for f in fields(TrainConfig)}
    for layer in layers[:2]:
        unknown = set(layer) - known
        if unknown:
            raise RiembenchError(f"presets.{backbone} has unknown train keys: {sorted(unknown)}")
    values = asdict(train)
    for key, value in values.items():
        if value is None and key != "threads":
            values[key] = next((lay[key] for lay in layers if lay.get(key) is not None), None)
    return TrainConfig(**values)


def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to size/8 pixels (zero fill) and, for crop_flip, h-flips.

    Done on whole batches with one gather, so it costs nothing next to the forward pass and
    draws from its own seeded generator (the run stays reproducible).
    """
    if mode == "none":
        return x
    b, c, h, w = x.shape
    pad = max(1, h // 8)
    shifts = torch.randint(0, 2 * pad + 1, (2, b), generator=gen).to(x.device)
    rows = shifts[0][:, None] + torch.arange(h, device=x.device)
    cols = shifts[1][:, None] + torch.arange(w, device=x.device)
    padded = F.pad(x, (pad, pad, pad, pad))
    out = padded[torch.arange(b, device=x.device)[:, None, None, None],
                 torch.arange(c, device=x.device)[None, :, None, None],
                 rows[:, None, :, None], cols[:, None, None, :]]
    if mode == "crop_flip":
        flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)[:, None, None, None]
        out = torch.where(flip, out.flip(3), out)
    return out


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups: list[dict[str, Any]] = [{"params": decay, "weight_decay": cfg.weight_decay},
                                    {"params": no_decay, "weight_decay": 0.0}]
    assert cfg.lr is not None, "resolve_recipe first"
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0)


def make_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig,
                  total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "onecycle":
        assert cfg.lr is not None, "resolve_recipe first"
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=cfg.lr, total_steps=total_steps, pct_start=cfg.warmup,
            cycle_momentum=cfg.optimizer == "sgd" and cfg.momentum > 0)
    warm = max(1, int(cfg.warmup * total_steps))

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total_steps - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _check_resolved(cfg: TrainConfig) -> None:
    missing = [k for k in FALLBACKS if getattr(cfg, k) is None]
    if missing:
        raise RiembenchError(f"train config has unresolved keys {missing}; use resolve_recipe")


def train_backbone(backbone_cfg: Any, task: Any, train_cfg: TrainConfig,
                   device: torch.device | str, *, eval_batch_size: int = 256,
                   num_workers: int = 0,
                   on_epoch: Callable[[dict[str, float]], None] | None = None,
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``backbone_cfg``'s network on ``task.train``; return it (eval mode) and metrics.

    Seeded: the init, the shuffling and the augmentation each draw from ``train_cfg.seed``, so
    two CPU runs give identical weights. Metrics: final dev/test accuracy (%), per-epoch
    history, wall time, parameter counts. ``on_epoch`` gets each epoch's history entry (the
    CLI logs it to W&B).
    """
    _check_resolved(train_cfg)
    assert train_cfg.epochs is not None and train_cfg.batch_size is not None  # checked above
    assert train_cfg.label_smoothing is not None
    cfg, device = as_typed(backbone_cfg), torch.device(device)
    torch.manual_seed(train_cfg.seed)
    model = build_backbone(cfg, TaskShape.of(task)).to(device)
    bs = int(train_cfg.batch_size)
    loader = DataLoader(task.train, batch_size=bs, shuffle=True, num_workers=num_workers,
                        generator=torch.Generator().manual_seed(train_cfg.seed),
                        drop_last=len(task.train) > bs)  # no size-1 batch for BatchNorm
    opt = make_optimizer(model, train_cfg)
    sched = make_schedule(opt, train_cfg, train_cfg.epochs * len(loader))
    criterion = nn.CrossEntropyLoss(label_smoothing=train_cfg.label_smoothing)
    aug_gen = torch.Generator().manual_seed(train_cfg.seed + 1)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with logging_redirect_tqdm(), tqdm(total=train_cfg.epochs * len(loader), unit="step",
                                       desc=f"{cfg.name}/{task.name}",
                                       disable=not train_cfg.progress) as bar:
        for epoch in range(1, train_cfg.epochs + 1):
            loss = _train_epoch(model, loader, opt, sched, criterion, train_cfg, aug_gen, device,
                                bar)
            dev = evaluate_accuracy(model, task.dev, eval_batch_size, device,
                                    num_workers=num_workers)
            history.append({"epoch": epoch, "train_loss": loss, "dev_acc": dev,
                            "lr": opt.param_groups[0]["lr"]})
            bar.set_postfix(loss=f"{loss:.3f}", dev=f"{dev:.2f}%")
            elapsed = time.perf_counter() - start
            eta = elapsed / epoch * (train_cfg.epochs - epoch)
            log.info("%s/%s epoch %d/%d: train loss %.4f, dev acc %.2f%% (%.0f s, ETA %.0f s)",
                     cfg.name, task.name, epoch, train_cfg.epochs, loss, dev, elapsed, eta)
            if on_epoch is not None:
                on_epoch(history[-1])
    wall = time.perf_counter() - start
    test = evaluate_accuracy(model, task.test, eval_batch_size, device, num_workers=num_workers)
    model.eval()
    metrics = {"dev_acc": history[-1]["dev_acc"], "test_acc": test, "history": history,
               "epochs": train_cfg.epochs, "wall_time_s": wall,
               "fc_params": linear_param_count(model),
               "params": sum(p.numel() for p in model.parameters()),
               "split_sizes": {s: len(getattr(task, s)) for s in ("train", "dev", "test")}}
    return model, metrics


def _train_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer,
                 sched: Any, criterion: nn.Module, cfg: TrainConfig, gen: torch.Generator,
                 device: torch.device, bar: tqdm) -> float:
    """One pass over the train split; returns the mean training loss."""
    assert cfg.augment is not None, "resolve_recipe first"
    model.train()
    total, count = 0.0, 0
    for images, labels in loader:
        images = augment_batch(images.to(device, non_blocking=True), cfg.augment, gen)
        labels = torch.as_tensor(labels).to(device)
        loss = criterion(model(images), labels)
        if not torch.isfinite(loss):
            raise RiembenchError(f"training diverged (loss {loss.item()}); lower train.lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        total += loss.item() * labels.numel()
        count += labels.numel()
        bar.update(1)
    return total / max(1, count)


def _as_dict(obj: Any) -> Any:
    # a schema instance or a config node, never a dataclass type
    return (asdict(cast("DataclassInstance", obj)) if is_dataclass(obj)
            else OmegaConf.to_container(obj, resolve=True))


def train_from_config(cfg: DictConfig) -> Path:
    """What ``riembench-train`` does with a composed config; returns the checkpoint path."""
    backbone_cfg = typed_group(cfg.backbone, BACKBONES)
    if BACKBONES.get(backbone_cfg.name).source != "trained":
        trained = [n for n in BACKBONES.names() if BACKBONES.get(n).source == "trained"]
        raise RiembenchError(f"riembench-train trains {', '.join(trained)}; "
                             f"'{backbone_cfg.name}' is not trained here")
    dataset_cfg = typed_group(cfg.dataset, DATASETS)
    presets = OmegaConf.to_container(cfg.presets, resolve=True)
    train = OmegaConf.to_object(cfg.train)
    assert isinstance(presets, dict) and isinstance(train, TrainConfig)  # TrainAppConfig's types
    train_cfg = resolve_recipe(train, cast(dict[str, Any], presets), backbone_cfg.name,
                               dataset_cfg.name)
    recipe_hash = short_hash({"train": train_cfg.recipe(), "dataset": _as_dict(dataset_cfg)}, 8)
    path = checkpoint_path(backbone_cfg, dataset_cfg.name, train_cfg.seed, recipe_hash)
    if path.exists() and not train_cfg.force:
        log.info("checkpoint exists, not training (train.force=true retrains): %s", path)
        return path
    if train_cfg.threads:
        torch.set_num_threads(int(train_cfg.threads))
    device = resolve_device(train_cfg.device, "train.device")
    task = DATASETS.get(dataset_cfg.name)(dataset_cfg, Path(str(cfg.data.root)).expanduser())
    if task.name != dataset_cfg.name:  # the loader looks checkpoints up by task.name
        path = checkpoint_path(backbone_cfg, task.name, train_cfg.seed, recipe_hash)
    log.info("training %s on %s (%d images) on %s: %s", backbone_cfg.name, task.name,
             len(task.train), device, train_cfg.recipe())
    run_config = {"backbone": _as_dict(backbone_cfg), "dataset": _as_dict(dataset_cfg),
                  "train": train_cfg.recipe(), "recipe_hash": recipe_hash,
                  "wandb": OmegaConf.to_container(cfg.wandb, resolve=True)}
    name = f"{backbone_cfg.name}-{task.name}-seed{train_cfg.seed}-{recipe_hash}"
    with training_run(run_config, name, [f"backbone:{backbone_cfg.name}",
                                         f"dataset:{task.name}", "train"]) as run:
        def on_epoch(h: dict[str, float]) -> None:
            if run is not None:
                run.log({"train/loss": h["train_loss"], "dev/acc": h["dev_acc"],
                         "train/lr": h["lr"]}, step=int(h["epoch"]))

        model, metrics = train_backbone(backbone_cfg, task, train_cfg, device,
                                        eval_batch_size=int(cfg.data.batch_size),
                                        num_workers=int(cfg.data.num_workers), on_epoch=on_epoch)
        meta = {**metrics, "backbone": _as_dict(backbone_cfg), "arch": backbone_cfg.arch(),
                "dataset": task.name, "dataset_config": _as_dict(dataset_cfg),
                "dev_note": getattr(task, "dev_note", ""), "task_shape": asdict(TaskShape.of(task)),
                "recipe": train_cfg.recipe(), "recipe_hash": recipe_hash, "train_seed": train_cfg.seed,
                "device": str(device), "threads": torch.get_num_threads(),
                "torch": torch.__version__, "riembench": riembench.__version__,
                "date": datetime.now(UTC).isoformat(timespec="seconds"), "command": sys.argv}
        save_checkpoint(path, model, meta)
        if run is not None:
            run.summary.update({"dev/acc": metrics["dev_acc"], "test/acc": metrics["test_acc"],
                                "wall_time_s": metrics["wall_time_s"],
                                "params": metrics["params"], "checkpoint": str(path)})
            log_file_artifact(run, path, f"checkpoint-{backbone_cfg.name}-{task.name}", "model")
    log.info("%s/%s: dev %.2f%%, test %.2f%% after %d epochs (%.1f s); saved %s",
             backbone_cfg.name, task.name, metrics["dev_acc"], metrics["test_acc"],
             metrics["epochs"], metrics["wall_time_s"], path)
    return path


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> None:
    try:
        train_from_config(cfg)
    except RiembenchError as exc:
        log.error("%s", exc)
        raise SystemExit(f"riembench-train: {exc}") from None


if __name__ == "__main__":
    main()
