"""Input checks shared by every loader: refuse empty or non-finite numbers before any fitting.

Why one module: a NaN in a target matrix or a checkpoint otherwise surfaces much later as a bare
linear-algebra error inside a method (or, worse, as a finite but meaningless record). Each check
raises :class:`InvalidInput` naming the file and the tensor, so the user knows what to fix.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from riembench.core.errors import RiembenchError

if TYPE_CHECKING:  # torch is imported where tensors are checked: config checks stay light
    import torch
    from torch import nn


class InvalidInput(RiembenchError, ValueError):
    """An input file or tensor that cannot be used (empty, non-finite)."""


def _describe_bad(t: torch.Tensor) -> str:
    import torch

    nan = int(torch.isnan(t).sum())
    posinf = int(torch.isposinf(t).sum())
    neginf = int(torch.isneginf(t).sum())
    parts = [f"{n} {what}" for n, what in ((nan, "NaN"), (posinf, "+inf"), (neginf, "-inf")) if n]
    return ", ".join(parts) + f" of {t.numel()} values"


def require_finite(tensor: torch.Tensor, what: str, source: Any = None) -> torch.Tensor:
    """``tensor`` unchanged if it is non-empty and (if floating) all finite; else InvalidInput.

    ``what`` names the tensor (``"matrix"``, ``"fc1.weight"``), ``source`` the file it came from.
    """
    import torch

    where = f" in {source}" if source is not None else ""
    if tensor.numel() == 0:
        raise InvalidInput(f"{what}{where} is empty (shape {tuple(tensor.shape)})")
    inexact = tensor.is_floating_point() or tensor.is_complex()
    if inexact and not bool(torch.isfinite(tensor).all()):
        raise InvalidInput(f"{what}{where} has non-finite values ({_describe_bad(tensor)}); "
                           "fix or regenerate the file")
    return tensor


def require_finite_state(state: Mapping[str, Any], source: Any) -> Mapping[str, Any]:
    """Every tensor of a state dict (checkpoint, pretrained weights file) non-empty and finite.

    Empty tensors are allowed inside a non-empty state dict (some modules keep size-0 buffers);
    an empty state dict is not.
    """
    import torch

    if not state:
        raise InvalidInput(f"{source} holds no tensors (an empty state dict)")
    for name, value in state.items():
        if isinstance(value, torch.Tensor) and value.numel():
            require_finite(value, f"tensor '{name}'", source)
    return state


def require_finite_module(model: nn.Module, source: Any) -> nn.Module:
    """Every parameter and buffer of a built model finite (whatever loaded its weights)."""
    named: Iterable[tuple[str, torch.Tensor]] = (*model.named_parameters(), *model.named_buffers())
    for name, value in named:
        if value.numel():
            require_finite(value.detach(), f"tensor '{name}'", source)
    return model


def require_nonempty(count: int, what: str, source: Any) -> int:
    """A dataset split or file with at least one item."""
    if count < 1:
        raise InvalidInput(f"{what} in {source} is empty (0 items)")
    return count


def check_number(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False) -> None:
    """A finite number in the stated range (composition-time checks of settings)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InvalidInput(f"{name} must be finite, got {value}")
    lo_bad = low is not None and (x <= low if low_open else x < low)
    hi_bad = high is not None and (x >= high if high_open else x > high)
    if lo_bad or hi_bad:
        lo = "" if low is None else ("(" if low_open else "[") + f"{low}"
        hi = "" if high is None else f"{high}" + (")" if high_open else "]")
        raise InvalidInput(f"{name} must be in {lo or '(-inf'}, {hi or 'inf)'}, got {value}")


def check_run_settings(cfg: Any) -> None:
    """Top-level settings of a run that no later step checks: a seed list with seeds in it,
    positive thread/batch counts, a positive claim age."""
    if cfg.seeds is not None and len(cfg.seeds) == 0:
        raise InvalidInput("seeds=[] has no seeds: give at least one (e.g. 'seeds=[0,1,2]'), or "
                           "drop it to run seed=<n>")
    for seed in list(cfg.seeds or []) + [cfg.seed]:
        check_number(seed, "seed", low=0, high=2**32 - 1)
    if cfg.threads is not None:
        check_number(cfg.threads, "threads", low=1)
    check_number(cfg.data.batch_size, "data.batch_size", low=1)
    check_number(cfg.data.num_workers, "data.num_workers", low=0)
    check_number(cfg.store.claim_stale_s, "store.claim_stale_s", low=0, low_open=True)


def check_choice(value: Any, name: str, choices: Iterable[str]) -> None:
    """One of the named choices (composition-time checks of settings): the error lists them.
    A plain :class:`RiembenchError`, as the settings' own checks raise."""
    allowed = list(choices)
    if value not in allowed:
        raise RiembenchError(f"{name} must be one of {', '.join(allowed)}, got '{value}'")
