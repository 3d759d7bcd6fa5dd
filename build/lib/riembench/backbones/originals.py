"""Which pretrained file is the paper's "original" of each table row, and what its library says
it scores.

The paper's ImageNet originals are not all torchvision's: its ResNet-18 (71.47 top-1) and
ResNet-50 (77.72) are the pytorchcv models that the data-free quantization papers it compares
with evaluate (SQuant, for one, pins ``pytorchcv==0.0.51``). pytorchcv's own model table lists
top-1 *errors*: ResNet-18 28.53 for ``resnet18-0982-0126861b.pth`` (the file pytorchcv served as
"resnet18" up to version 0.0.58; later versions serve a 73.06 retrain) and ResNet-50 22.28 for
``resnet50-0633-b00d1c8e.pth`` (still pytorchcv's "resnet50"). The other rows match
torchvision's V1 weights more closely than any pytorchcv file, so they stay torchvision.

``PYTORCHCV_RETIRED`` keeps the facts pytorchcv's current package no longer ships for a file it
used to serve (its table row, hash and release), so such a file is still checked, fetched and
reported like a current one.
"""

from __future__ import annotations

from dataclasses import dataclass

#: the paper's backbone names (rows of tables 2 and 3)
PAPER_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "densenet121")


@dataclass(frozen=True)
class ZooFile:
    """One weights file of pytorchcv's model store, as its model table describes it."""

    model: str
    file: str
    sha1: str
    release: str
    top1_err: float
    top5_err: float
    params: int
    #: where the table row was published
    table: str


PYTORCHCV_RETIRED: dict[str, ZooFile] = {
    "resnet18-0982-0126861b.pth": ZooFile(
        "resnet18", "resnet18-0982-0126861b.pth", "0126861b4cd7f7b14196b1e01827da688f8bab6d",
        "v0.0.153", 28.53, 9.82, 11_689_512,
        "pytorchcv <= 0.0.58 README, ImageNet-1K table, row ResNet-18"),
}


@dataclass(frozen=True)
class PaperOriginal:
    """The backbone config a table row's original should run, and why."""

    table: str
    backbone: str
    paper_top1: float
    config: str
    source: str
    weights: str
    expected_top1: float
    why: str


PAPER_ORIGINALS: tuple[PaperOriginal, ...] = (
    PaperOriginal("table2", "resnet18", 71.47, "pcv_resnet18", "pytorchcv",
                  "resnet18-0982-0126861b.pth", 71.47,
                  "pytorchcv's table gives this file 28.53 top-1 error = 71.47, the paper's "
                  "number; torchvision's V1 is 69.76"),
    PaperOriginal("table2", "resnet50", 77.72, "pcv_resnet50", "pytorchcv",
                  "resnet50-0633-b00d1c8e.pth", 77.72,
                  "pytorchcv's table gives 22.28 top-1 error = 77.72, the paper's number; "
                  "torchvision's V1 is 76.13"),
    PaperOriginal("table2", "densenet121", 74.36, "densenet121", "torchvision",
                  "IMAGENET1K_V1", 74.434,
                  "torchvision V1 (74.43) is the closest; pytorchcv's densenet121 is 76.52"),
    PaperOriginal("table3", "resnet34", 73.27, "resnet34", "torchvision", "IMAGENET1K_V1",
                  73.314, "torchvision V1 (73.31) is the closest; pytorchcv's resnet34 is 75.16"),
    PaperOriginal("table3", "resnet101", 77.31, "resnet101", "torchvision", "IMAGENET1K_V1",
                  77.374, "torchvision V1 (77.37) is the closest; pytorchcv's resnet101 is "
                  "79.21, torchvision V2 81.89"),
)


def paper_backbone(arch: str) -> str | None:
    """The paper's row name an architecture stands for, or None (not one of the paper's)."""
    return arch if arch in PAPER_BACKBONES else None
