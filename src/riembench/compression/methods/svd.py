"""Truncated SVD at equal stored size: the linear baseline every other table-5 row must beat.

Storage is ``left = U_r S_r`` (m x r) and ``right = V_r^T`` (r x n): folding the singular values
into one factor costs nothing extra, so a rank-r approximation stores exactly ``r (m + n)``
numbers and the rank is the largest with ``r (m + n) <= budget``. By Eckart-Young this is the
best rank-r approximation in Frobenius norm, which is why it is the reference the nonlinear
methods are compared with.

Networks: each selected layer is factorized the same way (see :meth:`SvdMethod.compress`), with
the layer's share of the budget proportional to its dense weight count.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from riembench.compression.fake_quant import quantize_tensor
from riembench.compression.graph import COMPRESSIBLE, Layer
from riembench.compression.methods.base import (
    CompressedNet,
    MatrixApprox,
    NetworkJob,
    NetworkMethod,
    PerSeedMatrixMethod,
)
from riembench.compression.network import (
    conv_geometry,
    get_layer,
    get_module,
    matrix_shape,
    module_weight,
    set_module,
    weight_matrix,
)
from riembench.compression.packing import (
    Packed,
    PackedLayer,
    UniformWeight,
    build_module,
    module_spec,
)
from riembench.config.methods import SvdConfig
from riembench.core.errors import ImpossibleBudget

SOLVERS = ("auto", "exact", "lowrank")
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: seed of the randomized solver: fixed (not the run's seed) so the method stays deterministic
_LOWRANK_SEED = 0




def svd_params(m: int, n: int, rank: int) -> int:
    """Stored numbers of a rank-``rank`` factorization: U S (m x r) and V^T (r x n)."""
    return rank * (m + n)


def solve_svd_rank(m: int, n: int, budget: int) -> int:
    """Largest rank whose factors fit ``budget`` (capped at full rank, where SVD is exact)."""
    rank = min(budget // (m + n), m, n)
    if rank < 1:
        raise ImpossibleBudget(f"svd: a {m}x{n} matrix needs at least {svd_params(m, n, 1)} "
                               f"parameters (rank 1); budget is {budget}")
    return rank


def truncated_svd(target: torch.Tensor, rank: int, solver: str = "exact", niter: int = 4,
                  oversample: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-``rank`` factors ``(left, right)`` of ``target`` with ``left @ right`` its best
    rank-``rank`` approximation; ``left = U S`` (m x r), ``right = V^T`` (r x n).

    The singular values go into ``left`` so the pair is exactly what is stored (no separate
    vector of r values). Works in ``target``'s dtype and device: cast before calling for float64.
    ``solver="lowrank"`` uses torch's randomized SVD under a fixed seed, so repeated calls agree.
    """
    m, n = target.shape
    rank = min(rank, m, n)
    if solver == "lowrank":
        q = min(rank + oversample, m, n)
        devices = [target.device] if target.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(_LOWRANK_SEED)
            u, s, v = torch.svd_lowrank(target, q=q, niter=niter)
        return u[:, :rank] * s[:rank], v[:, :rank].T.contiguous()
    if solver != "exact":
        raise ValueError(f"truncated_svd solver must be 'exact' or 'lowrank', got '{solver}'")
    u, s, vh = torch.linalg.svd(target, full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank].contiguous()


