"""The closed sets of string settings, as enumerations: Hydra checks a value against its field's
enumeration when it composes the config (``method.fit.solver=vaprro`` stops there, listing the
choices), and code compares members with plain strings (they are :class:`~enum.StrEnum`).

Each member's name is its value, so a record's config holds the same string as before.
"""

from __future__ import annotations

import dataclasses
import typing
from enum import StrEnum
from functools import cache

from riembench.core.errors import RiembenchError


class Activation(StrEnum):
    """RieM's metric activation and the autoencoders' (riembench.engine.embeddings.ACTIVATIONS)."""

    sigmoid = "sigmoid"
    tanh = "tanh"
    softplus = "softplus"
    gelu = "gelu"
    relu = "relu"
    identity = "identity"


class FitSolver(StrEnum):
    varpro = "varpro"
    adam = "adam"


class Schedule(StrEnum):
    constant = "constant"
    cosine = "cosine"


class EmbeddingAllocation(StrEnum):
    uniform = "uniform"
    proportional = "proportional"


class RiemCombine(StrEnum):
    sum = "sum"
    difference = "difference"


class RiemInit(StrEnum):
    """Data-free starts of a RieM embedding (riembench.engine.starts)."""

    spectral = "spectral"
    svd = "svd"
    random = "random"


class LpNormInit(StrEnum):
    """Data-free starts of an Lp-norm embedding (riembench.engine.starts)."""

    mds = "mds"
    farfield = "farfield"
    random = "random"


class SvdSolver(StrEnum):
    auto = "auto"
    exact = "exact"
    lowrank = "lowrank"


class FloatDtype(StrEnum):
    float64 = "float64"
    float32 = "float32"


class SvdAllocation(StrEnum):
    uniform = "uniform"
    energy = "energy"
    proportional = "proportional"


class ActScope(StrEnum):
    """Where activations are quantized: every input of the reference quantizers, or layer
    inputs only."""

    reference = "reference"
    layers = "layers"


class EqRange(StrEnum):
    absmax = "absmax"
    minmax = "minmax"


class Relu6Policy(StrEnum):
    # a member may take a str method's name; mypy reads it as an override of str.replace
    replace = "replace"  # type: ignore[assignment]
    keep = "keep"


class PruneMode(StrEnum):
    unstructured = "unstructured"
    structured = "structured"


#: "global" is a Python keyword, so this one is built with the functional API (a member's name
#: must be its value: Hydra reads a config's string by member name)
PruneScope = StrEnum("PruneScope", {"layer": "layer", "global": "global"})


class PruneCriterion(StrEnum):
    l1 = "l1"
    l2 = "l2"


class EigenSolver(StrEnum):
    """scikit-learn's eigen solvers (Isomap and LLE take the first three)."""

    auto = "auto"
    arpack = "arpack"
    dense = "dense"
    randomized = "randomized"


class LleMethod(StrEnum):
    standard = "standard"
    modified = "modified"
    hessian = "hessian"
    ltsa = "ltsa"


class MatrixFamily(StrEnum):
    lp_field = "lp_field"
    kernel_field = "kernel_field"
    lowrank = "lowrank"
    randn = "randn"
    file = "file"


class ProbeDist(StrEnum):
    uniform = "uniform"
    normal = "normal"


class MnistResize(StrEnum):
    pad = "pad"
    bilinear = "bilinear"


class SizeUnit(StrEnum):
    mb = "mb"
    mib = "mib"


class ByteOverhead(StrEnum):
    measured = "measured"
    unbudgeted = "unbudgeted"


class Optimizer(StrEnum):
    sgd = "sgd"
    adamw = "adamw"


class TrainSchedule(StrEnum):
    onecycle = "onecycle"
    cosine = "cosine"
    constant = "constant"


class Augment(StrEnum):
    none = "none"
    crop = "crop"
    crop_flip = "crop_flip"


class WandbMode(StrEnum):
    online = "online"
    offline = "offline"
    disabled = "disabled"


class TaskKind(StrEnum):
    """What a dataset gives a method: one matrix to approximate (table 5) or a network's
    image task (tables 1-4)."""

    matrix = "matrix"
    network = "network"


def coerce_choices(settings: object) -> None:
    """Turn each enumeration field of a schema instance given as a plain string into its member,
    in place, and refuse a string that is no member (naming the choices). Hydra does this at
    composition; this covers a schema built directly (a notebook, a test)."""
    schema: type = type(settings)
    for name, enum in _choice_fields(schema).items():
        value = getattr(settings, name)
        if value is None or isinstance(value, enum):
            continue
        try:
            setattr(settings, name, enum(value))
        except ValueError:
            raise RiembenchError(f"{type(settings).__name__}.{name}={value!r} is not one of "
                                 f"{', '.join(m.value for m in enum)}") from None


@cache
def _choice_fields(schema: type) -> dict[str, type[StrEnum]]:
    hints = typing.get_type_hints(schema)
    out = {}
    for f in dataclasses.fields(schema):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        enum = next((a for a in args if isinstance(a, type) and issubclass(a, StrEnum)), None)
        if enum is not None:
            out[f.name] = enum
    return out
