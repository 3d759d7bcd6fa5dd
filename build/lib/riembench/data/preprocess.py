"""Evaluation preprocessing of a pretrained backbone: what its library feeds it at test time.

A hub's accuracy is only reproduced with the hub's own evaluation stack: torchvision models are
scored after resize 256 / centre crop 224 (bilinear), timm models after their own per-model
``crop_pct`` and interpolation (often bicubic, sometimes another input size), pytorchcv models
after ``ceil(img_size / img_scale)`` / ``img_size`` from the package's model table. Each backbone
source describes its stack as an :class:`EvalPreprocessing`; the ImageNet loader builds its
evaluation transform from it, and the record keeps :meth:`EvalPreprocessing.as_record`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from riembench.core.errors import RiembenchError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


@dataclass(frozen=True)
class EvalPreprocessing:
    """Resize the shorter side to ``resize_size``, centre-crop ``crop_size``, normalize.

    ``origin`` says where the numbers come from (e.g. "torchvision ResNet18_Weights.IMAGENET1K_V1
    transforms()"), so a record can be checked against the library's documentation.
    """

    crop_size: int
    resize_size: int
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    origin: str = ""
    #: dataset fields that replaced the library's values (a fixture at a small image size)
    overridden: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise RiembenchError(f"interpolation must be one of {INTERPOLATIONS}, got "
                                 f"'{self.interpolation}'")
        if not 8 <= self.crop_size <= self.resize_size:
            raise RiembenchError(f"preprocessing needs 8 <= crop ({self.crop_size}) <= resize "
                                 f"({self.resize_size})")

    def with_sizes(self, crop_size: int | None, resize_size: int | None) -> EvalPreprocessing:
        """These settings with the dataset's explicit sizes; an image size alone keeps the
        library's resize/crop ratio (``crop_pct``)."""
        if crop_size is None and resize_size is None:
            return self
        crop = self.crop_size if crop_size is None else int(crop_size)
        if resize_size is None:
            resize = max(crop, math.floor(crop * self.resize_size / self.crop_size))
        else:
            resize = int(resize_size)
        changed = tuple(name for name, value in (("image_size", crop_size),
                                                 ("resize_size", resize_size))
                        if value is not None)
        return replace(self, crop_size=crop, resize_size=resize, overridden=changed)

    def transform(self) -> Callable[[Any], Any]:
        """PIL image -> normalized float tensor (torchvision v2, PIL resize as every hub uses)."""
        import torch
        from torchvision.transforms import v2

        mode = getattr(v2.InterpolationMode, self.interpolation.upper())
        return v2.Compose([v2.Resize(self.resize_size, interpolation=mode, antialias=True),
                           v2.CenterCrop(self.crop_size), v2.ToImage(),
                           v2.ToDtype(torch.float32, scale=True),
                           v2.Normalize(list(self.mean), list(self.std))])

    def as_record(self) -> dict[str, Any]:
        out = asdict(self)
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["overridden"] = list(self.overridden)
        return out


#: what the ImageNet loader uses for a backbone that brings no preprocessing of its own
STANDARD = EvalPreprocessing(224, 256, "bilinear", origin="standard ImageNet evaluation "
                             "(resize 256, centre crop 224, bilinear, ImageNet mean/std)")


@dataclass(frozen=True)
class TimmPreprocessing(EvalPreprocessing):
    """timm's evaluation transform, built by ``timm.data.create_transform`` itself.

    timm describes a crop by ``crop_pct`` (crop / resize) and ``crop_mode`` ("center", "squash",
    "border"); ``resize_size`` is the ``floor(crop / crop_pct)`` timm computes, kept for the
    record and for a dataset override.
    """

    crop_pct: float = 0.875
    crop_mode: str = "center"

    @classmethod
    def from_data_config(cls, config: dict[str, Any], origin: str) -> TimmPreprocessing:
        """From ``timm.data.resolve_data_config(model=...)``'s dict."""
        crop = int(config["input_size"][-1])
        crop_pct = float(config.get("crop_pct") or 0.875)
        return cls(crop_size=crop, resize_size=math.floor(crop / crop_pct),
                   interpolation=str(config.get("interpolation", "bicubic")),
                   mean=tuple(float(v) for v in config["mean"]),
                   std=tuple(float(v) for v in config["std"]), origin=origin,
                   crop_pct=crop_pct, crop_mode=str(config.get("crop_mode") or "center"))

    def with_sizes(self, crop_size: int | None, resize_size: int | None) -> TimmPreprocessing:
        out = super().with_sizes(crop_size, resize_size)
        if out is self:
            return self
        assert isinstance(out, TimmPreprocessing)
        # timm resizes to floor(crop / crop_pct): aim half a pixel above so float rounding
        # cannot land one pixel short of the requested resize
        return replace(out, crop_pct=out.crop_size / (out.resize_size + 0.5))

    def transform(self) -> Callable[[Any], Any]:
        from timm.data import create_transform

        return create_transform(input_size=(3, self.crop_size, self.crop_size),
                                is_training=False, interpolation=self.interpolation,
                                mean=self.mean, std=self.std, crop_pct=self.crop_pct,
                                crop_mode=self.crop_mode)