class SvdMethod(PerSeedMatrixMethod, NetworkMethod):
    """Truncated SVD; the seed has no effect (the randomized solver runs under a fixed seed)."""

    cfg: SvdConfig

    def resolve_solver(self, m: int, n: int, rank: int) -> str:
        if self.cfg.solver != "auto":
            return self.cfg.solver
        small = min(m, n)
        large_and_thin = small >= self.cfg.lowrank_min_size and rank <= self.cfg.lowrank_max_ratio * small
        return "lowrank" if large_and_thin else "exact"

    def approximate_one(self, target: torch.Tensor, budget: int, seed: int,
                        device: torch.device) -> MatrixApprox:
        m, n = target.shape
        rank = self.cfg.rank if self.cfg.rank is not None else solve_svd_rank(m, n, budget)
        rank = min(rank, m, n)
        if svd_params(m, n, rank) > budget:
            raise ImpossibleBudget(f"svd: rank {rank} needs {svd_params(m, n, rank)} parameters, "
                                   f"budget is {budget}")
        solver = self.resolve_solver(m, n, rank)
        work = target.to(device=device, dtype=DTYPES[self.cfg.dtype])
        left, right = truncated_svd(work, rank, solver, self.cfg.niter, self.cfg.oversample)
        a_hat = left @ right
        info: dict[str, Any] = {"rank": rank, "solver": solver, "dtype": self.cfg.dtype,
                                "rel_mse": _rel_mse(work, a_hat)}
        return MatrixApprox(a_hat.to(device="cpu", dtype=target.dtype), svd_params(m, n, rank), info)


    def compress(self, job: NetworkJob) -> list[CompressedNet]:
        """Replace each selected layer by two thinner layers holding its rank-r factors.

        A Linear(in, out) becomes ``Linear(in, r, bias=False) -> Linear(r, out)``; a Conv2d with
        a k x k kernel becomes ``Conv2d(in, r, k, stride, padding, dilation, bias=False) ->
        Conv2d(r, out, 1)``. This is the factorization of the (out, in * k * k) matrix view of
        ``riembench.compression.network.weight_matrix``: the rows of V^T are the r filters of the first conv
        and U S is the 1x1 conv that mixes them, so the pair computes exactly ``U S V^T`` on
        every input patch. The rank of each layer comes from its share of the budget,
        ``budget * (its weights) / (all selected weights)``, or is ``rank`` when set; a layer
        whose factors would not be smaller than its dense weight stays dense (full rank is
        exact), and so does a grouped conv (its matrix view is block diagonal).
        """
        model = copy.deepcopy(job.model).eval()
        if self.cfg.allocation == "uniform" and self.cfg.rank is None:
            plan, dense = plan_uniform_rank(model, list(job.layers), job.size.budget)
        elif self.cfg.allocation == "energy" and self.cfg.rank is None:
            plan, dense = plan_ranks_by_energy(model, list(job.layers), job.size.budget)
        else:
            plan, dense = plan_ranks(model, list(job.layers), job.size.budget, self.cfg.rank)
        ranks: dict[str, int] = {}
        for name, rank in plan.items():
            module = get_layer(model, name)
            m, n = matrix_shape(module)
            solver = self.resolve_solver(m, n, rank)
            work = weight_matrix(module).to(dtype=DTYPES[self.cfg.dtype], device=job.device)
            left, right = truncated_svd(work, rank, solver, self.cfg.niter, self.cfg.oversample)
            pair = factorized_layer(module, left, right)
            if self.cfg.w_bits is not None and self.cfg.w_bits < 32:
                pair.quantize_factors(self.cfg.w_bits)
            set_module(model, name, pair)
            ranks[name] = rank
        stored = sum(svd_params(*matrix_shape(get_module(job.model, n)), r)
                     for n, r in ranks.items())
        stored += sum(module_weight(get_module(job.model, n)).numel() for n in dense)
        info: dict[str, Any] = {"ranks": ranks, "kept_dense": dense, "stored_weights": stored,
                                "budget": job.size.budget, "dtype": self.cfg.dtype}
        if self.cfg.w_bits is not None and self.cfg.w_bits < 32:
            # layers kept dense are stored at the same bits (per output channel) as the factors
            for name in dense:
                weight = module_weight(get_module(model, name))
                with torch.no_grad():
                    weight.copy_(quantize_tensor(weight, self.cfg.w_bits, per_channel=True,
                                                 symmetric=False, axis=0))
            info.update({"w_bits": self.cfg.w_bits, "per_channel": True, "symmetric": False})
            info["bits_by_param"] = {f"{n}.{i}.weight": self.cfg.w_bits for n in ranks
                                     for i in (0, 1)}
            info["bits_by_param"].update({f"{n}.weight": self.cfg.w_bits for n in dense})
        return [CompressedNet(copy.deepcopy(model), copy.deepcopy(info)) for _ in job.seeds]


def plan_uniform_rank(model: nn.Module, layers: list[str], budget: int | None
                      ) -> tuple[dict[str, int], dict[str, str]]:
    """One rank r for every selected layer, the largest whose total fits ``budget``; a layer
    for which rank r is not smaller than its dense weight stays dense.

    Why the default: it is SVD's counterpart of the embeddings' one d for every layer, and on
    LeNet-5's FC layers at table 1's sizes it keeps far more accuracy than spending the budget
    by singular-value energy (measured on digits: 93% at rank 8 vs 57% by energy, which starves
    the large first layer whose flat spectrum earns little energy per number).
    """
    if budget is None:
        raise ImpossibleBudget("svd on a network needs a parameter budget (size=ratio|params|mb) "
                               "or method.rank")
    shapes = {n: matrix_shape(get_module(model, n)) for n in layers}
    grouped = {n for n in layers if getattr(get_module(model, n), "groups", 1) != 1}

    def cost(r: int) -> int:
        return sum(m * n if n_ in grouped else min(svd_params(m, n, r), m * n)
                   for n_, (m, n) in shapes.items())

    top = max(min(m, n) for m, n in shapes.values())
    best = next((r for r in range(top, 0, -1) if cost(r) <= budget), None)
    if best is None:
        raise ImpossibleBudget(f"svd: rank 1 for each of {len(layers)} layer(s) needs {cost(1)} "
                               f"weights; budget is {budget}")
    plan: dict[str, int] = {}
    dense: dict[str, str] = {n: "grouped conv" for n in grouped}
    for name, (m, n) in shapes.items():
        if name in grouped:
            continue
        if svd_params(m, n, best) >= m * n:
            dense[name] = f"rank {best} factors would not be smaller than the dense {m}x{n} weight"
        else:
            plan[name] = best
    return plan, dense


