"""COCO val2017 object detection for table 4 (DETR-R50), scored with pycocotools' COCOeval.

Why this shape:

* **Splits.** The paper reports on val2017 and we use no other labelled split, so dev (the
  split that picks seeds) is a fixed seeded subset of val images (``dev_size``, 500 by default)
  that is *excluded* from test. Test AP is therefore measured on the remaining 4500 images, not
  on all 5000 as the paper does; both are stated in ``dev_note``. Splits depend on
  ``split_seed`` only, never on the method seed, so every row of the table sees the same images.
* **Preprocessing** is transformers' :class:`DetrImageProcessor` built from the config values
  (shorter side 800, longer side at most 1333, ImageNet mean/std, padding with a pixel mask):
  the recipe DETR was trained and evaluated with, nothing re-implemented.
* **Scoring** is pycocotools' :class:`COCOeval` on the standard bbox protocol (no home-made
  AP). :func:`coco_ap` takes detections in COCO result format, so tests can inject ground-truth
  boxes and check the evaluation path itself returns AP = 100.
* **Category ids.** DETR follows COCO's 91-id convention: class index ``k`` of its head *is*
  COCO category id ``k`` (ids 0 and the 11 ids COCO never used are "N/A" slots, and index
  ``num_labels`` is "no object"). :func:`label_to_category` maps by class name when the model's
  ``id2label`` names every COCO category (a COCO-trained checkpoint), else by that convention.

Layout and fetch commands: docs/detection.md. Missing files are an error naming them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from riembench.config.datasets import CocoConfig
from riembench.core.errors import RiembenchError
from riembench.data.tasks import NetworkTask

log = logging.getLogger("riembench")

#: COCOeval's ``stats[0:6]`` in order: the six numbers table 4 reports
AP_METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
VAL_IMAGES_URL = "http://images.cocodataset.org/zips/val2017.zip"
ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"




# ------------------------------------------------------------------------------------ scoring


def _quiet(fn: Any, *args: Any) -> Any:
    """Call a pycocotools function without its progress prints on stdout (kept at debug)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        out = fn(*args)
    if buf.getvalue().strip():
        log.debug("%s", buf.getvalue().rstrip())
    return out


def _empty_results(coco_gt: Any) -> Any:
    """A result set with no detections, built the way ``loadRes`` builds one.

    Why: ``COCO.loadRes([])`` crashes on an empty list, but "the model found nothing" is a
    legitimate outcome (a badly compressed model) whose AP is 0, and COCOeval itself scores it
    correctly when given an empty result set.
    """
    from pycocotools.coco import COCO

    res = COCO()
    res.dataset = {"images": list(coco_gt.dataset["images"]),
                   "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
                   "annotations": []}
    _quiet(res.createIndex)
    return res


def coco_ap(coco_gt: Any, detections: Sequence[Mapping[str, Any]],
            img_ids: Iterable[int] | None = None) -> dict[str, float]:
    """COCO bbox AP suite (percent) of ``detections`` on ``img_ids`` (default: every image).

    ``detections`` are COCO result dicts ``{"image_id", "category_id", "bbox": [x, y, w, h],
    "score"}`` in original-image pixels. Returns :data:`AP_METRICS` as COCOeval computes them
    (maxDets 100), times 100 as the paper prints them; a metric COCOeval cannot define (``-1``:
    e.g. no small objects among the images) is NaN, never a number that looks like a score.
    """
    from pycocotools.cocoeval import COCOeval

    ids = sorted(coco_gt.getImgIds() if img_ids is None else {int(i) for i in img_ids})
    if not ids:
        raise RiembenchError("coco_ap: no images to evaluate")
    known = set(coco_gt.getImgIds())
    unknown = {int(d["image_id"]) for d in detections} - known
    if unknown:
        raise RiembenchError(f"coco_ap: detections for image ids not in the annotations: "
                             f"{sorted(unknown)[:5]}")
    wanted = set(ids)
    dets = [dict(d, bbox=[float(v) for v in d["bbox"]], score=float(d["score"]))
            for d in detections if int(d["image_id"]) in wanted]
    results = _quiet(coco_gt.loadRes, dets) if dets else _empty_results(coco_gt)
    ev = COCOeval(coco_gt, results, "bbox")
    ev.params.imgIds = ids
    _quiet(ev.evaluate)
    _quiet(ev.accumulate)
    _quiet(ev.summarize)
    return {name: (100.0 * float(v) if v >= 0 else math.nan)
            for name, v in zip(AP_METRICS, ev.stats[:len(AP_METRICS)], strict=True)}


