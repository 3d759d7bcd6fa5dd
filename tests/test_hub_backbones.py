"""pytorchcv and timm backbones: weights in each library's own on-disk layout (random values),
loaded through the real loaders; each library's evaluation preprocessing in the ImageNet loader;
the paper-original presets; clear errors for missing and damaged files."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from pytorchcv.model_provider import get_model as ptcv_get_model
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

import riembench.compression.methods  # noqa: F401  (the main config's defaults need the method schemas)
from riembench.backbones import backbone_label, eval_preprocessing, load_backbone
from riembench.backbones import pytorchcv_models as pcv
from riembench.backbones.originals import PAPER_ORIGINALS
from riembench.compression.network import select_layers
from riembench.config.backbones import BACKBONES, PytorchcvConfig, TimmConfig, TorchvisionConfig
from riembench.config.datasets import ImageNetConfig
from riembench.config.identity import typed_group
from riembench.config.tree import config_dir
from riembench.core.errors import RiembenchError
from riembench.data.images import build_imagenet
from riembench.data.preprocess import STANDARD

CONF = Path(config_dir())


class ImageNetShape:
    name, num_classes, in_channels, image_size = "imagenet", 1000, 3, 224


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------ pytorchcv


@pytest.fixture(scope="module")
def pcv_resnet10() -> torch.nn.Module:
    torch.manual_seed(0)
    return ptcv_get_model("resnet10", pretrained=False).eval()


@pytest.fixture
def pcv_store(tmp_path, pcv_resnet10) -> Path:
    """pytorchcv's model store with resnet10's file under the name pytorchcv gives it."""
    store = tmp_path / "models"
    store.mkdir()
    torch.save(pcv_resnet10.state_dict(), store / "resnet10-1253-88a5961b.pth")
    return store


def test_pytorchcv_file_name_and_table_come_from_the_installed_package():
    assert pcv.weight_file_name(PytorchcvConfig(model="resnet10")) == "resnet10-1253-88a5961b.pth"
    entry = pcv.zoo_entry("resnet50-0633-b00d1c8e.pth")  # parsed from the package's README
    assert entry is not None and entry.top1_err == 22.28 and entry.params == 25_557_032
    assert entry.sha1 == "b00d1c8e52aa7a2badc705b1545aaf6ccece6ce9"
    with pytest.raises(RiembenchError, match="no model 'resnet_nope'"):
        pcv.build_pytorchcv(PytorchcvConfig(model="resnet_nope"))


def test_pytorchcv_loads_from_model_store(pcv_store, pcv_resnet10):
    cfg = PytorchcvConfig(model="resnet10", store_dir=str(pcv_store), check_hash=False)
    loaded = load_backbone(cfg, ImageNetShape())
    assert states_equal(loaded.model, pcv_resnet10) and not loaded.model.training
    prov = loaded.provenance
    assert prov["backbone"] == backbone_label(cfg) == "pytorchcv:resnet10-1253-88a5961b"
    assert prov["source"] == "pytorchcv" and prov["file"] == "resnet10-1253-88a5961b.pth"
    assert prov["expected_top1"] == pytest.approx(100 - 32.43)  # pytorchcv's table: 32.43 error
    assert "README" in prov["expected_top1_from"] and prov["paper_backbone"] is None


def test_pytorchcv_hash_missing_and_misfit_files(pcv_store, tmp_path):
    cfg = PytorchcvConfig(model="resnet10", store_dir=str(pcv_store))
    with pytest.raises(RiembenchError, match="SHA-1 .* not 88a5961b6244"):  # not pytorchcv's file
        load_backbone(cfg, ImageNetShape())
    missing = PytorchcvConfig(model="resnet10", store_dir=str(tmp_path / "empty"))
    with pytest.raises(RiembenchError) as err:
        load_backbone(missing, ImageNetShape())
    assert str(tmp_path / "empty" / "resnet10-1253-88a5961b.pth") in str(err.value)
    assert "get_model('resnet10', pretrained=True)" in str(err.value)
    wrong = tmp_path / "wrong.pth"
    torch.save(ptcv_get_model("resnet12").state_dict(), wrong)
    with pytest.raises(RiembenchError, match="does not fit pytorchcv's resnet10"):
        load_backbone(PytorchcvConfig(model="resnet10", weights=str(wrong)), ImageNetShape())


def test_pytorchcv_sha1_prefix_in_name_is_checked(tmp_path, pcv_resnet10):
    """A file pytorchcv's table does not list is checked against the hash in its name."""
    blob = tmp_path / "blob.pth"
    torch.save(pcv_resnet10.state_dict(), blob)
    sha = hashlib.sha1(blob.read_bytes()).hexdigest()
    named = tmp_path / f"resnet10-9999-{sha[:8]}.pth"
    blob.rename(named)
    loaded = load_backbone(PytorchcvConfig(model="resnet10", weights=str(named)), ImageNetShape())
    assert loaded.provenance["sha1"] == sha and "expected_top1" not in loaded.provenance
    bad = tmp_path / "resnet10-9999-00000000.pth"
    named.rename(bad)
    with pytest.raises(RiembenchError, match="SHA-1"):
        load_backbone(PytorchcvConfig(model="resnet10", weights=str(bad)), ImageNetShape())


