"""Image datasets: tiny fixtures in the real on-disk formats, read through the real builders."""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from riembench.config.datasets import (
    DATASETS,
    Cifar100Config,
    DigitsConfig,
    ImageNetConfig,
    MnistConfig,
)
from riembench.config.identity import typed_group
from riembench.config.tree import config_dir
from riembench.core.errors import RiembenchError
from riembench.data.images import (
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MNIST_MEAN,
    MNIST_STD,
    ImageTask,
    make_loader,
)


def build(name: str, cfg, root: Path | None = None) -> ImageTask:
    return DATASETS.get(name)(cfg, root)


def indices(ds) -> set[int]:
    return {int(i) for i in ds.indices}


def stack(ds) -> tuple[torch.Tensor, torch.Tensor]:
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.tensor(ys)


# ------------------------------------------------------------------------------------- fixtures


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """idx format: big-endian magic (2051 images / 2049 labels), big-endian dims, uint8 data."""
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture()
def mnist_root(tmp_path) -> Path:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", 2051, rng.integers(0, 256, (n, 28, 28)))
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", 2049, np.arange(n) % 10)
    return tmp_path


def write_pickle(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture()
def cifar_root(tmp_path) -> Path:
    """The python-version pickles: N x 3072 uint8 rows (RGB planes), fine/coarse labels, meta."""
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("test", 10)):
        write_pickle(base / split, {
            "filenames": [f"img_{i}.png" for i in range(n)],
            "batch_label": f"{split} batch",
            "fine_labels": [(7 * i) % 100 for i in range(n)],
            "coarse_labels": [i % 20 for i in range(n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        })
    write_pickle(base / "meta", {"fine_label_names": [f"class{i}" for i in range(100)],
                                 "coarse_label_names": [f"super{i}" for i in range(20)]})
    return tmp_path


COLORS = {"n01440764": (200, 30, 30), "n01443537": (30, 200, 30), "n01484850": (30, 30, 200)}


def write_folder(path: Path, per_class: int) -> None:
    for wnid, color in COLORS.items():
        (path / wnid).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (50, 40), color).save(path / wnid / f"img_{i}.JPEG", quality=95)


@pytest.fixture()
def imagenet_root(tmp_path) -> Path:
    write_folder(tmp_path / "imagenet" / "val", 4)
    return tmp_path


# ---------------------------------------------------------------------------------------- digits


def test_digits_splits_shapes_and_normalization():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    task = build("digits", DigitsConfig())
    assert (task.num_classes, task.in_channels, task.image_size) == (10, 1, 32)
    assert (len(task.train), len(task.dev), len(task.test)) == (1131, 126, 540)
    assert indices(task.train).isdisjoint(indices(task.dev))
    assert indices(task.test).isdisjoint(indices(task.train) | indices(task.dev))
    assert len(indices(task.train) | indices(task.dev) | indices(task.test)) == 1797
    y = load_digits().target
    _, official_test = train_test_split(np.arange(1797), test_size=0.3, stratify=y, random_state=0)
    assert indices(task.test) == set(official_test.tolist())
    x, labels = stack(task.train)
    assert x.shape == (1131, 1, 32, 32) and x.dtype == torch.float32
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3  # train statistics
    assert labels.min() == 0 and labels.max() == 9
    assert "30%" in task.dev_note and "10%" in task.dev_note


def test_digits_split_is_fixed_and_seeded():
    a, b = build("digits", DigitsConfig()), build("digits", DigitsConfig())
    assert torch.equal(a.dev.indices, b.dev.indices) and torch.equal(a.dev[5][0], b.dev[5][0])
    other = build("digits", DigitsConfig(split_seed=1))
    assert not torch.equal(a.dev.indices, other.dev.indices)
    assert torch.equal(a.test.indices, other.test.indices)  # test never moves


# ----------------------------------------------------------------------------------------- MNIST


def test_mnist_from_idx_files(mnist_root):
    task = build("mnist", MnistConfig(), mnist_root)
    assert (task.name, task.num_classes, task.in_channels) == ("mnist", 10, 1)
    assert (len(task.train), len(task.dev), len(task.test)) == (54, 6, 20)
    assert indices(task.train).isdisjoint(indices(task.dev))
    assert len(indices(task.train) | indices(task.dev)) == 60
    x, y = task.dev[0]
    assert x.shape == (1, 32, 32) and isinstance(y, int) and 0 <= y <= 9
    # 28x28 zero-padded by 2 on each side, then normalized with MNIST mean/std
    background = (0 - MNIST_MEAN[0]) / MNIST_STD[0]
    assert torch.allclose(x[:, :2], torch.full((1, 2, 32), background))
    raw = np.frombuffer((mnist_root / "MNIST/raw/train-images-idx3-ubyte").read_bytes()[16:],
                        np.uint8).reshape(60, 28, 28)
    expected = (torch.from_numpy(raw[int(task.dev.indices[0])].copy()).float() / 255
                - MNIST_MEAN[0]) / MNIST_STD[0]
    assert torch.allclose(x[0, 2:30, 2:30], expected, atol=1e-5)
    again = build("mnist", MnistConfig(), mnist_root)
    assert torch.equal(task.dev.indices, again.dev.indices)
    small = build("mnist", MnistConfig(image_size=16, resize="bilinear"), mnist_root)
    assert small.test[0][0].shape == (1, 16, 16)


def test_mnist_missing_names_the_files(tmp_path):
    with pytest.raises(RiembenchError) as err:
        build("mnist", MnistConfig(), tmp_path)
    message = str(err.value)
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "download=True" in message


def test_mnist_corrupt_file_is_named(mnist_root):
    bad = mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-3])
    with pytest.raises(RiembenchError, match="t10k-labels-idx1-ubyte"):
        build("mnist", MnistConfig(), mnist_root)
    write_idx(bad, 2051, np.zeros(20))  # wrong magic number
    with pytest.raises(RiembenchError, match="magic number 2051, expected 2049"):
        build("mnist", MnistConfig(), mnist_root)


