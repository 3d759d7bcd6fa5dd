"""Metrics shared by the tables: the matrix-vector error (table 5), classification top-1/top-5
and agreement with the original model (tables 1-3), and the evaluation loop behind them."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from riembench.core.errors import RiembenchError
from riembench.data.tasks import NetworkTask


@torch.no_grad()
def matvec_error(target: torch.Tensor, approx: torch.Tensor, probes: torch.Tensor) -> float:
    """Mean over probe vectors x (columns of ``probes``) of ||Â x - A x||_2 / (||A x||_2 sqrt(m)).

    The sqrt(m) (m = output size) makes a predictor that outputs zeros score exactly
    1/sqrt(m), which is the value the poster's Nystroem and LLE rows show; see docs/table5.md.
    Computed in float64 so the metric itself adds no error at the 1e-6 level.
    """
    a = target.to(torch.float64)
    a_hat = approx.to(device=a.device, dtype=torch.float64)
    x = probes.to(device=a.device, dtype=torch.float64)
    z = a @ x
    z_hat = a_hat @ x
    num = torch.linalg.vector_norm(z_hat - z, dim=0)
    den = torch.linalg.vector_norm(z, dim=0).clamp_min(torch.finfo(torch.float64).tiny)
    return float((num / den).mean()) / math.sqrt(a.shape[0])


@torch.no_grad()
def relative_fidelity(target: torch.Tensor, approx: torch.Tensor) -> float:
    """mean|W - Ŵ| / std(W): the weight-space fidelity the RieM authors report."""
    w = target.to(torch.float64)
    return float((w - approx.to(w)).abs().mean() / w.std())


def autocast_dtype(device: torch.device, amp: bool | str | torch.dtype = True) -> torch.dtype | None:
    """The autocast dtype of an evaluation on ``device``: bf16 where the GPU has it, else fp16;
    None (full precision) on the CPU or when ``amp`` is off. ``amp`` may name the dtype
    (``"bf16"``, ``"fp16"``) or be a ``torch.dtype``."""
    if device.type != "cuda" or amp is False or amp is None or amp in ("off", "none", "fp32"):
        return None
    if isinstance(amp, torch.dtype):
        return amp
    if amp in ("fp16", "float16"):
        return torch.float16
    if amp in ("bf16", "bfloat16"):
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def predict(model: torch.nn.Module, dataset: Dataset, batch_size: int = 256,
            device: torch.device | str = "cpu", *, num_workers: int = 0,
            amp: bool | str | torch.dtype = True, channels_last: bool = True,
            progress: bool | None = None, desc: str = "eval"
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of ``model`` on ``dataset`` of (image, label) pairs, on the CPU.

    What a timm-style validation loop does, so a table's evaluation costs no more than the
    loop its users know: eval mode under ``torch.inference_mode``; image batches and the model
    in ``channels_last`` (convolutions' fast layout); on CUDA, pinned host memory with
    ``non_blocking`` copies and autocast (bf16 where supported, else fp16: logits then differ
    from a full-precision pass in the last bits, which can flip a near-tie's top-1; pass
    ``amp=False`` for float32). Logits come back as float32. The model's train/eval mode and
    memory layout are restored afterwards, so the trainer can call this between epochs.
    ``progress``: a tqdm bar over batches (with ETA); None shows it only on a terminal.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=cuda)
    dtype = autocast_dtype(device, amp)
    was_training = model.training
    relayout = channels_last and _needs_channels_last(model)
    if relayout:
        model.to(memory_format=torch.channels_last)
    model.eval()
    outs, targets = [], []
    try:
        with torch.inference_mode(), tqdm(total=len(loader), desc=desc, unit="batch",
                                          disable=_quiet(progress), leave=False,
                                          dynamic_ncols=True) as bar:
            for images, labels in loader:
                x = images.to(device, non_blocking=cuda)
                if relayout and x.dim() == 4:
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                    logits = model(x)
                outs.append(logits.float().cpu())
                targets.append(torch.as_tensor(labels))
                bar.update()
    finally:
        model.train(was_training)
        if relayout:
            model.to(memory_format=torch.contiguous_format)
    if not outs:
        raise RiembenchError("predict: the dataset is empty")
    return torch.cat(outs), torch.cat(targets)


def _needs_channels_last(model: torch.nn.Module) -> bool:
    """Whether a layout change is worth it: some 4-d (convolution) weight is not channels_last
    yet (a model already in that layout is used, and left, as it is)."""
    return any(p.dim() == 4 and not p.is_contiguous(memory_format=torch.channels_last)
               for p in model.parameters())


def _quiet(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None lets tqdm decide (shown on a terminal only)."""
    return None if progress is None else not progress


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float((logits.argmax(dim=1) == labels).float().mean())


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """Top-k accuracy in percent: the label is among the k highest logits (k is capped at the
    number of classes, so a 3-class fixture's top-5 is 100%)."""
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return 100.0 * float((top == labels.view(-1, 1)).any(dim=1).float().mean())


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """``acc`` (top-1, the name the records and tables use) and ``top5``, in percent."""
    return {"acc": accuracy(logits, labels), "top5": topk_accuracy(logits, labels, 5)}


