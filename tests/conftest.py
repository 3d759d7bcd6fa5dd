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


@pytest.fixture()
def imagenet_val_root(tmp_path):
    """A data root holding a tiny ImageNet val in its on-disk layout: 1000 class folders (a
    pretrained head needs all of them), one small JPEG each, in distinct colours."""
    from PIL import Image

    data = tmp_path / "data"
    for k in range(1000):
        folder = data / "imagenet" / "val" / f"n{k:08d}"
        folder.mkdir(parents=True)
        color = ((37 * k) % 256, (91 * k) % 256, (53 * k) % 256)
        Image.new("RGB", (12, 10), color).save(folder / f"ILSVRC2012_val_{k:08d}.JPEG")
    return data
