"""Method schemas, each with what the harness may ask of the method, and the method registry.

A method's settings and its capabilities live together here (torch-free), so the harness
resolves a cell (validation, record keys, which seeds run, dry runs) without importing the
method; its implementation (``riembench.compression.methods``) is imported when the cell runs.
A new method is its implementation module, a schema and a ``METHODS.declare`` line here, and
``conf/method/<name>.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from omegaconf import MISSING

from riembench.config.choices import (
    Activation,
    ActScope,
    EigenSolver,
    EmbeddingAllocation,
    EqRange,
    FloatDtype,
    LleMethod,
    LpNormInit,
    PruneCriterion,
    PruneMode,
    PruneScope,
    Relu6Policy,
    RiemCombine,
    RiemInit,
    Schedule,
    SvdAllocation,
    SvdSolver,
    TaskKind,
    coerce_choices,
)
from riembench.config.fit import FitConfig
from riembench.core.errors import RiembenchError
from riembench.core.registry import Registry
from riembench.core.validate import check_choice

MATRIX = frozenset({TaskKind.matrix})
NETWORK = frozenset({TaskKind.network})
BOTH = MATRIX | NETWORK


@dataclass
class MethodConfig:
    """Fields common to every method; each method's schema subclasses this and declares its
    capabilities (the class variables and methods below)."""

    name: str = MISSING
    #: shown beside the method's name in tables (e.g. "fast" for a CPU-budget fit); part of the
    #: run's identity, so differently-labelled settings never share records
    label: str = ""
    #: network methods: which layers to compress. "fc" (Linear), "conv" (Conv2d), "all" (both),
    #: or comma-separated fnmatch patterns of module names (e.g. "layer4.*,fc")
    layers: str = "all"

    #: the tasks it takes: one matrix (table 5) and/or a network (tables 1-4)
    tasks: ClassVar[frozenset[TaskKind]] = frozenset()
    #: False for a method whose result is the same under every size setting (original, quant,
    #: dfq, prune): its record key leaves the size out, so a sweep over sizes runs it once
    needs_size: ClassVar[bool] = True
    #: True for a fit with checkpoints the dev_guided protocol can choose between
    has_checkpoints: ClassVar[bool] = False

    @property
    def deterministic(self) -> bool:
        """True when the seed does not change the result: the runner runs the first seed only,
        and its record says so."""
        return False

    def paper_name(self) -> str:
        """The method's row name in the paper's tables."""
        return self.name

    def storage_bits(self) -> int:
        """Bits each stored number of the method takes (a size in bytes is divided by this)."""
        return 32

    def quiet(self) -> None:
        """Turn off the method's progress bars (sweeps keep their output one line per event)."""

    def __post_init__(self) -> None:
        coerce_choices(self)


def _check_bits(owner: str, *bits: int | None, low: int = 2) -> None:
    for b in bits:
        if b is not None and not low <= b <= 32:
            raise RiembenchError(f"{owner} bits must be in {low}..32 or null, got {b}")


# ---------------------------------------------------------------------------- neuron embeddings


