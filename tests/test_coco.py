"""Table 4's detection path: COCO files -> DETR -> COCOeval, on a tiny fixture in the real format.

The fixture is a COCO-format folder written here (JPEGs from PIL, a hand-written instances
json with sparse category ids as COCO has), so the real readers, DETR's processor and
pycocotools run unchanged; the model is a randomly initialised tiny DETR (no weights here).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from riembench.backbones import load_backbone
from riembench.backbones.detr import build_detr, load_detr
from riembench.backbones.registry import TaskShape
from riembench.compression.network import select_layers
from riembench.config.backbones import DetrBackboneConfig
from riembench.config.datasets import CocoConfig
from riembench.core.errors import RiembenchError
from riembench.data.coco import AP_METRICS, build_coco, coco_ap, detect, label_to_category
from riembench.report.tables import build_table
from riembench.store.records import RunRecord, RunStore

#: COCO's own ids for these names (sparse on purpose: DETR's class index is the category id)
CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 3, "name": "car", "supercategory": "vehicle"},
              {"id": 18, "name": "dog", "supercategory": "animal"}]
#: per image: (category id, [x, y, w, h]); areas cover COCO's small (< 32^2), medium and large
#: (> 96^2) ranges so all six metrics are defined
BOXES = [
    [(1, [10, 12, 20, 30]), (3, [60, 40, 90, 70])],
    [(18, [5, 5, 110, 100]), (1, [130, 20, 12, 14])],
    [(3, [20, 30, 50, 40])],
    [(1, [100, 60, 40, 50]), (18, [8, 70, 25, 20])],
    [(3, [30, 10, 100, 95])],
    [(18, [70, 20, 45, 60]), (1, [15, 90, 10, 20])],
]
SIZE = (176, 144)  # largest (width, height); odd images are 160 x 120, so batches get padded
FAST = ["dataset.dev_size=2", "dataset.shortest_edge=64", "dataset.longest_edge=96",
        "dataset.batch_size=4"]


def write_coco(root: Path) -> Path:
    """``<root>/coco/{val2017/*.jpg, annotations/instances_val2017.json}``; returns the json."""
    images_dir = root / "coco" / "val2017"
    images_dir.mkdir(parents=True)
    images, anns = [], []
    for i, boxes in enumerate(BOXES):
        img_id = 100 + 7 * i  # not 0..n-1: ids are looked up, never used as positions
        name = f"{img_id:012d}.jpg"
        size = SIZE if i % 2 else (160, 120)
        img = Image.new("RGB", size, (90 + 20 * i, 120, 150))
        draw = ImageDraw.Draw(img)
        for cat, (x, y, w, h) in boxes:
            draw.rectangle([x, y, x + w, y + h], fill=(40 * cat % 255, 200, 30))
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat,
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        img.save(images_dir / name, quality=90)
        images.append({"id": img_id, "file_name": name, "width": size[0], "height": size[1]})
    ann = root / "coco" / "annotations" / "instances_val2017.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": CATEGORIES}))
    return ann


@pytest.fixture()
def coco_root(tmp_path):
    write_coco(tmp_path / "data")
    return tmp_path / "data"


def small_cfg(**kw) -> CocoConfig:
    return CocoConfig(**{"dev_size": 2, "shortest_edge": 64, "longest_edge": 96,
                         "batch_size": 4, **kw})


def gt_as_detections(coco) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in coco.dataset["annotations"]]


# --- evaluation (COCOeval) -------------------------------------------------------------------

def test_ground_truth_as_detections_scores_100(coco_root):
    task = build_coco(small_cfg(), coco_root)
    metrics = coco_ap(task.coco, gt_as_detections(task.coco))
    assert list(metrics) == list(AP_METRICS)
    assert all(v == pytest.approx(100.0) for v in metrics.values()), metrics
    # on a split: the same, restricted to its images
    dev = coco_ap(task.coco, gt_as_detections(task.coco), task.dev_ids)
    assert dev["AP"] == pytest.approx(100.0)


def test_imperfect_and_empty_detections(coco_root):
    coco = build_coco(small_cfg(), coco_root).coco
    dets = gt_as_detections(coco)
    shifted = [dict(d, bbox=[d["bbox"][0] + 0.3 * d["bbox"][2], *d["bbox"][1:]]) for d in dets]
    assert 0 < coco_ap(coco, shifted)["AP"] < 100  # IoU ~0.54: counts at 0.5, not above
    empty = coco_ap(coco, [])  # a model that finds nothing: AP 0, not a crash
    assert all(v == 0.0 for v in empty.values()), empty
    with pytest.raises(RiembenchError, match="not in the annotations"):
        coco_ap(coco, [dict(dets[0], image_id=99999)])


def test_undefined_metric_is_nan(coco_root):
    coco = build_coco(small_cfg(), coco_root).coco
    image = 100 + 7 * 2  # one medium car only: no small or large objects in it
    metrics = coco_ap(coco, gt_as_detections(coco), [image])
    assert metrics["AP"] == pytest.approx(100.0) and metrics["APm"] == pytest.approx(100.0)
    assert math.isnan(metrics["APs"]) and math.isnan(metrics["APl"])


def test_label_mapping_by_name_else_detr_convention():
    named = {0: "N/A", 1: "person", 2: "bicycle", 3: "car", 18: "dog"}
    assert label_to_category(named, CATEGORIES) == {1: 1, 3: 3, 18: 18}
    shuffled = {0: "dog", 1: "car", 2: "person"}  # a head trained on these three only
    assert label_to_category(shuffled, CATEGORIES) == {0: 18, 1: 3, 2: 1}
    random_head = {i: f"LABEL_{i}" for i in range(19)}
    assert label_to_category(random_head, CATEGORIES) == {1: 1, 3: 3, 18: 18}


# --- dataset ---------------------------------------------------------------------------------

def test_splits_are_disjoint_seeded_and_limited(coco_root):
    task = build_coco(small_cfg(), coco_root)
    assert len(task.dev_ids) == 2 and len(task.test_ids) == 4
    assert not set(task.dev_ids) & set(task.test_ids)
    assert task.num_classes == 19 and task.in_channels == 3 and task.image_size == 64
    assert "excluded from test" in task.dev_note
    assert build_coco(small_cfg(), coco_root).dev_ids == task.dev_ids
    limited = build_coco(small_cfg(limit=3), coco_root)
    assert limited.dev_ids == task.dev_ids and set(limited.test_ids) < set(task.test_ids)
    assert len(limited.test_ids) == 3 and "limit=3" in limited.dev_note


def test_missing_files_say_what_and_how(tmp_path, coco_root):
    with pytest.raises(RiembenchError) as err:
        build_coco(CocoConfig(), tmp_path / "nothing")
    text = str(err.value)
    assert "instances_val2017.json" in text and str(tmp_path / "nothing" / "coco") in text
    assert "wget http://images.cocodataset.org/zips/val2017.zip" in text
    assert "annotations_trainval2017.zip" in text
    victim = next((coco_root / "coco" / "val2017").glob("*.jpg"))
    victim.unlink()
    with pytest.raises(RiembenchError, match=victim.name):
        build_coco(small_cfg(), coco_root)
    (coco_root / "coco" / "annotations" / "instances_val2017.json").write_text("{not json")
    with pytest.raises(RiembenchError, match="cannot read COCO annotations"):
        build_coco(small_cfg(), coco_root)


# --- DETR backbone ---------------------------------------------------------------------------

def tiny_cfg(**kw) -> DetrBackboneConfig:
    return DetrBackboneConfig(**{"weights": "random", "tiny": True, **kw})


def test_detr_layer_selection_and_evaluate(coco_root):
    task = build_coco(small_cfg(), coco_root)
    loaded = load_backbone(tiny_cfg(), task, "cpu")
    model = loaded.model
    assert loaded.provenance["source"] == "random" and model.config.num_labels == 19
    fc, conv = select_layers(model, "fc"), select_layers(model, "conv")
    assert "model.encoder.layers.0.self_attn.q_proj" in fc and "class_labels_classifier" in fc
    assert "bbox_predictor.layers.2" in fc and not any("backbone" in n for n in fc)
    assert all(n.startswith("model.backbone.") for n in conv[:-1])
    assert conv[-1] == "model.input_projection"
    metrics = task.evaluate(model, "dev", device="cpu", batch_size=256, num_workers=0)
    assert set(metrics) == set(AP_METRICS)
    assert all(0.0 <= v <= 100.0 for v in metrics.values() if not math.isnan(v))
    # every query becomes a detection when every class index maps to a category: boxes come
    # back as COCO xywh in original-image pixels, one per query, and COCOeval scores them
    everything = {i: 1 for i in range(model.config.num_labels)}
    dets = detect(model, task.test, task.processor, everything, "cpu", batch_size=3)
    assert len(dets) == len(task.test_ids) * model.config.num_queries
    assert {d["image_id"] for d in dets} == set(task.test_ids)
    boxes = torch.tensor([d["bbox"] for d in dets])
    assert (boxes[:, 2:] >= 0).all() and (boxes[:, 2] <= SIZE[0]).all()
    assert (boxes[:, 3] <= SIZE[1]).all()
    assert 0.0 <= coco_ap(task.coco, dets, task.test_ids)["AP"] <= 100.0


def test_detr_weights_from_directory_and_missing(tmp_path):
    shape = TaskShape(19, 3, 64)
    torch.manual_seed(1)
    model = build_detr(tiny_cfg(), shape)
    model.save_pretrained(tmp_path / "detr")
    loaded, prov = load_detr(DetrBackboneConfig(weights=str(tmp_path / "detr")), shape)
    assert prov["source"] == "transformers"
    ref = model.state_dict()
    assert all(torch.equal(ref[k], v) for k, v in loaded.state_dict().items())
    with pytest.raises(RiembenchError, match="huggingface-cli download facebook/detr-resnet-50"):
        load_detr(DetrBackboneConfig(cache_dir=str(tmp_path / "hub")), shape)
    with pytest.raises(RiembenchError, match="not a save_pretrained directory"):
        load_detr(DetrBackboneConfig(weights=str(tmp_path)), shape)
    with pytest.raises(RiembenchError, match="needs backbone.weights=random"):
        load_detr(DetrBackboneConfig(tiny=True), shape)


# --- reporter --------------------------------------------------------------------------------

def _det_record(method: str, seed: int, size: dict | None, dev: float, test: float) -> RunRecord:
    cell = {"backbone": "detr_r50", "dataset": "coco", "method": method, "variant": "",
            "paper_method": method,
            "size": f"mb(mb={size['mb']},bits=8)" if size and method != "original" else ""}
    config = {"method": {"name": method}, "size": {"name": "mb", "bits": 8, **(size or {})},
              "dataset": {"name": "coco"}, "backbone": {"name": "detr_r50"}}
    metrics = {f"{split}_{m}": value + i for split, value in (("dev", dev), ("test", test))
               for i, m in enumerate(AP_METRICS)}
    return RunRecord(table="table4", seed=seed, method=method, dataset="coco", cell=cell,
                     config=config, metrics=metrics, cost={"params": 10, "model_params": 20})


def test_table4_averages_every_metric_over_the_selected_seeds(tmp_path):
    store = RunStore(tmp_path / "runs")
    store.write(_det_record("original", 0, {"mb": 33.4}, 40.0, 42.0))
    # riem at the paper's 33.4 MB: the best 3 of 4 seeds by dev AP are 1, 2, 3
    for seed, (dev, test) in enumerate([(10.0, 50.0), (30.0, 38.0), (31.0, 39.0), (32.0, 40.0)]):
        store.write(_det_record("riem", seed, {"mb": 33.4}, dev, test))
    store.write(_det_record("riem", 0, {"mb": 20.0}, 30.0, 35.0))  # a size the paper has not
    df = build_table("table4", tmp_path / "runs")
    riem = df[(df["method"] == "riem") & (df["size_mb"] == 33.4)].iloc[0]
    assert riem["selected_seeds"] == "3,2,1"
    assert riem["ours_AP"] == pytest.approx(39.0)
    assert riem["ours_APl"] == pytest.approx(39.0 + 5)  # the same seeds, not all four
    assert riem["ours_delta_AP50"] == pytest.approx(39.0 + 1 - 43.0)
    assert riem["paper_delta_AP"] == pytest.approx(-0.7)
    assert riem["paper_AP"] == pytest.approx(40.1 - 0.7)
    other = df[(df["method"] == "riem") & (df["size_mb"] == 20.0)].iloc[0]
    assert math.isnan(other["paper_AP"])  # no paper row at that size: none rather than nearest
    original = df[df["method"] == "original"].iloc[0]
    assert original["paper_AP"] == pytest.approx(40.1) and math.isnan(original["size_mb"])
    assert df["paper_only"].sum() == 2 and set(df[df["paper_only"]]["method"]) == {"t-detr"}


# --- end to end: runner CLI and reporter ----------------------------------------------------

def run(args: list[str], cwd: Path, store: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RIEMBENCH_STORE": str(store), "WANDB_MODE": "disabled",
           "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_tiny_detr_end_to_end(tmp_path, coco_root):
    """Runner CLI (one multirun: original, then SVD at half the weights) and the reporter."""
    store = tmp_path / "runs"
    out = run(["-m", "riembench.cli.main", "-m", "backbone=detr_r50", "backbone.weights=random",
               "backbone.tiny=true", "dataset=coco", f"data.root={coco_root}", "device=cpu",
               "seed=0", *FAST, "method=original,svd", "size=ratio", "size.ratio=0.5"],
              tmp_path, store)
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(p.read_text()) for p in sorted((store / "table4").glob("*.json"))]
    assert sorted(r["method"] for r in records) == ["original", "svd"]
    for rec in records:
        assert rec["status"] == "ok", rec.get("error")
        assert rec["fit"]["weights"]["source"] == "random"
        for split in ("dev", "test"):
            assert {f"{split}_{m}" for m in AP_METRICS} <= set(rec["metrics"])
        print(rec["method"], {k: round(v, 3) for k, v in rec["metrics"].items()})
    svd = next(r for r in records if r["method"] == "svd")
    assert svd["cost"]["params"] < svd["cost"]["original_layer_params"]
    out_dir = tmp_path / "tables"
    rep = run(["-m", "riembench.cli.report", "table4", "--store", str(store), "--out", str(out_dir), "--all-records"],
              tmp_path, store)
    assert rep.returncode == 0, rep.stderr[-3000:]
    for ext in ("csv", "tex", "md"):
        assert (out_dir / f"table4.{ext}").is_file()
    text = (out_dir / "table4.md").read_text()
    assert "40.1" in text  # the paper's original DETR AP beside ours
    assert "| SVD" in text and "| Original" in text
