"""Image classification datasets for tables 1 (digits, MNIST, CIFAR-100) and 2 (ImageNet).

Every builder returns an :class:`ImageTask` with three disjoint parts: ``train`` (what a model may
be trained on), ``dev`` (a fixed held-out slice of the *training* data, used to pick seeds and
hyper-parameters, never trained on) and ``test`` (the official test set, reported only). Splits
depend on ``split_seed`` alone, never on the method seed, so every method of a table is selected
and scored on the same images. Layouts and fetch commands are in docs/data.md.

The files are read with torchvision's own dataset classes (no re-implementation of the formats);
MNIST and CIFAR-100 are then kept as uint8 tensors and converted per item, which is both faster
than torchvision's per-item PIL round trip and lighter than storing normalized floats.
A missing or unreadable dataset is an error naming the files: there is never a random fallback.
"""

from __future__ import annotations

import copy
import struct
from collections.abc import Callable, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision import transforms as v1
from torchvision.datasets import CIFAR100, MNIST, ImageFolder
from torchvision.datasets.utils import check_integrity
from torchvision.datasets.vision import StandardTransform
from torchvision.transforms import v2

from riembench.config.datasets import Cifar100Config, DigitsConfig, ImageNetConfig, MnistConfig
from riembench.core.errors import RiembenchError
from riembench.core.validate import require_nonempty
from riembench.data.preprocess import (  # noqa: F401  (the means are re-exported)
    IMAGENET_MEAN,
    IMAGENET_STD,
    STANDARD,
    EvalPreprocessing,
)
from riembench.data.tasks import SPLITS, NetworkTask

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
#: digits has no official test split; this fixed stratified fraction plays that role
DIGITS_TEST_FRACTION = 0.3
DIGITS_TEST_SEED = 0
RESIZE_MODES = ("pad", "bilinear")


# --------------------------------------------------------------------------------------- configs


def _check_common(image_size: int, split_seed: int, min_size: int = 8) -> None:
    if image_size < min_size:
        raise RiembenchError(f"image_size must be >= {min_size}, got {image_size}")
    if split_seed < 0:
        raise RiembenchError(f"split_seed must be >= 0, got {split_seed}")


def _check_fraction(dev_fraction: float) -> None:
    if not 0.0 < dev_fraction < 1.0:
        raise RiembenchError(f"dev_fraction must be in (0, 1), got {dev_fraction}")










# ------------------------------------------------------------------------------ task and datasets


@dataclass
class ImageTask(NetworkTask):
    """One classification problem: three disjoint parts and how dev was made (for tables)."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    train: Dataset
    dev: Dataset
    test: Dataset
    dev_note: str
    #: the evaluation preprocessing applied (ImageNet: the backbone library's), for the record
    preprocessing: dict[str, Any] | None = None

    def split(self, name: str) -> Dataset:
        if name not in SPLITS:
            raise RiembenchError(f"{self.name} has no split '{name}' ({', '.join(SPLITS)})")
        return {"train": self.train, "dev": self.dev, "test": self.test}[name]

    def input_range(self) -> tuple[float, float] | None:
        """From the test transform's ``Normalize``: pixels in [0, 1] become
        ``[(0 - mean) / std, (1 - mean) / std]``, taken over all channels (ImageNet's
        statistics give [-2.118, 2.640], the constants jakc4103/DFQ quantizes its input on).
        None when no Normalize is found: the input's range is then unknown, and quantizers say
        so."""
        dataset = self.test
        while isinstance(dataset, torch.utils.data.Subset):
            dataset = dataset.dataset
        stack = [getattr(dataset, "transform", None)]
        while stack:
            t = stack.pop()
            if t is None:
                continue
            if isinstance(t, v1.Normalize | v2.Normalize):
                mean = torch.as_tensor(t.mean, dtype=torch.float64).flatten()
                std = torch.as_tensor(t.std, dtype=torch.float64).flatten()
                return float(((0 - mean) / std).min()), float(((1 - mean) / std).max())
            if isinstance(t, v1.Compose | v2.Compose):
                stack.extend(reversed(list(t.transforms)))
        return None


class TensorImages(Dataset):
    """In-memory images, converted per item: [0, 1] floats -> geometry -> augmentation -> normalize.

    ``images`` is N x C x h x w, uint8 (divided by 255) or float already in [0, 1]. ``indices``
    selects a part without copying the shared storage; it is kept as an attribute so callers
    (and tests) can check that parts are disjoint.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor,
                 transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images = images
        self.indices = indices
        self.targets = targets[indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[self.indices[i]]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        return self.transform(x), int(self.targets[i])


class EmptyImages(Dataset):
    """A part that does not exist here (ImageNet train without a train folder)."""

    def __len__(self) -> int:
        return 0

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        raise IndexError("empty dataset")


def make_loader(dataset: Dataset, batch_size: int, shuffle: bool = False, num_workers: int = 0,
                seed: int = 0) -> DataLoader:
    """A DataLoader whose order depends only on ``seed``.

    The seeded generator fixes the shuffle order and the per-worker seeds (hence augmentation in
    workers). With ``num_workers=0`` augmentation draws from torch's global RNG, which the runner
    seeds per method seed.
    """
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=num_workers > 0)