@dataclass
class EmbeddingMethodConfig(MethodConfig):
    fit: FitConfig = field(default_factory=FitConfig)
    #: show a progress bar over fitting steps
    progress: bool = field(default=True, metadata={"identity": False})
    #: networks: consecutive Linear layers share neurons (a layer's outputs are the next one's
    #: inputs) where the graph allows, see riembench.compression.network.find_chains
    share: bool = True
    #: networks: "uniform" (one d for every layer, the largest that fits) or "proportional"
    #: (each layer's budget share follows its dense size); see EmbeddingMethod.allocate
    allocation: EmbeddingAllocation = EmbeddingAllocation.uniform
    #: networks: bits of the stored embedding numbers after fitting (positions per feature
    #: column, metric per tensor; compact.quantize_embedded); null keeps float32. The paper's
    #: "8/16" is w_bits=8, a_bits=16
    w_bits: int | None = None
    #: networks: bits of the converted layers' inputs, on ranges from BatchNorm statistics
    #: (data-free, as quant/dfq); null keeps activations in float
    a_bits: int | None = None
    #: activation range: BN mean +- act_k * std (as quant/dfq)
    act_k: float = 6.0
    #: networks: L1 filter pruning of this fraction of the prunable channels before the
    #: conversion (table 3's RieM rows; methods/prune.py says which layers can lose channels)
    prune_ratio: float = 0.0

    tasks: ClassVar[frozenset[TaskKind]] = BOTH
    has_checkpoints: ClassVar[bool] = True

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_bits(f"{self.name}: w_bits/a_bits", self.w_bits, self.a_bits)
        if not 0 <= self.prune_ratio < 1:
            raise RiembenchError(f"{self.name}: prune_ratio must be in [0, 1), got "
                                 f"{self.prune_ratio}")

    def storage_bits(self) -> int:
        return 32 if self.w_bits is None else int(self.w_bits)

    def quiet(self) -> None:
        self.progress = False


@dataclass
class RiemConfig(EmbeddingMethodConfig):
    name: str = "riem"
    #: position dimension d and metric dimension d_mu; None solves them from the budget
    d: int | None = None
    d_mu: int | None = None
    #: with d_mu unset: d_mu = round(d_mu_ratio * d) (authors' ResNet-50 example: 14/52)
    d_mu_ratio: float = 0.25
    #: floor on the solved d_mu: the SVD warm start needs >= 3 metric rows (a +- pair and the
    #: linear slot), which a small d (e.g. 10 for LeNet-5's FC layers) would otherwise not give
    d_mu_min: int = 3
    #: explicit shift set S (e.g. [0, 1, 2]); None uses the authors' s * d // n_shifts
    shifts: list[int] | None = None
    n_shifts: int = 6
    activation: Activation = Activation.sigmoid
    wrap: bool = True
    combine: RiemCombine = RiemCombine.sum
    #: data-free start (docs/init.md measures them): "spectral", principal coordinates of W's
    #: rows and columns as positions (starts/spectral.py; lowest final error on every
    #: target measured); "svd", the warm start that builds a truncated SVD at step 0
    #: (starts/svd_warm.py; best for short fits); "random", the authors' uniform init
    init: RiemInit = RiemInit.spectral


@dataclass
class LpNormConfig(EmbeddingMethodConfig):
    name: str = "lpnorm"
    p: float = 2.0
    heads: int = 4
    #: fixed position dimension; None solves the largest that fits the budget
    d: int | None = None
    offset: bool = True
    #: data-free start (docs/init.md): "mds", classical MDS unfolding of W (lowest final error
    #: on 5 of 7 measured targets, far fewer steps); "farfield", a truncated-SVD start (p = 2);
    #: "random", the authors' uniform init. Chains of shared neurons keep the random init (no
    #: chained MDS yet; the record says so)
    init: LpNormInit = LpNormInit.mds

    def paper_name(self) -> str:
        """The paper's row name ("lpnorm-p2"): table 1 reports each p separately."""
        return f"lpnorm-p{self.p:g}"


# ------------------------------------------------------------------------------------- baselines