def output_fidelity(logits: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """How closely a compressed model reproduces the original's outputs on the same images.

    ``agree``: % of images where both predict the same class; ``out_rel_err``: relative
    Frobenius error of the logits. Why beside top-1: with few test images (or random weights,
    as in the fixture tests) top-1 cannot separate methods, while agreement with the original
    still measures what a data-free compression keeps.
    """
    if logits.shape != reference.shape:
        raise RiembenchError(f"output_fidelity: {tuple(logits.shape)} vs {tuple(reference.shape)}")
    agree = 100.0 * float((logits.argmax(dim=1) == reference.argmax(dim=1)).float().mean())
    err = float(torch.linalg.norm(logits - reference) / torch.linalg.norm(reference).clamp_min(1e-30))
    return {"agree": agree, "out_rel_err": err}


def evaluate_accuracy(model: torch.nn.Module, dataset: Dataset, batch_size: int = 256,
                      device: torch.device | str = "cpu", *, num_workers: int = 0,
                      **predict_kwargs) -> float:
    """Top-1 accuracy in percent of ``model`` on ``dataset`` of (image, label) pairs (see
    :func:`predict` for the evaluation mode and its options)."""
    return accuracy(*predict(model, dataset, batch_size, device, num_workers=num_workers,
                             **predict_kwargs))


class Evaluator:
    """Scores models of one network cell on its task's splits.

    The original model's logits per split are computed on first use and kept for the cell's
    seeds (one extra pass per split, not per seed): ``agree`` and ``out_rel_err`` compare each
    compressed model with them. A task that scores models itself (COCO) gets no reference.
    """

    def __init__(self, task: NetworkTask, original: nn.Module, device: torch.device,
                 batch_size: int, num_workers: int) -> None:
        self.task, self.original, self.device = task, original, device
        self.batch_size, self.num_workers = batch_size, num_workers
        self._references: dict[str, torch.Tensor] = {}

    def split(self, model: nn.Module, split: str) -> dict[str, float]:
        """Metrics of ``model`` on one split (the model is moved to the device and back)."""
        model.to(self.device)
        try:
            if self.task.scores_itself:
                return dict(self.task.evaluate(model, split, device=self.device,
                                               batch_size=self.batch_size,
                                               num_workers=self.num_workers))
            logits, labels = self._predict(model, split)
            metrics = classification_metrics(logits, labels)  # acc (top-1) and top5
            metrics.update(output_fidelity(logits, self.reference(split)))
            return metrics
        finally:
            model.to("cpu")

    def score(self, model: nn.Module, split: str) -> float:
        """The metric that ranks seeds and checkpoints (top-1, or AP) on one split, without
        the reference comparison."""
        model.to(self.device)
        try:
            if self.task.scores_itself:
                return self.task.evaluate(model, split, device=self.device,
                                          batch_size=self.batch_size,
                                          num_workers=self.num_workers)[self.task.primary_metric]
            return classification_metrics(*self._predict(model, split))[self.task.primary_metric]
        finally:
            model.to("cpu")

    def reference(self, split: str) -> torch.Tensor:
        if split not in self._references:
            self.original.to(self.device)
            try:
                self._references[split] = self._predict(self.original, split)[0]
            finally:
                self.original.to("cpu")
        return self._references[split]

    def _predict(self, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return predict(model, self.task.split(split), self.batch_size, self.device,
                       num_workers=self.num_workers)