def plan_ranks_by_energy(model: nn.Module, layers: list[str], budget: int | None
                         ) -> tuple[dict[str, int], dict[str, str]]:
    """Ranks that spend one budget where it keeps the most of each layer's weight (data-free).

    Why: a budget split in proportion to layer size starves small layers (LeNet-5's 10 x 84
    output layer gets less than rank 1 at table 1's sizes) although they matter as much to the
    output. Here every layer starts at rank 1; then, greedily, the next rank goes to the layer
    whose next singular value adds the most relative energy (sigma_k^2 / ||W||^2) per stored
    number. A layer whose factors would reach its dense size becomes dense instead (exact),
    when the budget allows. Only the weights' singular values are read.
    """
    if budget is None:
        raise ImpossibleBudget("svd on a network needs a parameter budget (size=ratio|params|mb) "
                               "or method.rank")
    shapes = {n: matrix_shape(get_module(model, n)) for n in layers}
    dense: dict[str, str] = {n: "grouped conv" for n in layers
                             if getattr(get_module(model, n), "groups", 1) != 1}
    energy: dict[str, torch.Tensor] = {}
    for name in layers:
        if name in dense:
            continue
        sv = torch.linalg.svdvals(weight_matrix(get_module(model, name)).double())
        energy[name] = sv.square() / sv.square().sum().clamp_min(1e-300)
    plan = {n: 1 for n in energy}
    spent = sum(svd_params(*shapes[n], 1) for n in plan) + sum(shapes[n][0] * shapes[n][1]
                                                                for n in dense)
    if spent > budget:
        raise ImpossibleBudget(f"svd: rank 1 for each of {len(plan)} layer(s) and the dense ones "
                               f"need {spent} weights; budget is {budget}")
    while True:
        best, best_gain, best_cost = None, 0.0, 0
        for name, rank in plan.items():
            m, n = shapes[name]
            if svd_params(m, n, rank + 1) >= m * n:  # the next step is going dense
                cost = m * n - svd_params(m, n, rank)
                gain = float(energy[name][rank:].sum())
            else:
                cost, gain = m + n, float(energy[name][rank])
            if spent + cost <= budget and gain / cost > best_gain:
                best, best_gain, best_cost = name, gain / cost, cost
        if best is None:
            break
        spent += best_cost
        m, n = shapes[best]
        if svd_params(m, n, plan[best] + 1) >= m * n:
            dense[best] = "dense is cheaper than its next rank"
            del plan[best]
        else:
            plan[best] += 1
    return plan, dense


