"""Dataset schemas, with what the harness may ask of a dataset before loading it, and the dataset
registry (the builders live in ``riembench.data`` and are imported when a cell runs)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from omegaconf import MISSING

from riembench.config.choices import MatrixFamily, MnistResize, ProbeDist, TaskKind, coerce_choices
from riembench.core.errors import RiembenchError
from riembench.core.registry import Registry


@dataclass
class DatasetConfig:
    """Fields and capabilities every dataset declares."""

    name: str = MISSING

    #: the paper table whose store folder its records go to (``table=`` overrides it)
    table: ClassVar[str] = ""
    #: what it gives a method: one matrix (table 5) or a network's image task (tables 1-4)
    kind: ClassVar[TaskKind] = TaskKind.network
    #: True when evaluation uses the backbone library's own preprocessing (ImageNet)
    takes_preprocessing: ClassVar[bool] = False

    def __post_init__(self) -> None:
        coerce_choices(self)


@dataclass
class SyntheticConfig(DatasetConfig):
    name: str = "synthetic"
    family: MatrixFamily = MatrixFamily.lp_field
    n: int = 1000
    #: seed of the matrix itself (fixed across method seeds so every seed fits the same A)
    matrix_seed: int = 0
    latent_dim: int = 8  # lp_field / kernel_field: dimension of the latent points
    heads: int = 2  # lp_field: number of chunks with their own lambda
    p: float = 2.0  # lp_field: norm order
    length_scale: float = 0.5  # kernel_field
    rank: int = 10  # lowrank
    noise: float = 0.01  # lowrank: std of the iid noise relative to the signal's entry std
    path: str | None = None  # file: .pt/.pth (tensor or state dict) or .npy
    key: str | None = None  # file: state-dict key of the matrix
    probe_dist: ProbeDist = ProbeDist.uniform  # uniform [0, 1) as in the authors' notebook
    dev_probes: int = 64
    test_probes: int = 256

    table: ClassVar[str] = "table5"
    kind: ClassVar[TaskKind] = TaskKind.matrix


def _check_common(image_size: int, split_seed: int, min_size: int = 8) -> None:
    if image_size < min_size:
        raise RiembenchError(f"image_size must be >= {min_size}, got {image_size}")
    if split_seed < 0:
        raise RiembenchError(f"split_seed must be >= 0, got {split_seed}")


def _check_fraction(dev_fraction: float) -> None:
    if not 0.0 < dev_fraction < 1.0:
        raise RiembenchError(f"dev_fraction must be in (0, 1), got {dev_fraction}")


@dataclass
class DigitsConfig(DatasetConfig):
    name: str = "digits"
    image_size: int = 32  # 8x8 originals are upsampled (bilinear) to this square side
    dev_fraction: float = 0.1  # of the 70% train part, stratified
    split_seed: int = 0  # dev split only; the 30% test split is always random_state=0
    augment: bool = False  # random crop with padding image_size // 8 (no flip: digits)

    table: ClassVar[str] = "table1"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self.image_size, self.split_seed)
        _check_fraction(self.dev_fraction)


@dataclass
class MnistConfig(DatasetConfig):
    name: str = "mnist"
    image_size: int = 32  # LeNet-5's classic input: the 28x28 digits zero-padded to 32x32
    resize: MnistResize = MnistResize.pad  # "pad" (needs image_size >= 28) or "bilinear"
    dev_fraction: float = 0.1  # of the 60000 official training images
    split_seed: int = 0
    augment: bool = False  # random crop with padding image_size // 8 (no flip: digits)

    table: ClassVar[str] = "table1"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self.image_size, self.split_seed)
        _check_fraction(self.dev_fraction)
        if self.resize == "pad" and self.image_size < 28:
            raise RiembenchError(f"mnist resize=pad needs image_size >= 28, got {self.image_size}; "
                                 "use dataset.resize=bilinear to shrink")


@dataclass
class Cifar100Config(DatasetConfig):
    name: str = "cifar100"
    image_size: int = 32  # native size; other sizes are bilinear resizes
    dev_fraction: float = 0.1  # of the 50000 official training images
    split_seed: int = 0
    augment: bool = True  # random crop (pad 4 at 32) + horizontal flip, train part only
    #: check torchvision's md5 of train/test/meta; turn off only for a deliberately modified copy
    verify_md5: bool = True

    table: ClassVar[str] = "table1"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(self.image_size, self.split_seed)
        _check_fraction(self.dev_fraction)


@dataclass
class ImageNetConfig(DatasetConfig):
    """ImageNet val (and optionally train) as ImageFolders.

    ``image_size`` / ``resize_size``: None takes the backbone library's own evaluation stack
    (:class:`~riembench.data.preprocess.EvalPreprocessing`: torchvision 256/224 bilinear,
    timm's per-model crop_pct and interpolation, pytorchcv's per-model size); a number replaces
    the library's value (small test fixtures) and the record says so.
    """

    name: str = "imagenet"
    image_size: int | None = None  # center crop side; None: the backbone's
    resize_size: int | None = None  # shorter side before the crop; None: the backbone's
    val_dir: str = "imagenet/val"  # under the data root: ImageFolder of <wnid>/*.JPEG
    train_dir: str = "imagenet/train"  # under the data root; optional (dev comes from it)
    dev_size: int = 10000  # images held out for dev (from train if present, else from val)
    split_seed: int = 0
    augment: bool = False  # train part only: RandomResizedCrop + flip
    limit: int | None = None  # evaluate on a seed-fixed subset of this many test images
    #: number of class folders required (pretrained heads index the 1000 sorted wnids);
    #: null accepts any number
    expected_classes: int | None = 1000

    table: ClassVar[str] = "table2"
    takes_preprocessing: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_common(8 if self.image_size is None else self.image_size, self.split_seed)
        if self.resize_size is not None and self.resize_size < (self.image_size or 8):
            raise RiembenchError(f"resize_size ({self.resize_size}) must be >= image_size "
                                 f"({self.image_size})")
        if self.dev_size < 1:
            raise RiembenchError(f"dev_size must be >= 1, got {self.dev_size}")
        if self.limit is not None and self.limit < 1:
            raise RiembenchError(f"limit must be >= 1 or null, got {self.limit}")
        if self.expected_classes is not None and self.expected_classes < 1:
            raise RiembenchError(f"expected_classes must be >= 1 or null, got "
                                 f"{self.expected_classes}")


@dataclass
class CocoConfig(DatasetConfig):
    name: str = "coco"
    #: folder of the val images (``<file_name>`` of each image entry), under the data root
    #: unless absolute
    images_dir: str = "coco/val2017"
    #: instances (bbox) annotations, under the data root unless absolute
    annotations: str = "coco/annotations/instances_val2017.json"
    #: val images held out as dev (seeded) and removed from test
    dev_size: int = 500
    split_seed: int = 0
    #: quick runs: at most this many images of each split (seed-fixed subsets; null = all)
    limit: int | None = None
    #: DetrImageProcessor resize: shorter side to this ...
    shortest_edge: int = 800
    #: ... unless the longer side would exceed this
    longest_edge: int = 1333
    #: images per forward pass. Part of the run's identity on purpose: a batch is padded to its
    #: largest image, which changes the backbone's features near the border slightly.
    #: (``data.batch_size``, 256 for classification, is not used: far too large at 800 px.)
    batch_size: int = 8
    #: keep detections scoring above this; 0 keeps all queries, as DETR's own evaluation does
    score_threshold: float = 0.0

    table: ClassVar[str] = "table4"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dev_size < 1:
            raise RiembenchError(f"dev_size must be >= 1 (dev picks seeds), got {self.dev_size}")
        if self.split_seed < 0:
            raise RiembenchError(f"split_seed must be >= 0, got {self.split_seed}")
        if self.limit is not None and self.limit < 1:
            raise RiembenchError(f"limit must be >= 1 or null, got {self.limit}")
        if not 1 <= self.shortest_edge <= self.longest_edge:
            raise RiembenchError(f"need 1 <= shortest_edge <= longest_edge, got "
                                 f"{self.shortest_edge}, {self.longest_edge}")
        if self.batch_size < 1:
            raise RiembenchError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.score_threshold < 1.0:
            raise RiembenchError(f"score_threshold must be in [0, 1), got {self.score_threshold}")


#: name -> schema and builder (riembench.data), imported when a cell runs
DATASETS: Registry[Any] = Registry("dataset")

for _name, _schema, _impl in (
    ("synthetic", SyntheticConfig, "riembench.data.synthetic:build_synthetic"),
    ("digits", DigitsConfig, "riembench.data.images:build_digits"),
    ("mnist", MnistConfig, "riembench.data.images:build_mnist"),
    ("cifar100", Cifar100Config, "riembench.data.images:build_cifar100"),
    ("imagenet", ImageNetConfig, "riembench.data.images:build_imagenet"),
    ("coco", CocoConfig, "riembench.data.coco:build_coco"),
):
    DATASETS.declare(_name, _schema, _impl)