@dataclass
class SvdConfig(MethodConfig):
    name: str = "svd"
    #: fixed rank; None solves the largest rank that fits the budget
    rank: int | None = None
    #: "exact" (torch.linalg.svd), "lowrank" (randomized torch.svd_lowrank), or "auto": lowrank
    #: only when the matrix is large and the rank small, where the exact SVD wastes most work
    solver: SvdSolver = SvdSolver.auto
    #: auto picks lowrank when min(m, n) >= lowrank_min_size and rank <= lowrank_max_ratio * min(m, n)
    lowrank_min_size: int = 4000
    lowrank_max_ratio: float = 0.1
    #: power iterations and oversampling of the randomized solver
    niter: int = 4
    oversample: int = 10
    #: float64 keeps an exactly low-rank matrix exact to ~1e-12; float32 is faster on a GPU
    dtype: FloatDtype = FloatDtype.float64
    #: networks: "uniform" (one rank for every layer, the largest that fits), "energy" (greedy
    #: ranks by singular-value energy per stored number) or "proportional" (each layer's budget
    #: share follows its dense size); all data-free
    allocation: SvdAllocation = SvdAllocation.uniform
    #: networks: bits the factors are stored at (per output channel, asymmetric min/max, the
    #: grid of riembench.compression.quantize), e.g. 8 for "SVD with int8 factors"; null keeps float32
    w_bits: int | None = None

    tasks: ClassVar[frozenset[TaskKind]] = BOTH

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_bits("svd w_bits", self.w_bits)
        if self.rank is not None and self.rank < 1:
            raise RiembenchError(f"svd rank must be >= 1 or null, got {self.rank}")

    @property
    def deterministic(self) -> bool:
        return True

    def storage_bits(self) -> int:
        return 32 if self.w_bits is None else int(self.w_bits)


@dataclass
class OriginalConfig(MethodConfig):
    """The pretrained network itself, measured by the same runner as every compressed row."""

    name: str = "original"

    tasks: ClassVar[frozenset[TaskKind]] = NETWORK
    needs_size: ClassVar[bool] = False

    @property
    def deterministic(self) -> bool:
        return True


@dataclass
class QuantConfig(MethodConfig):
    name: str = "quant"
    #: weight bits; null keeps float weights (an unsized method: size settings never apply)
    w_bits: int | None = 8
    #: activation bits; null keeps activations in float (a "W8A32" row)
    a_bits: int | None = None
    per_channel: bool = False
    #: weights only; activations are always asymmetric per-tensor (a ReLU output is
    #: non-negative, a symmetric grid would waste its sign bit)
    symmetric: bool = False
    fold_bn: bool = True
    act_k: float = 6.0
    #: where activations are quantized (with a_bits): "reference" (the image, layer inputs and
    #: both inputs of every residual add / concatenation, as jakc4103/DFQ) or "layers" (layer
    #: inputs only, this project's behaviour before)
    act_scope: ActScope = ActScope.reference
    #: bias bits (per-tensor min/max, with quantized weights); null keeps float biases
    b_bits: int | None = 16

    tasks: ClassVar[frozenset[TaskKind]] = NETWORK
    needs_size: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_bits("quant b_bits", self.b_bits)
        _check_bits("quant", self.w_bits, self.a_bits, low=1)
        if self.symmetric and self.w_bits == 1:
            raise RiembenchError("quant: symmetric weights need w_bits >= 2")

    @property
    def deterministic(self) -> bool:
        return True


@dataclass
class DfqConfig(MethodConfig):
    name: str = "dfq"
    #: weight bits; null keeps float weights (an unsized method: size settings never apply)
    w_bits: int | None = 8
    #: activation bits; null keeps activations in float
    a_bits: int | None = 8
    equalize: bool = True
    #: per-channel range used by equalization: "absmax" (max |w|, as AIMET and MQBench) or
    #: "minmax" (max - min, as jakc4103/DFQ's default)
    eq_range: EqRange = EqRange.absmax
    #: sweeps over all pairs at most, and the stopping rule: every scale within 1 +- eq_tol
    eq_max_iter: int = 100
    eq_tol: float = 1e-6
    absorb_bias: bool = True
    #: c = max(0, beta - absorb_sigmas * |gamma|)
    absorb_sigmas: float = 3.0
    #: absorb into a second layer that zero-pads its input (exact only away from the border);
    #: the reference implementations do, the default keeps the transform function-preserving
    absorb_padded: bool = False
    bias_correct: bool = True
    #: activation range mean +- act_k * std from BN statistics
    act_k: float = 6.0
    #: the paper's quantizer is per-tensor asymmetric; these allow ablations
    per_channel: bool = False
    symmetric: bool = False
    #: where activations are quantized: "reference" (the image, layer inputs, both inputs of
    #: every residual add / concatenation, as jakc4103/DFQ) or "layers" (layer inputs only: the
    #: image and the adds stay in float, this project's behaviour before)
    act_scope: ActScope = ActScope.reference
    #: bias bits, per-tensor min/max after bias correction (jakc4103/DFQ's "Int8**" rows use 16,
    #: "Int8*" 8); null keeps float biases
    b_bits: int | None = 16
    #: ReLU6 is not positively homogeneous, so equalization through it changes the function.
    #: "replace": ReLU6 -> ReLU before everything, as the DFQ paper and jakc4103/DFQ do for
    #: MobileNetV2 (the float model changes where an activation exceeds 6); "keep": ReLU6 stays
    #: and no pair is equalized through it (function-preserving, fewer pairs)
    relu6: Relu6Policy = Relu6Policy.replace

    tasks: ClassVar[frozenset[TaskKind]] = NETWORK
    needs_size: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_bits("dfq b_bits", self.b_bits)
        _check_bits("dfq", self.w_bits, self.a_bits)

    @property
    def deterministic(self) -> bool:
        return True


