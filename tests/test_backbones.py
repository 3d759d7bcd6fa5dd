"""Backbones: architectures and FC counts, fx tracing, checkpoints, torchvision loading, training.

Everything runs on a tiny synthetic image task built here (no dataset files), on CPU.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import Dataset, TensorDataset

import riembench.compression.methods  # noqa: F401  (the main config's defaults need the method schemas)
from riembench.backbones import (
    LeNet5,
    ResNet9,
    TaskShape,
    checkpoint_path,
    lenet5_fc_params,
    linear_layers,
    linear_param_count,
    load_backbone,
    load_pretrained,
    read_checkpoint,
    resnet9_fc_params,
    save_checkpoint,
)
from riembench.backbones import torchvision_models as tvm_mod
from riembench.config.backbones import BACKBONES, LeNet5Config, ResNet9Config, TorchvisionConfig
from riembench.config.datasets import DATASETS
from riembench.config.identity import typed_group
from riembench.config.tree import config_dir
from riembench.core.errors import RiembenchError
from riembench.harness.evaluate import evaluate_accuracy
from riembench.harness.training import (
    TrainConfig,
    augment_batch,
    resolve_recipe,
    train_backbone,
    train_from_config,
)

CONF = Path(config_dir())


@dataclass
class FakeTask:
    """The ImageTask interface, filled with a learnable synthetic problem."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    train: Dataset
    dev: Dataset
    test: Dataset
    dev_note: str = "synthetic"


