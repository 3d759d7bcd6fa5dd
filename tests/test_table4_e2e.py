"""End to end: a small version of `make table4` through the real CLI and reporter.

A COCO-format fixture (generated JPEGs, a hand-written instances json) and a small DETR built
from transformers' ``DetrConfig`` (transformers' own two-stage ResNet, no timm, no pretrained
backbone, d_model 32, one encoder and one decoder layer, one query), randomly initialized and
saved with ``save_pretrained``: the run loads it through ``backbone.weights=<dir>``, the same
``from_pretrained`` path as the released checkpoint. The sweeps are the Makefile's (original
and quant, SVD, RieM at three sizes with two seeds) at sizes scaled to the small model.

So that AP measures the pipeline and not only "a number came out", the random model's two
output heads are *planted*: every image of the fixture has one large person at the same
relative place, and the heads' biases predict that box and class (their weights are scaled
down, so the random transformer still moves the prediction a little). Every image also holds a
small car and a medium dog that the model never predicts. COCOeval then has exact answers:
person AP 100, car and dog 0, so AP = AP50 = AP75 = 33.3, APs = APm = 0, APl = 100. Any error
in preprocessing sizes, box post-processing (normalized cxcywh -> original-pixel xywh) or the
class-to-category mapping breaks those numbers.
"""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from riembench.backbones.detr import TINY, TINY_RESNET
from riembench.data.coco import AP_METRICS

CATEGORIES = [{"id": 1, "name": "person", "supercategory": "person"},
              {"id": 3, "name": "car", "supercategory": "vehicle"},
              {"id": 18, "name": "dog", "supercategory": "animal"}]
#: (width, height): mixed sizes and aspect ratios, so batches are padded and boxes rescaled
IMAGE_SIZES = [(160, 120), (200, 150), (128, 160), (176, 144), (150, 150), (192, 128)]
#: the person box relative to its image, (cx, cy, w, h) as DETR predicts boxes
PERSON = (0.5, 0.5, 0.8, 0.8)
DATA = ["dataset.dev_size=2", "dataset.shortest_edge=64", "dataset.longest_edge=96",
        "dataset.batch_size=4"]
#: fit steps for RieM: enough to exercise the fit loop, few enough for a CPU test
FIT = ["method.fit.steps=5", "method.fit.warmup=0", "method.fit.eval_every=5"]
#: RieM sizes (MB at fp32) for the ~0.133 MB model: about 83%, 68% and 53% of it
RIEM_MB = (0.11, 0.09, 0.07)
SVD_MB = 0.09


def write_fixture(root: Path) -> Path:
    """``<root>/coco/{val2017/*.jpg, annotations/instances_val2017.json}``."""
    images_dir = root / "coco" / "val2017"
    images_dir.mkdir(parents=True)
    images, anns = [], []
    cx, cy, pw, ph = PERSON
    for i, (w, h) in enumerate(IMAGE_SIZES):
        img_id = 500 + 3 * i
        name = f"{img_id:012d}.jpg"
        objects = [(1, [(cx - pw / 2) * w, (cy - ph / 2) * h, pw * w, ph * h]),  # large
                   (3, [6, 6, 20, 20]),                                           # small
                   (18, [w - 48, h - 48, 40, 40])]                                # medium
        img = Image.new("RGB", (w, h), (80 + 20 * i, 110, 140))
        draw = ImageDraw.Draw(img)
        for cat, (x, y, bw, bh) in objects:
            draw.rectangle([x, y, x + bw, y + bh], outline=(255, 40 * cat % 255, 0), width=2)
            anns.append({"id": len(anns) + 1, "image_id": img_id, "category_id": cat,
                         "bbox": [x, y, bw, bh], "area": bw * bh, "iscrowd": 0})
        img.save(images_dir / name, quality=90)
        images.append({"id": img_id, "file_name": name, "width": w, "height": h})
    ann = root / "coco" / "annotations" / "instances_val2017.json"
    ann.parent.mkdir(parents=True)
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": CATEGORIES}))
    return ann


def save_small_detr(path: Path) -> int:
    """A random small DETR with planted output heads, saved with save_pretrained; its size."""
    from transformers import DetrConfig, DetrForObjectDetection, ResNetConfig

    torch.manual_seed(0)
    config = DetrConfig(backbone_config=ResNetConfig(num_channels=3, **TINY_RESNET),
                        use_timm_backbone=False, use_pretrained_backbone=False,
                        num_labels=91, **{**TINY, "num_queries": 1})
    model = DetrForObjectDetection(config).eval()
    with torch.no_grad():
        head = model.class_labels_classifier  # 91 classes + "no object"
        head.weight.mul_(0.1)
        head.bias.zero_()
        head.bias[1] = 8.0  # person: COCO category 1 = DETR class index 1
        last = model.bbox_predictor.layers[-1]  # sigmoid(last(...)) is (cx, cy, w, h)
        last.weight.mul_(0.05)
        box = torch.tensor(PERSON)
        last.bias.copy_(torch.log(box / (1 - box)))
    model.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def _run(args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], check=False, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _float(x: str) -> float:
    return float(x) if x not in ("", None) else math.nan