@dataclass
class PruneConfig(MethodConfig):
    name: str = "prune"
    mode: PruneMode = PruneMode.structured
    #: fraction removed: of each layer's output channels (structured) or of its weights
    ratio: float = 0.1
    #: unstructured only: rank weights within each layer, or over all selected layers
    scope: PruneScope = PruneScope.layer
    #: structured: filter norm that ranks output channels
    criterion: PruneCriterion = PruneCriterion.l1

    tasks: ClassVar[frozenset[TaskKind]] = NETWORK
    needs_size: ClassVar[bool] = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.ratio < 1:
            raise RiembenchError(f"prune ratio must be in [0, 1), got {self.ratio}")

    @property
    def deterministic(self) -> bool:
        return True


@dataclass
class NeuronMergeConfig(PruneConfig):
    name: str = "neuron_merge"
    #: merge a removed channel only into a kept one at least this cosine-similar (the
    #: similarity of filter + bias with the BatchNorm folded in); below it the channel is
    #: simply removed. 0 merges every removed channel that has a positively similar partner
    threshold: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode != "structured":
            raise RiembenchError("neuron_merge removes channels: mode must be 'structured'")
        if not -1 <= self.threshold <= 1:
            raise RiembenchError(f"neuron_merge threshold is a cosine in [-1, 1], got "
                                 f"{self.threshold}")


# ------------------------------------------------------------- matrix baselines (table 5 only)


@dataclass
class EmbeddingDecoderConfig(MethodConfig):
    """A scikit-learn embedding of the rows decoded by least squares; each estimator adds its
    own hyper-parameters."""

    tasks: ClassVar[frozenset[TaskKind]] = MATRIX


def _check_neighbors(name: str, n_neighbors: int) -> None:
    if n_neighbors < 1:
        raise RiembenchError(f"{name} n_neighbors must be >= 1, got {n_neighbors}")


@dataclass
class IsomapConfig(EmbeddingDecoderConfig):
    name: str = "isomap"
    n_neighbors: int = 5
    #: "dense" by default: Isomap takes no random_state, so ARPACK would start from numpy's
    #: global RNG and the run would not be reproducible
    eigen_solver: EigenSolver = EigenSolver.dense
    path_method: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_neighbors("isomap", self.n_neighbors)
        check_choice(self.eigen_solver, "isomap eigen_solver", ("auto", "arpack", "dense"))

    @property
    def deterministic(self) -> bool:
        return True


@dataclass
class LleConfig(EmbeddingDecoderConfig):
    name: str = "lle"
    n_neighbors: int = 5
    reg: float = 1e-3
    #: "standard", "modified", "hessian" or "ltsa" (the last three need many more neighbours)
    method: LleMethod = LleMethod.standard
    #: "dense" makes the seed irrelevant (it only seeds ARPACK's start vector)
    eigen_solver: EigenSolver = EigenSolver.dense

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_neighbors("lle", self.n_neighbors)
        check_choice(self.eigen_solver, "lle eigen_solver", ("auto", "arpack", "dense"))

    @property
    def deterministic(self) -> bool:
        return self.eigen_solver == "dense"