# ------------------------------------------------------------------------------------- CIFAR-100


def test_cifar100_from_pickles(cifar_root):
    task = build("cifar100", Cifar100Config(verify_md5=False), cifar_root)
    assert (task.num_classes, task.in_channels, task.image_size) == (100, 3, 32)
    assert (len(task.train), len(task.dev), len(task.test)) == (36, 4, 10)
    assert indices(task.train).isdisjoint(indices(task.dev))
    x, y = task.dev[0]
    assert x.shape == (3, 32, 32) and 0 <= y < 100
    with (cifar_root / "cifar-100-python" / "train").open("rb") as f:
        entry = pickle.load(f, encoding="latin1")
    i = int(task.dev.indices[0])
    raw = torch.from_numpy(entry["data"][i].reshape(3, 32, 32)).float() / 255
    mean, std = torch.tensor(CIFAR100_MEAN)[:, None, None], torch.tensor(CIFAR100_STD)[:, None, None]
    assert torch.allclose(x, (raw - mean) / std, atol=1e-5)  # dev: no augmentation
    assert y == entry["fine_labels"][i]
    torch.manual_seed(0)
    augmented = torch.stack([task.train[0][0] for _ in range(8)])
    assert augmented.shape == (8, 3, 32, 32) and augmented.std(0).max() > 0  # random crops/flips
    plain = build("cifar100", Cifar100Config(verify_md5=False, augment=False), cifar_root)
    assert torch.equal(plain.train[0][0], plain.train[0][0])
    assert torch.equal(plain.dev.indices, task.dev.indices)


def test_cifar100_md5_check_names_the_file(cifar_root):
    with pytest.raises(RiembenchError, match=r"corrupt CIFAR-100 file .*cifar-100-python.train.*md5"):
        build("cifar100", Cifar100Config(), cifar_root)