def label_to_category(id2label: Mapping[Any, str] | None,
                      categories: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """Model class index -> COCO category id.

    By name when the model's ``id2label`` names every category of the annotations (what a
    COCO-trained checkpoint such as facebook/detr-resnet-50 carries), else DETR's convention
    that class index == category id (randomly initialized heads have ``LABEL_k`` names).
    Indices that map to no category (DETR's "N/A" slots) are absent: their detections are
    dropped, as DETR's own evaluation does.
    """
    by_name = {str(c["name"]): int(c["id"]) for c in categories}
    named = {int(k): by_name[v] for k, v in (id2label or {}).items() if v in by_name}
    if by_name and set(named.values()) == set(by_name.values()):
        return named
    if named:
        log.warning("model names only %d of %d COCO categories; mapping class index = category "
                    "id (DETR's convention) instead", len(set(named.values())), len(by_name))
    return {cid: cid for cid in by_name.values()}


# ------------------------------------------------------------------------------------- images


class CocoImages(Dataset):
    """The images of one split as ``(image_id, PIL RGB image)``, in ``ids`` order."""

    def __init__(self, images_dir: Path, files: Mapping[int, str], ids: Sequence[int]) -> None:
        self.images_dir = images_dir
        self.files = dict(files)
        self.ids = list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[int, Image.Image]:
        img_id = self.ids[i]
        path = self.images_dir / self.files[img_id]
        try:
            with Image.open(path) as img:
                return img_id, img.convert("RGB")
        except (OSError, SyntaxError, ValueError) as exc:
            raise RiembenchError(f"corrupt or missing image {path}: {exc}") from exc


class DetrCollate:
    """Batch PIL images through DetrImageProcessor (in the loader's workers, when it has any).

    Returns padded ``pixel_values`` (B, 3, H, W), the ``pixel_mask`` (B, H, W) that tells DETR
    which pixels are padding, the image ids and the original ``(height, width)`` of each image
    (post-processing scales boxes back to it).
    """

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, batch: list[tuple[int, Image.Image]]) -> dict[str, Any]:
        ids = [img_id for img_id, _ in batch]
        images = [img for _, img in batch]
        enc = self.processor(images=images, return_tensors="pt")
        return {"ids": ids, "pixel_values": enc["pixel_values"], "pixel_mask": enc["pixel_mask"],
                "sizes": torch.tensor([[img.height, img.width] for img in images])}


def _outputs(out: Any) -> SimpleNamespace:
    """``logits`` and ``pred_boxes`` (float, CPU) from a DETR output object, dict or tuple."""
    if isinstance(out, Mapping):
        logits, boxes = out["logits"], out["pred_boxes"]
    elif hasattr(out, "logits"):
        logits, boxes = out.logits, out.pred_boxes
    else:
        logits, boxes = out[0], out[1]
    return SimpleNamespace(logits=logits.float().cpu(), pred_boxes=boxes.float().cpu())