@pytest.mark.slow
def test_small_table4_through_cli_and_reporter(tmp_path):
    data, weights = tmp_path / "data", tmp_path / "detr"
    store, out = tmp_path / "runs", tmp_path / "tables"
    write_fixture(data)
    n_params = save_small_detr(weights)
    env = {**os.environ, "RIEMBENCH_STORE": str(store), "WANDB_MODE": "disabled",
           "HF_HUB_OFFLINE": "1"}
    # `make table4` with EXTRA="device=cpu ...": its three sweeps, sizes scaled to this model
    t4 = ["riembench.cli.main", "experiment=table4", f"backbone.weights={weights}",
          f"data.root={data}", "device=cpu", "threads=1", *DATA]
    _run(t4 + ["method=original,quant", f"size.mb={SVD_MB}", "seeds=[0]"], tmp_path, env)
    _run(t4 + ["method=svd", f"size.mb={SVD_MB}", "seeds=[0]"], tmp_path, env)
    _run(t4 + ["method=riem", "size.mb=" + ",".join(map(str, RIEM_MB)), "seeds=[0,1]", *FIT],
         tmp_path, env)

    records = [json.loads(p.read_text()) for p in (store / "table4").glob("*.json")]
    assert sorted(r["method"] for r in records) == ["original", "quant", "riem", "riem", "riem",
                                                    "riem", "riem", "riem", "svd"]
    for rec in records:
        assert rec["status"] == "ok", rec.get("error")
        assert rec["fit"]["weights"]["source"] == "transformers"
        assert rec["fit"]["weights"]["path"] == str(weights)
        assert rec["cost"]["original_model_params"] == n_params
        assert {f"{s}_{m}" for s in ("dev", "test") for m in AP_METRICS} <= set(rec["metrics"])
        if rec["method"] in ("svd", "riem"):  # the size target: numbers at fp32 within size.mb
            unit = {"mb": 1e6, "mib": 2 ** 20}[rec["config"]["size"]["unit"]]  # table 4: MiB
            numbers = rec["config"]["size"]["mb"] * unit / 4
            assert rec["cost"]["model_params"] <= numbers < n_params
        print(rec["method"], rec["config"]["size"].get("mb"), rec["seed"],
              {k: round(v, 2) for k, v in rec["metrics"].items() if k.startswith("test_")})
    original = next(r["metrics"] for r in records if r["method"] == "original")
    expected = {"AP": 100 / 3, "AP50": 100 / 3, "AP75": 100 / 3, "APs": 0.0, "APm": 0.0,
                "APl": 100.0}
    for split in ("dev", "test"):
        assert {m: original[f"{split}_{m}"] for m in AP_METRICS} == pytest.approx(expected)

    _run(["riembench.cli.report", "table4", "--store", str(store), "--out", str(out), "--all-records"], tmp_path, env)
    for suffix in ("csv", "tex", "md"):
        assert (out / f"table4.{suffix}").stat().st_size > 0
    with open(out / "table4.csv") as fh:
        rows = list(csv.DictReader(fh))
    ours = [r for r in rows if r["paper_only"] == "False"]
    assert [r["method"] for r in ours] == ["original", "quant", "svd", "riem", "riem", "riem"]
    assert [_float(r["size_mb"]) for r in ours if r["method"] == "riem"] == list(RIEM_MB)
    orig = ours[0]
    for m in AP_METRICS:
        assert 0.0 <= _float(orig[f"ours_{m}"]) <= 100.0
        assert not math.isnan(_float(orig[f"paper_{m}"]))  # the paper's original beside ours
        assert orig[f"ours_delta_{m}"] == ""  # the original has no delta to itself
        for row in ours[1:]:  # every compressed row: a finite delta vs our original
            assert math.isfinite(_float(row[f"ours_delta_{m}"])), (row["method"], m)
            assert _float(row[f"ours_{m}"]) - _float(orig[f"ours_{m}"]) == pytest.approx(
                _float(row[f"ours_delta_{m}"]), abs=1e-4)
    assert _float(orig["paper_AP"]) == pytest.approx(40.1)
    quant = ours[1]
    assert _float(quant["w_bits"]) == 8 and _float(quant["paper_delta_AP"]) == pytest.approx(-2.2)
    # 8-bit weights of an unchanged architecture: the planted predictions survive
    assert _float(quant["ours_AP"]) == pytest.approx(_float(orig["ours_AP"]), abs=1.0)
    riem = [r for r in ours if r["method"] == "riem"]
    assert all(int(r["n_seeds"]) == 2 and int(r["n_selected"]) == 2 for r in riem)
    assert all(r["paper_AP"] == "" for r in ours[2:])  # tiny sizes: no paper row to compare
    if all("stored_mb" in r["cost"] for r in records):  # the runner records cost.stored_mb
        assert all(_float(r["stored_mb"]) > 0 for r in ours)
        assert _float(quant["stored_mb"]) < 0.5 * _float(orig["stored_mb"])
    md = (out / "table4.md").read_text()
    assert "| Original |" in md and "40.1" in md and "(paper only: needs data)" in md
    assert "\\toprule" in (out / "table4.tex").read_text()
