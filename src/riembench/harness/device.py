"""Which torch device a run or a training uses (one rule for both)."""

from __future__ import annotations

import torch

from riembench.core.errors import RiembenchError


def resolve_device(name: str, key: str = "device") -> torch.device:
    """``auto`` is CUDA when present, else CPU; an explicit CUDA device without CUDA is an error
    (never a silent fall-back to a slower device whose timings would then be recorded)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RiembenchError(f"{key}={name} requested but CUDA is not available; use {key}=cpu")
    return dev


def device_name(device: torch.device) -> str:
    """The device as records name it: the GPU's model, or the CPU's."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    import platform

    return f"cpu:{platform.processor() or platform.machine()}"