def fake_task(name: str = "fake", num_classes: int = 4, in_channels: int = 1,
              image_size: int = 32, n_train: int = 256, n_eval: int = 128,
              seed: int = 0) -> FakeTask:
    """Each class is a smooth random prototype image; samples add pixel noise."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(num_classes, in_channels, 4, 4, generator=g)
    protos = torch.nn.functional.interpolate(coarse, size=image_size, mode="bilinear")

    def split(n: int) -> TensorDataset:
        labels = torch.randint(0, num_classes, (n,), generator=g)
        noise = torch.randn(n, in_channels, image_size, image_size, generator=g)
        return TensorDataset(protos[labels] + 1.5 * noise, labels)

    return FakeTask(name, num_classes, in_channels, image_size, split(n_train), split(n_eval),
                    split(n_eval))


QUICK = TrainConfig(epochs=3, lr=0.05, batch_size=32, weight_decay=5e-4, label_smoothing=0.0,
                    augment="none", progress=False)


def state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- architectures ---------------------------------------------------------------------------

@pytest.mark.parametrize("classes,channels,size,expected", [
    (10, 1, 32, 59_134), (100, 3, 32, 66_784), (10, 1, 28, 59_134)])
def test_lenet5_shapes_and_fc_count(classes, channels, size, expected):
    model = LeNet5(classes, channels, size)
    assert model(torch.randn(2, channels, size, size)).shape == (2, classes)
    assert [n for n, _ in linear_layers(model)] == ["fc1", "fc2", "fc3"]
    assert linear_param_count(model) == lenet5_fc_params(classes, size) == expected
    shape = TaskShape(classes, channels, size)
    assert BACKBONES.get("lenet5").fc_params(LeNet5Config(), shape) == expected


@pytest.mark.parametrize("classes,width,hidden,expected", [
    (10, 1.0, None, 5_130), (100, 1.0, None, 51_300), (100, 0.25, None, 12_900),
    (100, 1.0, 200, 512 * 200 + 200 + 200 * 100 + 100)])
def test_resnet9_fc_count(classes, width, hidden, expected):
    model = ResNet9(classes, 3, width, hidden)
    assert linear_param_count(model) == resnet9_fc_params(classes, width, hidden) == expected
    cfg = ResNet9Config(width=width, head_hidden=hidden)
    assert BACKBONES.get("resnet9").fc_params(cfg, TaskShape(classes, 3, 32)) == expected


@pytest.mark.parametrize("size", [32, 28])
def test_resnet9_shapes(size):
    model = ResNet9(10, 1, width=0.25).eval()
    assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


def test_resnet9_rejects_bad_width():
    with pytest.raises(RiembenchError, match="width"):
        ResNet9Config(width=0)


@pytest.mark.parametrize("model", [
    LeNet5(10, 1, 32), LeNet5(10, 1, 32, conv_bn=True), ResNet9(10, 3, 0.25),
    ResNet9(10, 3, 0.25, head_hidden=16)], ids=["lenet5", "lenet5-bn", "resnet9", "resnet9-h"])
def test_fx_traceable_and_fc_layers_are_modules(model):
    model.eval()
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, model.conv1.in_channels if hasattr(model, "conv1") else 3, 32, 32)
    torch.testing.assert_close(traced(x), model(x))
    called = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    assert {name for name, _ in linear_layers(model)} <= called


# --- checkpoints -----------------------------------------------------------------------------

def lenet_cfg(tmp_path: Path, **kw) -> LeNet5Config:
    return LeNet5Config(cache_dir=str(tmp_path / "ckpt"), **kw)


def save_fake(cfg: LeNet5Config, task: FakeTask, recipe: str = "abcd1234") -> tuple[Path, LeNet5]:
    torch.manual_seed(1)
    model = LeNet5(task.num_classes, task.in_channels, task.image_size)
    path = checkpoint_path(cfg, task.name, cfg.train_seed, recipe)
    meta = {"dev_acc": 50.0, "test_acc": 49.0, "recipe": {"epochs": 1},
            "task_shape": {"num_classes": task.num_classes, "in_channels": task.in_channels,
                           "image_size": task.image_size},
            "dataset_config": {"name": task.name, "split_seed": 0, "dev_fraction": 0.1}}
    save_checkpoint(path, model, meta)
    return path, model


def test_checkpoint_round_trip(tmp_path):
    task = fake_task()
    cfg = lenet_cfg(tmp_path)
    path, model = save_fake(cfg, task)
    assert path.name.startswith("lenet5-") and "-fake-seed0-abcd1234" in path.name
    assert path.with_suffix(".json").is_file()
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp files
    loaded = load_backbone(cfg, task, "cpu")
    assert state_equal(loaded.model, model) and not loaded.model.training
    assert loaded.provenance["source"] == "checkpoint" and loaded.provenance["test_acc"] == 49.0
    import hashlib  # the record names the file's content, not only its name

    assert loaded.provenance["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    state, meta = read_checkpoint(path)
    assert meta["dev_acc"] == 50.0 and set(state) == set(model.state_dict())
    explicit = load_pretrained(lenet_cfg(tmp_path / "elsewhere", weights=str(path)), task)
    assert state_equal(explicit, model)


def test_checkpoint_name_depends_on_architecture(tmp_path):
    a, b = ResNet9Config(width=0.25), ResNet9Config(width=0.5)
    assert checkpoint_path(a, "d", 0, "r") != checkpoint_path(b, "d", 0, "r")
    assert checkpoint_path(a, "d", 0, "r") == checkpoint_path(replace(a, train_seed=5), "d", 0, "r")


def test_default_cache_dir_follows_env(tmp_path, monkeypatch):
    """A config built in Python (interpolation unresolved) finds the same directory as Hydra's."""
    monkeypatch.setenv("RIEMBENCH_CACHE", str(tmp_path))
    assert checkpoint_path(LeNet5Config(), "d", 0, "r").parent == tmp_path / "checkpoints"


def test_missing_checkpoint_names_path_and_train_command(tmp_path):
    cfg = lenet_cfg(tmp_path, train_seed=3)
    with pytest.raises(RiembenchError) as err:
        load_pretrained(cfg, fake_task(), "cpu")
    text = str(err.value)
    assert str(tmp_path / "ckpt") in text and "-fake-seed3-" in text
    assert "riembench-train backbone=lenet5 dataset=fake train.seed=3" in text
    assert "backbone.conv_bn=false" in text and f"backbone.cache_dir={tmp_path / 'ckpt'}" in text


@pytest.mark.parametrize("content,message", [
    (b"not a checkpoint at all", "corrupt"), (None, "not a riembench checkpoint")])
def test_corrupt_or_foreign_checkpoint(tmp_path, content, message):
    task = fake_task()
    cfg = lenet_cfg(tmp_path)
    path, _ = save_fake(cfg, task)
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(RiembenchError, match=message) as err:
        load_pretrained(cfg, task)
    assert path.name in str(err.value)


def test_ambiguous_checkpoints_need_train_hash(tmp_path):
    task = fake_task()
    cfg = lenet_cfg(tmp_path)
    save_fake(cfg, task, "aaaaaaaa")
    _, second = save_fake(cfg, task, "bbbbbbbb")
    with pytest.raises(RiembenchError, match="train_hash"):
        load_pretrained(cfg, task)
    assert state_equal(load_pretrained(replace(cfg, train_hash="bbbbbbbb"), task), second)