def plan_ranks(model: nn.Module, layers: list[str], budget: int | None,
               rank: int | None) -> tuple[dict[str, int], dict[str, str]]:
    """Rank per factorized layer, and the layers kept dense with the reason.

    Raises :class:`ImpossibleBudget` when a layer's share is below rank 1, or when a fixed
    ``rank`` makes the selected layers exceed ``budget``.
    """
    if budget is None and rank is None:
        raise ImpossibleBudget("svd on a network needs a parameter budget (size=ratio|params|mb) "
                               "or method.rank")
    shapes = {n: matrix_shape(get_module(model, n)) for n in layers}
    total = sum(m * n for m, n in shapes.values())
    plan: dict[str, int] = {}
    dense: dict[str, str] = {}
    stored = 0
    for name, (m, n) in shapes.items():
        module = get_module(model, name)
        if getattr(module, "groups", 1) != 1:
            dense[name] = "grouped conv"
            stored += m * n
            continue
        if rank is not None:
            r = rank
        else:
            assert budget is not None
            share = budget * (m * n) / total
            r = int(share // (m + n))
            if r < 1:
                raise ImpossibleBudget(f"svd: layer '{name}' ({m}x{n}) gets {share:.0f} of the "
                                       f"budget, below the {m + n} of rank 1")
        if svd_params(m, n, r) >= m * n:
            dense[name] = f"rank {r} factors ({svd_params(m, n, r)}) would not be smaller than " \
                          f"the dense {m}x{n} weight"
            stored += m * n
            continue
        plan[name] = r
        stored += svd_params(m, n, r)
    if budget is not None and stored > budget:
        raise ImpossibleBudget(f"svd: rank {rank} needs {stored} weights for the selected layers, "
                               f"budget is {budget}")
    return plan, dense


class FactorizedLayer(nn.Sequential, PackedLayer):
    """A rank-r factor pair (``first`` then ``second``, see :meth:`SvdMethod.compress`); keeps
    nn.Sequential's state-dict keys (``name.0.weight``, ``name.1.weight``)."""

    pack_kind = "factorized"

    def __init__(self, first: nn.Module, second: nn.Module, factor_bits: int = 32) -> None:
        super().__init__(first, second)
        #: bits the two factor weights are stored at (32: float)
        self.factor_bits = int(factor_bits)

    @torch.no_grad()
    def quantize_factors(self, bits: int) -> None:
        """Round both factors to ``bits`` bits per output channel (asymmetric, exact zero)."""
        for factor in self:
            weight = module_weight(factor)
            weight.copy_(quantize_tensor(weight, bits, per_channel=True, symmetric=False, axis=0))
        self.factor_bits = int(bits)

    def pack(self) -> Packed:
        packed = Packed(meta={"kind": self.pack_kind, "factor_bits": self.factor_bits,
                              "factors": [module_spec(f) for f in self]})
        for i, factor in enumerate(self):
            if self.factor_bits < 32:
                packed.add(str(i), UniformWeight(self.factor_bits, per_channel=True).pack(factor))
            else:
                assert isinstance(factor, COMPRESSIBLE)  # see factorized_layer
                packed.add(str(i), _float_layer(factor))
        return packed

    @classmethod
    def unpack(cls, packed: Packed, original: nn.Module | None = None) -> FactorizedLayer:
        first, second = (build_module(spec) for spec in packed.meta["factors"])
        layer = cls(first, second, int(packed.meta["factor_bits"]))
        fmt = UniformWeight(layer.factor_bits, per_channel=True)
        for i, factor in enumerate(layer):
            fmt.unpack(packed.sub(str(i)), factor)
        return layer.eval()


def _float_layer(module: Layer) -> Packed:
    from riembench.compression.packing import encode_float

    packed = Packed(meta={"kind": "float"})
    packed.add("weight", encode_float(module.weight))
    if module.bias is not None:
        packed.add("bias", encode_float(module.bias))
    return packed


def factorized_layer(module: Layer, left: torch.Tensor, right: torch.Tensor) -> FactorizedLayer:
    """Two layers computing ``left @ right`` in place of ``module``'s weight (see compress)."""
    weight = module.weight
    dtype, device = weight.dtype, weight.device
    rank = left.shape[1]
    bias = module.bias
    has_bias = bias is not None
    first: Layer
    second: Layer
    if isinstance(module, nn.Linear):
        first = nn.Linear(module.in_features, rank, bias=False, dtype=dtype, device=device)
        second = nn.Linear(rank, module.out_features, bias=has_bias, dtype=dtype, device=device)
        first_w, second_w = right, left
    elif isinstance(module, nn.Conv2d):
        first = nn.Conv2d(module.in_channels, rank, bias=False, dtype=dtype, device=device,
                          **conv_geometry(module))
        second = nn.Conv2d(rank, module.out_channels, 1, bias=has_bias, dtype=dtype,
                           device=device)
        first_w = right.reshape(rank, *weight.shape[1:])
        second_w = left.reshape(module.out_channels, rank, 1, 1)
    else:
        raise TypeError(f"svd cannot factorize {type(module).__name__}")
    with torch.no_grad():
        first.weight.copy_(first_w.to(dtype=dtype, device=device))
        second.weight.copy_(second_w.to(dtype=dtype, device=device))
        if bias is not None:
            assert second.bias is not None  # built with a bias
            second.bias.copy_(bias.detach())
    return FactorizedLayer(first, second).train(module.training)


def _rel_mse(target: torch.Tensor, approx: torch.Tensor) -> float:
    """Training-side fit quality (mse / variance of the entries), recorded for diagnosis."""
    return float((approx - target).square().mean() / target.var().clamp_min(1e-30))
