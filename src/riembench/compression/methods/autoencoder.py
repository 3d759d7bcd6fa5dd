"""Table 5's PyTorch baselines: a one-hidden-layer and a deep autoencoder over the rows of A.

Each row of A is one training sample. After training, what is stored is the code of every row
(m x k) plus the decoder's weights and biases: the encoder is only a training device (the codes
are computed once and kept), so it is not counted. Shallow: encoder Linear(n, k) + activation,
decoder Linear(k, n). Deep: encoder n -> h -> k, decoder k -> h -> n, with the activation after
every layer except the output; ``h = round(hidden_mult * k)``.

Training standardises A by its global mean and std (one scalar each) and folds both back into
the decoder's last layer afterwards, so the stored count is unchanged and one learning rate works
for matrices of any scale. Both variants share one training function. Defaults (relu, 300
full-batch Adam steps at lr 1e-3, cosine-decayed) take a few seconds for N = 1000 on a CPU and
were the best of a small grid (tanh/relu, lr 1e-2/3e-3/1e-3) on the lp_field matrix; ``steps``
and ``batch_size`` scale a GPU run up.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from riembench.compression.methods.base import MatrixApprox, PerSeedMatrixMethod
from riembench.config.methods import AutoencoderConfig, DeepAutoencoderConfig
from riembench.core.errors import ImpossibleBudget
from riembench.engine.embeddings import ACTIVATIONS

# --------------------------------------------------------------------------------------------
# sizes


def shallow_params(m: int, n: int, k: int) -> int:
    """Codes (m x k) + decoder Linear(k, n) weights and biases."""
    return m * k + k * n + n


def deep_params(m: int, n: int, k: int, h: int) -> int:
    """Codes (m x k) + decoder Linear(k, h) and Linear(h, n), weights and biases."""
    return m * k + (k * h + h) + (h * n + n)


def hidden_width(k: int, hidden_mult: float) -> int:
    return max(1, round(hidden_mult * k))


def largest_fitting(count: Callable[[int], int], budget: int, k_max: int) -> int:
    """Largest k in [1, k_max] with count(k) <= budget (count increasing in k), or 0."""
    lo, hi = 0, k_max
    while lo < hi:  # binary search: count is monotone, and k_max may be large
        mid = (lo + hi + 1) // 2
        if count(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


# --------------------------------------------------------------------------------------------
# networks and the one training loop


class Autoencoder(nn.Module):
    """Encoder and decoder as two Sequentials, so the decoder's parameters count on their own."""

    def __init__(self, dims: list[int], activation: str) -> None:
        super().__init__()
        self.encoder = _mlp(dims, activation, last_activation=True)
        self.decoder = _mlp(dims[::-1], activation, last_activation=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class _Act(nn.Module):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.fn = name, ACTIVATIONS[name]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def _mlp(dims: list[int], activation: str, last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(pairwise(dims)):
        layers.append(nn.Linear(d_in, d_out))
        if last_activation or i < len(dims) - 2:
            layers.append(_Act(activation))
    return nn.Sequential(*layers)


def n_stored(model: Autoencoder, m: int) -> int:
    """What reproduces A: the m codes plus every decoder parameter (counted, not assumed)."""
    first = model.decoder[0]
    assert isinstance(first, nn.Linear)  # _mlp starts with a Linear
    code_dim = first.in_features
    return m * code_dim + sum(p.numel() for p in model.decoder.parameters())


def build_autoencoder(dims: list[int], activation: str, seed: int, device: torch.device) -> Autoencoder:
    """Initialise on the CPU under ``seed`` (PyTorch's default Linear init), then move: the same
    seed gives the same start on any device, and the global RNG is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Autoencoder(dims, activation)
    return model.to(device)


@dataclass
class TrainResult:
    loss: float
    steps_run: int
    failed: str | None


def train_autoencoder(model: Autoencoder, x: torch.Tensor, cfg: AutoencoderConfig, seed: int) -> TrainResult:
    """Adam on the mean squared reconstruction error of the rows of ``x`` (already standardised).

    Stops at the first non-finite loss and reports it instead of raising, so one diverged seed
    is recorded as failed without taking the others down.
    """
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _scheduler(opt, cfg)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    m = x.shape[0]
    loss_value = math.nan
    for step in range(cfg.steps):
        batch = x if cfg.batch_size is None or cfg.batch_size >= m else \
            x[torch.randint(m, (cfg.batch_size,), device=x.device, generator=gen)]
        loss = (model(batch) - batch).square().mean()
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            return TrainResult(loss_value, step, f"non-finite loss at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return TrainResult(loss_value, cfg.steps, None)


def _scheduler(opt: torch.optim.Optimizer, cfg: AutoencoderConfig) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.steps, eta_min=cfg.lr * cfg.min_lr_ratio)


@torch.no_grad()
def decode_rows(model: Autoencoder, x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Codes -> rows, with the standardisation folded into the decoder's last layer (as stored)."""
    last = model.decoder[-1]
    assert isinstance(last, nn.Linear)  # the decoder ends without an activation
    last.weight.mul_(std)
    last.bias.mul_(std).add_(mean)
    return model.decoder(model.encoder(x))


# --------------------------------------------------------------------------------------------
# the two registered methods


class AutoencoderMethod(PerSeedMatrixMethod):
    """Shared by both variants: solve sizes, build, train, decode. Subclasses give the layer
    widths for a code size and the closed-form count."""

    cfg: AutoencoderConfig

    def dims(self, n: int, k: int) -> list[int]:
        return [n, k]

    def count(self, m: int, n: int, k: int) -> int:
        return shallow_params(m, n, k)

    def solve_k(self, m: int, n: int, budget: int) -> int:
        if self.cfg.k is not None:
            k = self.cfg.k if self.count(m, n, self.cfg.k) <= budget else 0
        else:
            k = largest_fitting(lambda c: self.count(m, n, c), budget, min(m, n))
        if k < 1:
            need = self.count(m, n, self.cfg.k or 1)
            raise ImpossibleBudget(f"{self.cfg.name}: a {m}x{n} matrix needs at least {need} "
                                   f"parameters (k={self.cfg.k or 1}); budget is {budget}")
        return k

    def approximate_one(self, target: torch.Tensor, budget: int, seed: int,
                        device: torch.device) -> MatrixApprox:
        m, n = target.shape
        k = self.solve_k(m, n, budget)
        model = build_autoencoder(self.dims(n, k), self.cfg.activation, seed, device)
        params = n_stored(model, m)
        if params != self.count(m, n, k) or params > budget:  # a bug here, never a user error
            raise RuntimeError(f"{self.cfg.name}: network stores {params} numbers, closed form "
                               f"{self.count(m, n, k)}, budget {budget}")
        x = target.to(device=device, dtype=torch.float32)
        mean, std = float(x.mean()), max(float(x.std()), 1e-12)
        result = train_autoencoder(model, (x - mean) / std, self.cfg, seed)
        info: dict[str, Any] = {"dims": self.dims(n, k), "k": k, "steps_run": result.steps_run,
                                "last_loss": result.loss}
        if result.failed is not None:
            return MatrixApprox(None, params, info, failed=result.failed)
        a_hat = decode_rows(model, (x - mean) / std, mean, std)
        info["rel_mse"] = float((a_hat - x).square().mean() / x.var().clamp_min(1e-30))
        return MatrixApprox(a_hat.to(device="cpu", dtype=target.dtype), params, info)




class DeepAutoencoderMethod(AutoencoderMethod):
    cfg: DeepAutoencoderConfig

    def dims(self, n: int, k: int) -> list[int]:
        return [n, hidden_width(k, self.cfg.hidden_mult), k]

    def count(self, m: int, n: int, k: int) -> int:
        return deep_params(m, n, k, hidden_width(k, self.cfg.hidden_mult))