def test_checkpoint_for_other_task_shape_is_refused(tmp_path):
    cfg = lenet_cfg(tmp_path)
    save_fake(cfg, fake_task())
    with pytest.raises(RiembenchError, match="trained for"):
        load_pretrained(cfg, fake_task(num_classes=7))


def test_checkpoint_from_other_split_is_refused(tmp_path):
    task = fake_task()
    cfg = lenet_cfg(tmp_path)
    save_fake(cfg, task)
    load_pretrained(cfg, task, dataset_cfg=SimpleNamespace(split_seed=0, dev_fraction=0.1))
    with pytest.raises(RiembenchError, match="split_seed=0 but this run uses 1"):
        load_pretrained(cfg, task, dataset_cfg=SimpleNamespace(split_seed=1, dev_fraction=0.1))


def test_random_weights_are_seeded_and_recorded(tmp_path):
    task = fake_task()
    a = load_backbone(lenet_cfg(tmp_path, weights="random", init_seed=4), task)
    b = load_backbone(lenet_cfg(tmp_path, weights="random", init_seed=4), task)
    assert state_equal(a.model, b.model)
    assert a.provenance["source"] == "random" and a.model.riembench_weights["source"] == "random"


def test_none_backbone_has_no_network():
    from riembench.config.backbones import BackboneConfig

    with pytest.raises(RiembenchError, match="no network"):
        load_pretrained(BackboneConfig(), fake_task())


# --- torchvision -----------------------------------------------------------------------------

