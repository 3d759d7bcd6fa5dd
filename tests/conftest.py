"""Test defaults: no W&B traffic, a store per test, few CPU threads."""

import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
torch.set_num_threads(1)


@pytest.fixture()
def store_dir(tmp_path, monkeypatch):
    path = tmp_path / "runs"
    monkeypatch.setenv("RIEMBENCH_STORE", str(path))
    return path
