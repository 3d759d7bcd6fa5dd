"""Metrics shared by the tables. Table 5: normalized matrix-vector product error."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset

from riembench.errors import RiembenchError


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


def predict(model: torch.nn.Module, dataset: Dataset, batch_size: int = 256,
            device: torch.device | str = "cpu", *, num_workers: int = 0
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, labels) of ``model`` on ``dataset`` of (image, label) pairs, on the CPU.

    Runs under ``torch.inference_mode`` in eval mode (BatchNorm uses its running statistics) and
    restores the model's train/eval mode afterwards, so the trainer can call it between epochs.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = model.training
    model.eval()
    outs, targets = [], []
    try:
        with torch.inference_mode():
            for images, labels in loader:
                outs.append(model(images.to(device, non_blocking=True)).float().cpu())
                targets.append(torch.as_tensor(labels))
    finally:
        model.train(was_training)
    if not outs:
        raise RiembenchError("predict: the dataset is empty")
    return torch.cat(outs), torch.cat(targets)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float((logits.argmax(dim=1) == labels).float().mean())


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
                      device: torch.device | str = "cpu", *, num_workers: int = 0) -> float:
    """Top-1 accuracy in percent of ``model`` on ``dataset`` of (image, label) pairs (see
    :func:`predict` for the evaluation mode)."""
    return accuracy(*predict(model, dataset, batch_size, device, num_workers=num_workers))