@pytest.fixture()
def hub(tmp_path, monkeypatch):
    """An empty torchvision cache: TORCH_HOME points to tmp (and no set_dir is in force)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch" / "hub" / "checkpoints"


IMAGENET = FakeTask("imagenet", 1000, 3, 224, [], [], [])


def test_torchvision_loads_from_cache_dir(hub):
    path = tvm_mod.cache_path("resnet18")
    assert path == hub / "resnet18-f37072fd.pth"
    torch.manual_seed(0)
    reference = tvm_mod.MODELS["resnet18"][0](weights=None)
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    loaded = load_backbone(TorchvisionConfig(check_hash=False), IMAGENET)
    assert state_equal(loaded.model, reference) and not loaded.model.training
    assert loaded.provenance == {
        "backbone": "resnet18", "source": "torchvision", "variant": "IMAGENET1K_V1",
        "path": str(path), "file": path.name, "paper_backbone": "resnet18",
        "expected_top1": 69.758,  # torchvision's own metadata of these weights
        "expected_top1_from": loaded.provenance["expected_top1_from"]}
    assert "ResNet18_Weights.IMAGENET1K_V1" in loaded.provenance["expected_top1_from"]
    with pytest.raises(RiembenchError, match="SHA-256"):  # not torchvision's file
        load_pretrained(TorchvisionConfig(), IMAGENET)


def test_torchvision_missing_file_says_how_to_get_it(hub):
    with pytest.raises(RiembenchError) as err:
        load_pretrained(TorchvisionConfig(), IMAGENET)
    text = str(err.value)
    assert str(hub / "resnet18-f37072fd.pth") in text
    assert "torchvision.models.resnet18(weights='IMAGENET1K_V1')" in text


def test_torchvision_corrupt_and_foreign_files(hub, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(RiembenchError, match="corrupt") as err:
        load_pretrained(TorchvisionConfig(weights=str(bad)), IMAGENET)
    assert str(bad) in str(err.value)
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(RiembenchError, match="does not fit"):
        load_pretrained(TorchvisionConfig(weights=str(bad)), IMAGENET)


def test_torchvision_random_and_class_check(hub):
    model = load_pretrained(TorchvisionConfig(weights="random"), None)
    assert model.riembench_weights["source"] == "random"
    with pytest.raises(RiembenchError, match="1000 classes"):
        load_pretrained(TorchvisionConfig(weights="random"), fake_task())
    with pytest.raises(RiembenchError, match="IMAGENET1K_V1"):
        load_pretrained(TorchvisionConfig(variant="V9"), None)


def test_densenet_legacy_keys_are_renamed():
    key = "features.denseblock1.denselayer1.norm.1.weight"
    assert tvm_mod._DENSENET_KEY.sub(r"\1\2", key) == "features.denseblock1.denselayer1.norm1.weight"


# --- training --------------------------------------------------------------------------------

def test_evaluate_accuracy_restores_mode():
    data = TensorDataset(torch.eye(3), torch.arange(3))
    model = torch.nn.Linear(3, 3)
    with torch.no_grad():
        model.weight.copy_(torch.eye(3))
        model.bias.zero_()
    model.train()
    assert evaluate_accuracy(model, data, batch_size=2) == 100.0
    assert model.training


def test_train_lenet5_beats_chance_and_is_deterministic():
    task = fake_task()
    model, metrics = train_backbone(LeNet5Config(), task, QUICK, "cpu")
    assert metrics["test_acc"] > 70.0 and len(metrics["history"]) == 3  # chance is 25%
    assert not model.training and metrics["fc_params"] == lenet5_fc_params(4)
    again, _ = train_backbone(LeNet5Config(), task, QUICK, "cpu")
    assert state_equal(model, again)


def test_train_resnet9_small_runs():
    task = fake_task(in_channels=3, n_train=64, n_eval=32)
    cfg = ResNet9Config(width=0.125)
    _, metrics = train_backbone(cfg, task, replace(QUICK, epochs=1, augment="crop_flip"), "cpu")
    assert 0.0 <= metrics["test_acc"] <= 100.0


def test_augment_batch_keeps_shape_and_is_seeded():
    x = torch.randn(5, 3, 16, 16)
    assert augment_batch(x, "none", torch.Generator()) is x
    a = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    b = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)


def test_resolve_recipe_layers():
    presets = {"lenet5": {"default": {"epochs": 5, "lr": 0.1}, "mnist": {"epochs": 7}}}
    got = resolve_recipe(TrainConfig(), presets, "lenet5", "mnist")
    assert (got.epochs, got.lr, got.batch_size) == (7, 0.1, 128)  # dataset, default, fallback
    assert resolve_recipe(TrainConfig(epochs=2), presets, "lenet5", "mnist").epochs == 2
    with pytest.raises(RiembenchError, match="unknown train keys"):
        resolve_recipe(TrainConfig(), {"lenet5": {"mnist": {"epoch": 3}}}, "lenet5", "mnist")


# --- configs and the riembench-train entry ---------------------------------------------------

@dataclass
class FakeImagesConfig:
    name: str = "fake_images"


def _build_fake_images(cfg: FakeImagesConfig, root: Path) -> FakeTask:
    return fake_task(name="fake_images")


if "fake_images" not in DATASETS:
    DATASETS.register("fake_images", FakeImagesConfig)(_build_fake_images)


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "backbone").glob("*.yaml")))
def test_every_backbone_config_composes_and_validates(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"backbone={name}"])
        typed = typed_group(cfg.backbone, BACKBONES)
        # a YAML names its registry entry, or is a preset of a hub source (pcv_resnet18)
        assert typed.name == name or typed.name in ("pytorchcv", "timm")
        # the YAML documents every field of its schema
        assert set(cfg.backbone) == {f.name for f in fields(typed)}


def test_riembench_train_entry_trains_then_skips(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("RIEMBENCH_CACHE", str(tmp_path))
    overrides = ["dataset=fake_images_schema", "train.epochs=2", "train.batch_size=32",
                 "train.progress=false", "train.device=cpu"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
        path = train_from_config(cfg)
        meta = read_checkpoint(path)[1]
        assert path.parent == tmp_path / "checkpoints" and meta["epochs"] == 2
        assert meta["recipe"]["lr"] == 0.05 and meta["test_acc"] > 40.0  # lenet5 default preset
        assert {"dev_acc", "wall_time_s", "torch", "date", "backbone"} <= set(meta)
        mtime = path.stat().st_mtime_ns
        with caplog.at_level(logging.INFO, logger="riembench"):
            assert train_from_config(cfg) == path
        assert path.stat().st_mtime_ns == mtime and "not training" in caplog.text
        typed = typed_group(compose("config", overrides=["backbone=lenet5"]).backbone, BACKBONES)
        model = load_pretrained(typed, fake_task(name="fake_images"))
        assert evaluate_accuracy(model, fake_task(name="fake_images").test) > 40.0
        with pytest.raises(RiembenchError, match="not trained here"):
            train_from_config(compose("train", overrides=[*overrides, "backbone=resnet18"]))