@dataclass
class NystroemConfig(EmbeddingDecoderConfig):
    name: str = "nystroem"
    #: a scikit-learn pairwise kernel name (rbf, poly, sigmoid, laplacian, ...)
    kernel: str = "rbf"
    #: None: scikit-learn's default for the kernel (rbf: 1 / n_features)
    gamma: float | None = None
    coef0: float | None = None
    degree: float | None = None


@dataclass
class KernelPcaConfig(EmbeddingDecoderConfig):
    name: str = "kernel_pca"
    #: scikit-learn's default "linear" makes this PCA of the rows; "rbf", "poly", ... available
    kernel: str = "linear"
    gamma: float | None = None
    degree: int = 3
    coef0: float = 1.0
    #: "dense" makes the seed irrelevant (it only drives arpack / randomized solvers)
    eigen_solver: EigenSolver = EigenSolver.dense

    @property
    def deterministic(self) -> bool:
        return self.eigen_solver == "dense"


@dataclass
class AutoencoderConfig(MethodConfig):
    name: str = "autoencoder"
    activation: Activation = Activation.relu
    steps: int = 300
    lr: float = 1e-3
    #: "cosine" decays lr to lr * min_lr_ratio over the steps; "constant" keeps it
    schedule: Schedule = Schedule.cosine
    min_lr_ratio: float = 0.01
    #: rows per Adam step; None trains full-batch (every row, every step)
    batch_size: int | None = None
    weight_decay: float = 0.0
    #: fixed code size; None solves the largest that fits the budget
    k: int | None = None

    tasks: ClassVar[frozenset[TaskKind]] = MATRIX

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1 or self.lr <= 0:
            raise RiembenchError(f"{self.name} needs steps >= 1 and lr > 0")
        if self.batch_size is not None and self.batch_size < 1:
            raise RiembenchError(f"{self.name} batch_size must be >= 1 or null")
        if self.k is not None and self.k < 1:
            raise RiembenchError(f"{self.name} k must be >= 1 or null")


@dataclass
class DeepAutoencoderConfig(AutoencoderConfig):
    name: str = "deep_autoencoder"
    #: hidden width h = max(1, round(hidden_mult * k)) in both encoder and decoder
    hidden_mult: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hidden_mult <= 0:
            raise RiembenchError(f"deep_autoencoder hidden_mult must be > 0, got {self.hidden_mult}")


# ---------------------------------------------------------------------------------- the registry

#: name -> schema and implementation (riembench.compression.methods), imported when a cell runs
METHODS: Registry[Any] = Registry("method")

_IMPL = "riembench.compression.methods"
for _name, _schema, _impl in (
    ("riem", RiemConfig, "riem:RiemMethod"),
    ("lpnorm", LpNormConfig, "lpnorm:LpNormMethod"),
    ("svd", SvdConfig, "svd:SvdMethod"),
    ("original", OriginalConfig, "original:OriginalMethod"),
    ("quant", QuantConfig, "quant:QuantMethod"),
    ("dfq", DfqConfig, "dfq:DfqMethod"),
    ("prune", PruneConfig, "prune:PruneMethod"),
    ("neuron_merge", NeuronMergeConfig, "neuron_merge:NeuronMergeMethod"),
    ("isomap", IsomapConfig, "manifold:IsomapMethod"),
    ("lle", LleConfig, "manifold:LleMethod"),
    ("nystroem", NystroemConfig, "manifold:NystroemMethod"),
    ("kernel_pca", KernelPcaConfig, "manifold:KernelPcaMethod"),
    ("autoencoder", AutoencoderConfig, "autoencoder:AutoencoderMethod"),
    ("deep_autoencoder", DeepAutoencoderConfig, "autoencoder:DeepAutoencoderMethod"),
):
    METHODS.declare(_name, _schema, f"{_IMPL}.{_impl}")