def _transform(geometry: Sequence[Callable], augment: Sequence[Callable],
               mean: Sequence[float], std: Sequence[float]) -> v2.Compose:
    """Geometry and augmentation act on [0, 1] values so padding is black, as in the usual recipes."""
    return v2.Compose([*geometry, *augment, v2.Normalize(list(mean), list(std))])


def _crop_augment(size: int, flip: bool) -> list[Callable]:
    ops: list[Callable] = [v2.RandomCrop(size, padding=max(1, size // 8))]
    return [*ops, v2.RandomHorizontalFlip()] if flip else ops


def _split_perm(n: int, dev_count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, dev) indices: the first ``dev_count`` of a seeded permutation are dev; both sorted."""
    if not 0 < dev_count < n:
        raise RiembenchError(f"cannot hold out {dev_count} of {n} images for dev")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[dev_count:].sort().values, perm[:dev_count].sort().values


def _fraction_note(dev: int, total: int, frac: float, seed: int, test: str) -> str:
    return (f"{frac:.0%} of the {total} official training images held out as dev ({dev}, split "
            f"seed {seed}); test = {test}")


# ---------------------------------------------------------------------------------------- digits


def build_digits(cfg: DigitsConfig, root: Path | None = None) -> ImageTask:
    """scikit-learn's bundled 8x8 digits; ``root`` is unused (nothing to download).

    Normalization statistics come from the train part only, so dev and test stay unseen.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    idx = np.arange(len(y))
    rest, test_idx = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, stratify=y,
                                      random_state=DIGITS_TEST_SEED)
    train_idx, dev_idx = train_test_split(rest, test_size=cfg.dev_fraction, stratify=y[rest],
                                          random_state=cfg.split_seed)
    images = torch.from_numpy(x).float().div_(16.0).reshape(-1, 1, 8, 8)
    images = v2.functional.resize(images, [cfg.image_size, cfg.image_size],
                                  interpolation=v2.InterpolationMode.BILINEAR, antialias=True)
    images = images.clamp_(0.0, 1.0)
    targets = torch.from_numpy(y).long()
    train_t, dev_t, test_t = (torch.from_numpy(np.sort(i)).long()
                              for i in (train_idx, dev_idx, test_idx))
    mean, std = (images[train_t].mean().item(),), (images[train_t].std().item(),)
    plain = _transform([], [], mean, std)
    aug = _crop_augment(cfg.image_size, flip=False) if cfg.augment else []
    note = (f"no official test split: test = fixed stratified {DIGITS_TEST_FRACTION:.0%} of the "
            f"{len(y)} images ({len(test_t)}, random_state={DIGITS_TEST_SEED}); dev = stratified "
            f"{cfg.dev_fraction:.0%} of the remaining {len(rest)} ({len(dev_t)}, split seed "
            f"{cfg.split_seed})")
    return ImageTask("digits", 10, 1, cfg.image_size,
                     TensorImages(images, targets, train_t, _transform([], aug, mean, std)),
                     TensorImages(images, targets, dev_t, plain),
                     TensorImages(images, targets, test_t, plain), note)




# ----------------------------------------------------------------------------------------- MNIST

MNIST_FILES = {  # raw file -> (idx magic number, number of dimensions)
    "train-images-idx3-ubyte": (2051, 3),
    "train-labels-idx1-ubyte": (2049, 1),
    "t10k-images-idx3-ubyte": (2051, 3),
    "t10k-labels-idx1-ubyte": (2049, 1),
}


def _mnist_missing_message(raw: Path, missing: list[str], root: Path) -> str:
    return (f"MNIST not found: missing {', '.join(str(raw / m) for m in missing)}. Expected the four "
            f"uncompressed idx files {', '.join(MNIST_FILES)} in {raw}. On a networked machine run\n"
            "  python -c \"from torchvision.datasets import MNIST; MNIST('data', download=True)\"\n"
            f"then copy data/MNIST to {root / 'MNIST'} (or point data.root / RIEMBENCH_DATA at "
            "the folder that holds MNIST/).")


def _idx_count(path: Path, magic: int, ndim: int) -> int:
    """Validate an idx file's header and size (torchvision only asserts); return its item count."""
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(4 + 4 * ndim)
    if len(header) < 4 + 4 * ndim:
        raise RiembenchError(f"corrupt MNIST file {path}: truncated header ({size} bytes)")
    found, *dims = struct.unpack(f">{1 + ndim}I", header)
    if found != magic:
        raise RiembenchError(f"corrupt MNIST file {path}: magic number {found}, expected {magic} "
                             "(is it still gzip-compressed? gunzip it)")
    expected = len(header) + int(np.prod(dims))
    if size != expected:
        raise RiembenchError(f"corrupt MNIST file {path}: {size} bytes, header {dims} implies "
                             f"{expected}")
    return dims[0]


def _check_mnist_files(root: Path) -> None:
    raw = root / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing:
        raise RiembenchError(_mnist_missing_message(raw, missing, root))
    counts = {name: _idx_count(raw / name, *spec) for name, spec in MNIST_FILES.items()}
    for split in ("train", "t10k"):
        n_img, n_lab = counts[f"{split}-images-idx3-ubyte"], counts[f"{split}-labels-idx1-ubyte"]
        if n_img != n_lab:
            raise RiembenchError(f"MNIST {split} files in {raw} disagree: {n_img} images but "
                                 f"{n_lab} labels")


def _read_mnist(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        ds = MNIST(str(root), train=train, download=False)
    except Exception as exc:  # torchvision asserts/TypeErrors on odd content
        raise RiembenchError(f"could not read MNIST ({'train' if train else 't10k'}) from "
                             f"{root / 'MNIST' / 'raw'}: {exc!r}") from exc
    images, targets = ds.data.unsqueeze(1), ds.targets.long()
    require_nonempty(len(targets), "MNIST images", root / "MNIST" / "raw")
    if targets.numel() and (targets.min() < 0 or targets.max() > 9):
        raise RiembenchError(f"MNIST labels in {root / 'MNIST' / 'raw'} outside 0..9")
    return images, targets


def _mnist_geometry(cfg: MnistConfig, side: int) -> list[Callable]:
    if cfg.resize == "pad":
        if side > cfg.image_size:
            raise RiembenchError(f"MNIST images are {side}x{side}, larger than image_size "
                                 f"{cfg.image_size}; use dataset.resize=bilinear")
        lo = (cfg.image_size - side) // 2
        hi = cfg.image_size - side - lo
        return [v2.Pad([lo, lo, hi, hi])] if cfg.image_size > side else []
    return [v2.Resize([cfg.image_size, cfg.image_size], antialias=True)]


def build_mnist(cfg: MnistConfig, root: Path) -> ImageTask:
    """MNIST from ``<root>/MNIST/raw``; dev is a seeded 10% of the 60k train images."""
    root = Path(root)
    _check_mnist_files(root)
    train_x, train_y = _read_mnist(root, train=True)
    test_x, test_y = _read_mnist(root, train=False)
    n = len(train_y)
    dev_count = round(cfg.dev_fraction * n)
    train_idx, dev_idx = _split_perm(n, dev_count, cfg.split_seed)
    geometry = _mnist_geometry(cfg, train_x.shape[-1])
    plain = _transform(geometry, [], MNIST_MEAN, MNIST_STD)
    aug = _crop_augment(cfg.image_size, flip=False) if cfg.augment else []
    note = _fraction_note(dev_count, n, cfg.dev_fraction, cfg.split_seed,
                          f"official {len(test_y)}")
    return ImageTask("mnist", 10, 1, cfg.image_size,
                     TensorImages(train_x, train_y, train_idx,
                                  _transform(geometry, aug, MNIST_MEAN, MNIST_STD)),
                     TensorImages(train_x, train_y, dev_idx, plain),
                     TensorImages(test_x, test_y, torch.arange(len(test_y)), plain), note)




# ------------------------------------------------------------------------------------- CIFAR-100


class _CIFAR100ExistsOnly(CIFAR100):
    """torchvision's CIFAR-100 reader with ``md5=None`` in its file lists.

    torchvision checks md5s inside ``__init__`` with no switch to turn that off; its own
    ``check_integrity(path, None)`` means "the file exists". The builder verifies the md5s itself
    first (same lists, same function) unless ``verify_md5=false``, so that a mismatch can name the
    file and hashing happens once, and tiny test fixtures in the real format can be read.
    """

    train_list: ClassVar[list[list[str | None]]] = [[n, None] for n, _ in CIFAR100.train_list]
    test_list: ClassVar[list[list[str | None]]] = [[n, None] for n, _ in CIFAR100.test_list]
    meta: ClassVar[dict[str, str | None]] = {**CIFAR100.meta, "md5": None}


def _cifar_files() -> list[tuple[str, str]]:
    files = [(name, md5) for name, md5 in CIFAR100.train_list + CIFAR100.test_list]
    return [*files, (CIFAR100.meta["filename"], CIFAR100.meta["md5"])]


def _check_cifar_files(root: Path, verify_md5: bool) -> None:
    base = root / CIFAR100.base_folder
    missing = [str(base / name) for name, _ in _cifar_files() if not (base / name).is_file()]
    if missing:
        raise RiembenchError(
            f"CIFAR-100 not found: missing {', '.join(missing)}. Expected the python-version "
            f"pickles train, test and meta in {base}. On a networked machine run\n"
            "  python -c \"from torchvision.datasets import CIFAR100; CIFAR100('data', "
            "download=True)\"\n"
            f"then copy data/cifar-100-python to {base} (or point data.root / RIEMBENCH_DATA at "
            "the folder that holds cifar-100-python/).")
    if verify_md5:
        for name, md5 in _cifar_files():
            if not check_integrity(str(base / name), md5):
                raise RiembenchError(
                    f"corrupt CIFAR-100 file {base / name}: md5 differs from the official "
                    f"{md5}; re-download it (set dataset.verify_md5=false only for a "
                    "deliberately modified copy)")


def _read_cifar(root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    base = root / CIFAR100.base_folder
    split = "train" if train else "test"
    try:
        ds = _CIFAR100ExistsOnly(str(root), train=train, download=False)
    except Exception as exc:  # unpickling / reshape errors from a damaged file
        raise RiembenchError(f"could not read CIFAR-100 {base / split} (or {base / 'meta'}): "
                             f"{exc!r}") from exc
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    targets = torch.as_tensor(ds.targets, dtype=torch.long)
    num_classes = len(ds.classes)
    require_nonempty(len(targets), "CIFAR-100 images", base / split)
    if targets.numel() and (targets.min() < 0 or targets.max() >= num_classes):
        raise RiembenchError(f"CIFAR-100 labels in {base / split} outside 0..{num_classes - 1}")
    return images, targets, num_classes


def build_cifar100(cfg: Cifar100Config, root: Path) -> ImageTask:
    """CIFAR-100 from ``<root>/cifar-100-python``; augmentation only on the train part."""
    root = Path(root)
    _check_cifar_files(root, cfg.verify_md5)
    train_x, train_y, num_classes = _read_cifar(root, train=True)
    test_x, test_y, _ = _read_cifar(root, train=False)
    n = len(train_y)
    dev_count = round(cfg.dev_fraction * n)
    train_idx, dev_idx = _split_perm(n, dev_count, cfg.split_seed)
    side = train_x.shape[-1]
    geometry = ([] if side == cfg.image_size
                else [v2.Resize([cfg.image_size, cfg.image_size], antialias=True)])
    plain = _transform(geometry, [], CIFAR100_MEAN, CIFAR100_STD)
    aug = _crop_augment(cfg.image_size, flip=True) if cfg.augment else []
    note = _fraction_note(dev_count, n, cfg.dev_fraction, cfg.split_seed,
                          f"official {len(test_y)}")
    return ImageTask("cifar100", num_classes, 3, cfg.image_size,
                     TensorImages(train_x, train_y, train_idx,
                                  _transform(geometry, aug, CIFAR100_MEAN, CIFAR100_STD)),
                     TensorImages(train_x, train_y, dev_idx, plain),
                     TensorImages(test_x, test_y, torch.arange(len(test_y)), plain), note)




# -------------------------------------------------------------------------------------- ImageNet


def load_rgb(path: str) -> Image.Image:
    """ImageFolder's loader, but a file PIL cannot decode is an error that names the file."""
    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:
        raise RiembenchError(f"corrupt image {path}: {exc}") from exc


def _imagenet_missing_message(val: Path, problem: str) -> str:
    return (
        f"ImageNet validation set {problem} at {val}. Expected an ImageFolder: "
        f"{val}/<wnid>/*.JPEG, e.g. {val}/n01440764/ILSVRC2012_val_00000293.JPEG (1000 wnid "
        "folders, 50000 images). On a machine with ILSVRC2012_img_val.tar (from image-net.org):\n"
        f"  mkdir -p {val} && tar -xf ILSVRC2012_img_val.tar -C {val}\n"
        f"  cd {val} && wget -qO- https://raw.githubusercontent.com/soumith/imagenetloader.torch/"
        "master/valprep.sh | bash\n"
        "(valprep.sh moves each image into its wnid folder). Set dataset.val_dir if it lives "
        "elsewhere under the data root.")


def _image_folder(path: Path, transform: Callable) -> ImageFolder:
    try:
        return ImageFolder(str(path), transform=transform, loader=load_rgb)
    except (FileNotFoundError, OSError) as exc:
        raise RiembenchError(_imagenet_missing_message(path, f"unreadable ({exc})")) from exc


def _open_val(val: Path, transform: Callable, expected: int | None) -> ImageFolder:
    if not val.is_dir():
        raise RiembenchError(_imagenet_missing_message(val, "not found"))
    if not any(p.is_dir() for p in val.iterdir()) and any(val.glob("*.JPEG")):
        raise RiembenchError(_imagenet_missing_message(val, "is flat (not sorted into class "
                                                            "folders: run valprep.sh)"))
    ds = _image_folder(val, transform)
    if expected is not None and len(ds.classes) != expected:
        raise RiembenchError(f"{val} has {len(ds.classes)} class folders, expected "
                             f"{expected}: labels would not match a pretrained head (set "
                             "dataset.expected_classes=null to accept any number)")
    return ds


def _with_transform(folder: ImageFolder, transform: Callable) -> ImageFolder:
    """The same file list with another transform: scanning 1.28M train files once is enough."""
    twin = copy.copy(folder)  # shallow: shares the (read-only) sample list
    twin.transform = transform
    twin.transforms = StandardTransform(transform, None)
    return twin


def _imagenet_transforms(cfg: ImageNetConfig,
                         prep: EvalPreprocessing) -> tuple[Callable, Callable]:
    """(eval, train) PIL -> normalized tensor pipelines; train is eval unless augment."""
    evaluate = prep.transform()
    if not cfg.augment:
        return evaluate, evaluate
    train = v2.Compose([v2.RandomResizedCrop(prep.crop_size, antialias=True),
                        v2.RandomHorizontalFlip(), v2.ToImage(),
                        v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize(list(prep.mean), list(prep.std))])
    return evaluate, train


def _limit(test: Dataset, limit: int | None, seed: int) -> tuple[Dataset, str]:
    """First ``limit`` of a seeded permutation (so a larger limit contains a smaller one)."""
    assert isinstance(test, Sized)  # an ImageFolder or a Subset of one
    if limit is None or limit >= len(test):
        return test, ""
    # offset so the limit subset is not the same draw as the dev split
    perm = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed + 7919))
    note = f"; test limited to a seed-fixed {limit} of {len(test)} (limit={limit})"
    return Subset(test, perm[:limit].sort().values.tolist()), note


def build_imagenet(cfg: ImageNetConfig, root: Path,
                   preprocessing: EvalPreprocessing | None = None) -> ImageTask:
    """ImageNet val as test; dev from the train folder if there is one, else carved out of val.

    ``preprocessing`` is the backbone library's evaluation stack (None: the standard 256/224
    bilinear one); the dataset's explicit ``image_size``/``resize_size`` replace its sizes.
    Labels are ImageFolder's sorted-wnid indices, the order torchvision/timm/pytorchcv heads use.
    """
    root = Path(root)
    prep = (preprocessing or STANDARD).with_sizes(cfg.image_size, cfg.resize_size)
    evaluate, train_tf = _imagenet_transforms(cfg, prep)
    val = _open_val(root / cfg.val_dir, evaluate, cfg.expected_classes)
    train_path = root / cfg.train_dir
    if train_path.is_dir():
        train_eval = _image_folder(train_path, evaluate)
        if train_eval.classes != val.classes:
            raise RiembenchError(f"class folders of {train_path} and {root / cfg.val_dir} differ; "
                                 "labels would not line up")
        train_idx, dev_idx = _split_perm(len(train_eval), cfg.dev_size, cfg.split_seed)
        train_aug = _with_transform(train_eval, train_tf) if cfg.augment else train_eval
        train: Dataset = Subset(train_aug, train_idx.tolist())
        dev: Dataset = Subset(train_eval, dev_idx.tolist())
        test: Dataset = val
        note = (f"{cfg.dev_size} images of {train_path.name}/ ({len(train_eval)}) held out as dev "
                f"(split seed {cfg.split_seed}); test = val ({len(val)})")
    else:
        test_idx, dev_idx = _split_perm(len(val), cfg.dev_size, cfg.split_seed)
        train, dev = EmptyImages(), Subset(val, dev_idx.tolist())
        test = Subset(val, test_idx.tolist())
        note = (f"no train folder: {cfg.dev_size} of the {len(val)} val images held out as dev "
                f"(split seed {cfg.split_seed}) and excluded from test ({len(test_idx)} left)")
    test, limited = _limit(test, cfg.limit, cfg.split_seed)
    return ImageTask("imagenet", len(val.classes), 3, prep.crop_size, train, dev, test,
                     note + limited, prep.as_record())


#: the runner passes the backbone's evaluation preprocessing (riembench.data.preprocess)