def test_paper_resnet18_preset_names_the_retired_file_and_how_to_fetch_it(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        node = compose("config", overrides=["backbone=pcv_resnet18",
                                            f"backbone.store_dir={tmp_path}"]).backbone
    cfg = typed_group(node, BACKBONES)
    assert backbone_label(cfg) == "pytorchcv:resnet18-0982-0126861b"
    with pytest.raises(RiembenchError) as err:
        load_backbone(cfg, ImageNetShape())
    text = str(err.value)
    assert str(tmp_path / "resnet18-0982-0126861b.pth") in text
    assert "releases/download/v0.0.153/resnet18-0982-0126861b.pth.zip" in text
    entry = pcv.zoo_entry("resnet18-0982-0126861b.pth")
    assert entry is not None and round(100 - entry.top1_err, 2) == 71.47


def test_paper_originals_registry_matches_the_paper_tables_and_configs():
    from riembench.report.paper import load_paper_table

    for row in PAPER_ORIGINALS:
        paper = load_paper_table(row.table)
        top1 = paper[(paper["backbone"] == row.backbone) & (paper["method"] == "original")]
        assert float(top1["top1"].iloc[0]) == row.paper_top1, row
        assert (CONF / "backbone" / f"{row.config}.yaml").is_file(), row
        if row.source == "pytorchcv":
            assert round(100 - pcv.zoo_entry(row.weights).top1_err, 2) == row.expected_top1


def test_pytorchcv_preprocessing_is_per_model():
    small = eval_preprocessing(PytorchcvConfig(model="resnet18"))
    assert (small.crop_size, small.resize_size, small.interpolation) == (224, 256, "bilinear")
    inception = eval_preprocessing(PytorchcvConfig(model="inceptionv3"))  # 299 / 0.875
    assert (inception.crop_size, inception.resize_size) == (299, math.ceil(299 / 0.875))


# ------------------------------------------------------------------------------------------ timm

TIMM_MODEL = "resnet10t.c3_in1k"


@pytest.fixture(scope="module")
def timm_resnet10t() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(TIMM_MODEL, pretrained=False).eval()


def hub_snapshot(cache: Path, hub_id: str, filename: str, state: dict) -> Path:
    """The Hugging Face hub cache layout: models--org--name/{refs/main, snapshots/<rev>/file}."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    rev = "a" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)
    snap = repo / "snapshots" / rev
    snap.mkdir(parents=True)
    path = snap / filename
    if filename.endswith(".safetensors"):
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("filename", ["model.safetensors", "pytorch_model.bin"])
def test_timm_loads_from_hub_cache(tmp_path, timm_resnet10t, filename):
    path = hub_snapshot(tmp_path / "hub", "timm/" + TIMM_MODEL, filename,
                        timm_resnet10t.state_dict())
    cfg = TimmConfig(model=TIMM_MODEL, hub_cache=str(tmp_path / "hub"))
    loaded = load_backbone(cfg, ImageNetShape())
    assert states_equal(loaded.model, timm_resnet10t)
    assert loaded.provenance["path"] == str(path) and loaded.provenance["source"] == "timm"
    assert loaded.provenance["backbone"] == "timm:" + TIMM_MODEL


def test_timm_local_file_missing_and_misfit(tmp_path, timm_resnet10t):
    local = tmp_path / "r10t.safetensors"
    save_file(timm_resnet10t.state_dict(), local)
    loaded = load_backbone(TimmConfig(model=TIMM_MODEL, weights=str(local)), ImageNetShape())
    assert states_equal(loaded.model, timm_resnet10t)
    with pytest.raises(RiembenchError) as err:
        load_backbone(TimmConfig(model=TIMM_MODEL, hub_cache=str(tmp_path / "nohub")),
                      ImageNetShape())
    assert "models--timm--resnet10t.c3_in1k" in str(err.value)
    assert f"timm.create_model('{TIMM_MODEL}', pretrained=True)" in str(err.value)
    with pytest.raises(RiembenchError, match="does not load into timm's resnet18.a1_in1k"):
        load_backbone(TimmConfig(model="resnet18.a1_in1k", weights=str(local)), ImageNetShape())
    with pytest.raises(RiembenchError, match="no pretrained tag"):
        eval_preprocessing(TimmConfig(model="resnet18.nope_in1k"))


def test_timm_preprocessing_is_timms_own():
    prep = eval_preprocessing(TimmConfig(model="resnet50.a1_in1k"))
    ref = resolve_data_config(model=timm.create_model("resnet50.a1_in1k", pretrained=False))
    assert (prep.crop_size, prep.interpolation, prep.crop_pct) == (224, "bicubic", 0.95)
    assert prep.crop_pct == ref["crop_pct"] and prep.resize_size == math.floor(224 / 0.95)
    img = Image.new("RGB", (300, 260), (120, 30, 200))
    timm_tf = create_transform(**ref, is_training=False)
    assert torch.equal(prep.transform()(img), timm_tf(img))
    small = prep.with_sizes(64, None)  # a fixture's size keeps timm's crop_pct
    assert small.crop_size == 64 and small.resize_size == math.floor(64 / 0.95)
    assert small.transform()(img).shape == (3, 64, 64) and small.overridden == ("image_size",)


@pytest.mark.parametrize("which", ["pytorchcv", "timm"])
def test_layer_selection_dfq_pairs_and_prune_groups_on_hub_resnets(which, pcv_resnet10,
                                                                     timm_resnet10t):
    """The fx analyses DFQ and structured pruning rely on find the same structure in a hub
    ResNet as in torchvision's: one equalization pair and one prunable channel group per
    block-internal conv (resnet10: 4 basic blocks; timm's resnet10t: 4 blocks + its 3-conv
    stem's 2 inner convs)."""
    import copy

    from riembench.compression.methods.dfq import find_pairs, fold_batchnorm
    from riembench.compression.methods.prune import prunable_groups

    model = copy.deepcopy(pcv_resnet10 if which == "pytorchcv" else timm_resnet10t)
    layers = select_layers(model, "all")
    assert len(layers) == sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
                              for m in model.modules())
    expected = 4 if which == "pytorchcv" else 6
    groups, _ = prunable_groups(model, layers)
    assert len(groups) == expected
    folded = fold_batchnorm(model)
    assert len(folded) == len(layers) - 1  # every conv's BN folds; the head has none
    pairs, skipped = find_pairs(model, layers)
    assert len(pairs) == expected
    assert not any("cannot trace" in reason for reason in skipped.values())


# ------------------------------------------------------------------------------ ImageNet loader


@pytest.fixture
def imagenet_root(tmp_path) -> Path:
    for k in range(3):
        folder = tmp_path / "imagenet" / "val" / f"n{k:08d}"
        folder.mkdir(parents=True)
        for j in range(3):
            Image.new("RGB", (40 + j, 30), (80 * k, 40 * j, 9)).save(folder / f"v{j}.JPEG")
    return tmp_path


def test_imagenet_uses_the_backbones_preprocessing_and_records_it(imagenet_root):
    cfg = ImageNetConfig(dev_size=2, expected_classes=3)
    timm_prep = eval_preprocessing(TimmConfig(model=TIMM_MODEL))
    task = build_imagenet(cfg, imagenet_root, timm_prep)
    assert task.image_size == 176 and task.test[0][0].shape == (3, 176, 176)
    assert task.preprocessing["interpolation"] == "bicubic"
    assert "resolve_data_config" in task.preprocessing["origin"]
    plain = build_imagenet(cfg, imagenet_root)  # a backbone without its own: the standard stack
    assert plain.preprocessing == STANDARD.as_record() and plain.image_size == 224
    tv = eval_preprocessing(TorchvisionConfig(name="resnet18"))
    assert (tv.crop_size, tv.resize_size, tv.interpolation) == (224, 256, "bilinear")
    small = build_imagenet(ImageNetConfig(dev_size=2, expected_classes=3, image_size=32,
                                          resize_size=36), imagenet_root, tv)
    assert small.test[0][0].shape == (3, 32, 32)
    assert small.preprocessing["overridden"] == ["image_size", "resize_size"]
    assert "torchvision" in small.preprocessing["origin"]