@torch.inference_mode()
def detect(model: nn.Module, images: CocoImages, processor: Any, label_map: Mapping[int, int],
           device: torch.device | str, batch_size: int, num_workers: int = 0,
           threshold: float = 0.0) -> list[dict[str, Any]]:
    """COCO result dicts for every image of ``images``: DETR forward, then post-processing.

    ``post_process_object_detection`` takes the softmax over the real classes (the last logit
    is "no object"), keeps each query's best class with its probability as the score, converts
    the normalized (cx, cy, w, h) boxes to corners in original-image pixels; we then write them
    as COCO's (x, y, w, h), unclipped like DETR's reference evaluation.
    """
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=DetrCollate(processor))
    was_training = model.training
    model.eval()
    dets: list[dict[str, Any]] = []
    try:
        for batch in loader:
            out = model(pixel_values=batch["pixel_values"].to(device),
                        pixel_mask=batch["pixel_mask"].to(device))
            results = processor.post_process_object_detection(
                _outputs(out), threshold=threshold, target_sizes=batch["sizes"])
            for img_id, res in zip(batch["ids"], results, strict=True):
                for score, label, box in zip(res["scores"].tolist(), res["labels"].tolist(),
                                             res["boxes"].tolist(), strict=True):
                    cat = label_map.get(int(label))
                    if cat is None:
                        continue
                    x0, y0, x1, y1 = box
                    dets.append({"image_id": int(img_id), "category_id": cat,
                                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": score})
    finally:
        model.train(was_training)
    return dets


# --------------------------------------------------------------------------------------- task


@dataclass
class CocoTask(NetworkTask):
    """COCO detection: dev/test image ids over one annotation file, and its own metrics.

    ``num_classes`` is DETR's head size for these annotations (largest category id + 1, i.e.
    91 for COCO); ``in_channels``/``image_size`` exist for the runner's zero example input
    only: ``image_size`` is the nominal shorter side (800), real inputs vary per image.
    """

    #: the metric that ranks seeds and dev_guided checkpoints
    primary_metric: ClassVar[str] = "AP"
    scores_itself: ClassVar[bool] = True
    name: str
    num_classes: int
    in_channels: int
    image_size: int
    coco: Any
    images_dir: Path
    dev_ids: list[int]
    test_ids: list[int]
    dev_note: str
    cfg: CocoConfig
    processor: Any = field(repr=False, default=None)

    def split(self, split: str) -> CocoImages:
        ids = {"dev": self.dev_ids, "test": self.test_ids, "train": []}.get(split)
        if ids is None:
            raise RiembenchError(f"coco has no split '{split}' (dev, test)")
        files = {i: self.coco.imgs[i]["file_name"] for i in ids}
        return CocoImages(self.images_dir, files, ids)

    @property
    def train(self) -> CocoImages:
        """Empty: nothing is trained here, and val2017 is all we read."""
        return self.split("train")

    @property
    def dev(self) -> CocoImages:
        return self.split("dev")

    @property
    def test(self) -> CocoImages:
        return self.split("test")

    def evaluate(self, model: nn.Module, split: str, *, device: torch.device | str,
                 batch_size: int, num_workers: int) -> dict[str, float]:
        """The AP suite of ``model`` on one split (the runner records ``<split>_AP`` ...).

        ``batch_size`` (the runner's ``data.batch_size``) is ignored in favour of the dataset's
        own ``batch_size``, see :class:`CocoConfig`.
        """
        images = self.split(split)
        if len(images) == 0:
            return {}
        id2label = getattr(getattr(model, "config", None), "id2label", None)
        label_map = label_to_category(id2label, self.coco.dataset.get("categories", []))
        start = time.perf_counter()
        dets = detect(model, images, self.processor, label_map, device, self.cfg.batch_size,
                      num_workers, self.cfg.score_threshold)
        metrics = coco_ap(self.coco, dets, images.ids)
        log.info("coco %s: %d images, %d detections, AP %.2f (%.0f s)", split, len(images),
                 len(dets), metrics["AP"], time.perf_counter() - start)
        return metrics


def _resolve(root: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else root / p


def _missing_message(missing: Sequence[Path], images_dir: Path, ann: Path) -> str:
    shown = ", ".join(str(p) for p in missing[:3]) + (
        f" (and {len(missing) - 3} more)" if len(missing) > 3 else "")
    base = ann.parent.parent
    return (
        f"COCO val2017 not found: missing {shown}. Expected the standard layout\n"
        f"  {images_dir}/000000000139.jpg ... (5000 images)\n  {ann}\n"
        f"On a networked machine:\n"
        f"  mkdir -p {base} && cd {base}\n"
        f"  wget {VAL_IMAGES_URL} && unzip -q val2017.zip\n"
        f"  wget {ANNOTATIONS_URL} && unzip -q annotations_trainval2017.zip "
        "annotations/instances_val2017.json\n"
        "then copy that coco/ folder here (or point data.root / RIEMBENCH_DATA at the folder "
        "holding coco/, or set dataset.images_dir and dataset.annotations).")


def _load_coco(ann: Path) -> Any:
    from pycocotools.coco import COCO

    try:
        with ann.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RiembenchError(f"cannot read COCO annotations {ann}: {exc}") from exc
    absent = [k for k in ("images", "annotations", "categories") if k not in data]
    if not isinstance(data, dict) or absent:
        raise RiembenchError(f"{ann} is not a COCO instances file (no {', '.join(absent)})")
    coco = COCO()
    coco.dataset = data
    _quiet(coco.createIndex)
    return coco


def _subset(ids: list[int], limit: int | None, seed: int) -> list[int]:
    """First ``limit`` of a seeded permutation (a larger limit contains a smaller one)."""
    if limit is None or limit >= len(ids):
        return ids
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(ids[i] for i in perm[:limit])


def make_processor(cfg: CocoConfig) -> Any:
    """DETR's preprocessing from config values (no download: every argument is given)."""
    from transformers import DetrImageProcessor

    return DetrImageProcessor(size={"shortest_edge": cfg.shortest_edge,
                                    "longest_edge": cfg.longest_edge},
                              do_resize=True, do_rescale=True, do_normalize=True, do_pad=True,
                              image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def build_coco(cfg: CocoConfig, root: Path) -> CocoTask:
    """COCO val2017 under ``root`` split into dev (seeded ``dev_size``) and test (the rest)."""
    root = Path(root).expanduser().absolute()  # absolute: error messages name real places
    images_dir, ann = _resolve(root, cfg.images_dir), _resolve(root, cfg.annotations)
    missing = [p for p in (ann, images_dir) if not p.exists()]
    if missing:
        raise RiembenchError(_missing_message(missing, images_dir, ann))
    coco = _load_coco(ann)
    ids = sorted(int(i) for i in coco.getImgIds())
    if cfg.dev_size >= len(ids):
        raise RiembenchError(f"cannot hold out dev_size={cfg.dev_size} of the {len(ids)} images "
                             f"in {ann}")
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(cfg.split_seed))
    dev_ids = sorted(ids[i] for i in perm[:cfg.dev_size].tolist())
    test_ids = sorted(ids[i] for i in perm[cfg.dev_size:].tolist())
    # offset seeds so the limit subsets are not the same draw as the split
    dev_used = _subset(dev_ids, cfg.limit, cfg.split_seed + 7919)
    test_used = _subset(test_ids, cfg.limit, cfg.split_seed + 7920)
    absent = [images_dir / coco.imgs[i]["file_name"] for i in dev_used + test_used
              if not (images_dir / coco.imgs[i]["file_name"]).is_file()]
    if absent:
        raise RiembenchError(_missing_message(absent, images_dir, ann))
    cat_ids = [int(c["id"]) for c in coco.dataset["categories"]]
    if not cat_ids:
        raise RiembenchError(f"{ann} has no categories")
    note = (f"no labelled split besides val: {cfg.dev_size} of the {len(ids)} images in "
            f"{ann.name} held out as dev (split seed {cfg.split_seed}) and excluded from test "
            f"({len(test_ids)} left; the paper scores all {len(ids)})")
    if cfg.limit is not None and (len(dev_used) < len(dev_ids) or len(test_used) < len(test_ids)):
        note += (f"; limited to seed-fixed subsets of {len(dev_used)} dev and {len(test_used)} "
                 f"test images (limit={cfg.limit})")
    return CocoTask("coco", max(cat_ids) + 1, 3, cfg.shortest_edge, coco, images_dir, dev_used,
                    test_used, note, cfg, make_processor(cfg))