def test_cifar100_missing_and_unreadable(tmp_path, cifar_root):
    with pytest.raises(RiembenchError) as err:
        build("cifar100", Cifar100Config(), tmp_path / "empty")
    assert str(tmp_path / "empty" / "cifar-100-python" / "meta") in str(err.value)
    assert "CIFAR100('data', download=True)" in str(err.value)
    (cifar_root / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(RiembenchError, match=r"could not read CIFAR-100 .*test"):
        build("cifar100", Cifar100Config(verify_md5=False), cifar_root)


# -------------------------------------------------------------------------------------- ImageNet


def test_imagenet_val_only_carves_dev_out_of_test(imagenet_root):
    cfg = ImageNetConfig(dev_size=3, expected_classes=3)
    task = build("imagenet", cfg, imagenet_root)
    assert (task.num_classes, task.in_channels, task.image_size) == (3, 3, 224)
    assert (len(task.train), len(task.dev), len(task.test)) == (0, 3, 9)
    assert set(task.dev.indices).isdisjoint(task.test.indices)
    assert "excluded from test" in task.dev_note
    x, y = task.test[0]
    assert x.shape == (3, 224, 224) and 0 <= y < 3
    color = torch.tensor(COLORS[sorted(COLORS)[y]]) / 255  # labels follow sorted wnids
    expected = (color - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x.mean((1, 2)), expected, atol=0.05)
    again = build("imagenet", cfg, imagenet_root)
    assert again.dev.indices == task.dev.indices


def test_imagenet_dev_from_train_and_limit(imagenet_root):
    write_folder(imagenet_root / "imagenet" / "train", 3)
    cfg = ImageNetConfig(dev_size=2, expected_classes=3, image_size=32, resize_size=36)
    task = build("imagenet", cfg, imagenet_root)
    assert (len(task.train), len(task.dev), len(task.test)) == (7, 2, 12)
    assert set(task.train.indices).isdisjoint(task.dev.indices)
    assert "train/" in task.dev_note and task.dev[0][0].shape == (3, 32, 32)
    limited = build("imagenet", ImageNetConfig(dev_size=2, expected_classes=3, limit=5,
                                               image_size=32, resize_size=36), imagenet_root)
    assert len(limited.test) == 5 and "limit=5" in limited.dev_note
    larger = build("imagenet", ImageNetConfig(dev_size=2, expected_classes=3, limit=8,
                                              image_size=32, resize_size=36), imagenet_root)
    assert set(limited.test.indices) <= set(larger.test.indices)


def test_imagenet_missing_flat_and_wrong_class_count(tmp_path, imagenet_root):
    with pytest.raises(RiembenchError) as err:
        build("imagenet", ImageNetConfig(), tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "imagenet" / "val") in str(err.value)
    assert "valprep.sh" in str(err.value)
    flat = tmp_path / "flat"
    (flat / "imagenet" / "val").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(flat / "imagenet" / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(RiembenchError, match="flat"):
        build("imagenet", ImageNetConfig(), flat)
    with pytest.raises(RiembenchError, match="3 class folders, expected 1000"):
        build("imagenet", ImageNetConfig(dev_size=2), imagenet_root)


def test_imagenet_corrupt_image_is_named(imagenet_root):
    bad = imagenet_root / "imagenet" / "val" / "n01440764" / "img_0.JPEG"
    bad.write_bytes(b"\xff\xd8 truncated")
    task = build("imagenet", ImageNetConfig(dev_size=1, expected_classes=3, limit=None),
                 imagenet_root)
    dataset = task.test.dataset  # the val ImageFolder under the test Subset
    with pytest.raises(RiembenchError, match="img_0.JPEG"):
        dataset[0]


# ------------------------------------------------------------------------- configs and loaders


@pytest.mark.parametrize("name,table", [("digits", "table1"), ("mnist", "table1"),
                                        ("cifar100", "table1"), ("imagenet", "table2")])
def test_yaml_configs_compose_and_validate(name, table):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"dataset={name}"])
        typed = typed_group(cfg.dataset, DATASETS)
    assert typed.name == name and typed.split_seed == 0
    assert typed.table == table


@pytest.mark.parametrize("schema,kwargs,message", [
    (DigitsConfig, {"dev_fraction": 1.0}, "dev_fraction"),
    (MnistConfig, {"image_size": 20}, "resize=pad needs"),
    (Cifar100Config, {"split_seed": -1}, "split_seed"),
    (ImageNetConfig, {"limit": 0}, "limit"),
    (ImageNetConfig, {"image_size": 224, "resize_size": 200}, "resize_size"),
])
def test_bad_config_values_fail(schema, kwargs, message):
    with pytest.raises(RiembenchError, match=message):
        schema(**kwargs)


def test_make_loader_shuffles_deterministically():
    task = build("digits", DigitsConfig())
    first = [y for _, y in make_loader(task.dev, 16, shuffle=True, seed=3)]
    second = [y for _, y in make_loader(task.dev, 16, shuffle=True, seed=3)]
    other = [y for _, y in make_loader(task.dev, 16, shuffle=True, seed=4)]
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    x, _ = next(iter(make_loader(task.dev, 16)))
    assert x.shape == (16, 1, 32, 32)
