"""The data-free fitting engine shared by ``riem`` and ``lpnorm``.

Both methods express a weight matrix W (m x n) through neuron positions and a metric, and are
fitted to W alone (no data). The engine fits B such problems of one shape at once: the batch axis
holds (matrix, seed) pairs, so ten seeds of one layer, or ten equal-shape layers, are one set of
tensor ops. Design points, each there for a reason:

* **Per-element independence.** Every parameter tensor has the batch axis first and Adam is
  elementwise, so batch elements never interact: seed 3 fitted alone or inside a batch of ten
  follows the same trajectory (up to float reassociation), and a seed that diverges (NaN/inf) is
  frozen and reported without disturbing the others.
* **Bounded memory.** The loss is accumulated over row chunks and each chunk is back-propagated
  as soon as it is computed, so the (B, rows, n, K) RieM intermediate never exists for all rows
  at once; ``chunk_elems`` bounds it (10000 x 10000 matrices fit on a GPU).
* **Scale-free optimisation.** Targets are standardised per element before fitting and the
  affine map is folded back into the model afterwards (both models end in an affine output), so
  one learning rate serves matrices of any scale.
* **Keep the best.** The state with the lowest loss seen at an evaluation step is kept per
  element, so a late spike in the loss costs nothing.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from riembench.config.fit import FitConfig
from riembench.engine.embeddings import BatchedEmbedding
from riembench.engine.linalg import standardise

SOLVERS = ("varpro", "adam")




@dataclass
class FitResult:
    #: final (kept) mean squared error per element, in the target's original units
    mse: torch.Tensor
    #: relative MSE (mse / var(target)) per element
    rel_mse: torch.Tensor
    #: None for fitted elements, a reason for failed ones
    failed: list[str | None]
    #: step of the kept state per element (by weight error, or by the external selection)
    best_step: list[int]
    steps_run: int
    wall_time_s: float
    history: list[tuple[int, list[float]]] = field(default_factory=list)
    #: seconds since the fit began at each ``history`` entry (the fit curve's time axis)
    history_s: list[float] = field(default_factory=list)
    #: steps each element ran before its convergence test stopped it
    stopped_at: list[int] = field(default_factory=list)


def _lr_factor(cfg: FitConfig, step: int) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    if cfg.schedule == "constant":
        return 1.0
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))


def fit(model: BatchedEmbedding, targets: torch.Tensor, cfg: FitConfig,
        progress: bool = False, desc: str = "fit") -> FitResult:
    """Fit every element of ``model`` to its target (B, m, n) (see :class:`FitRun`)."""
    result = fit_parts([model], [targets], cfg, progress, desc)
    result.mse, result.rel_mse = result.mse[0], result.rel_mse[0]
    return result


def fit_parts(parts: Sequence[BatchedEmbedding], targets: Sequence[torch.Tensor], cfg: FitConfig,
              progress: bool = False, desc: str = "fit") -> FitResult:
    """Fit several embeddings jointly to convergence, keeping each element's lowest-loss state."""
    run = FitRun(parts, targets, cfg, progress, desc)
    run.run()
    return run.finish()


class FitRun:
    """One fit of several embeddings, one target (B, m_k, n_k) each, all with the same batch B,
    that a caller can advance step by step.

    Why joint: the parts may share parameters (a chain of layers whose neurons are shared, where
    part k+1's column positions *are* part k's row positions), so they must be optimised as one
    problem. The loss of batch element b is the sum over parts of each part's mean squared error
    on its standardised target: every layer counts equally whatever its size, since a small last
    layer matters as much to the network's output as a large first one. Parameters shared by
    several parts are optimised once (``nn.ModuleList`` de-duplicates them).

    Why a class: the ``strict`` protocol keeps each element's lowest-loss state (the weights are
    all the fit sees), while ``dev_guided`` advances every fit unit of a network to a checkpoint
    (:meth:`run`), rebuilds the network from :meth:`current_parts`, scores it on the dev split
    and tells each fit which elements to keep (:meth:`keep`); :meth:`finish` then restores what
    was kept. Both share this one loop.
    """

    def __init__(self, parts: Sequence[BatchedEmbedding], targets: Sequence[torch.Tensor],
                 cfg: FitConfig, progress: bool = False, desc: str = "fit") -> None:
        self.start_time = time.perf_counter()
        self.parts, self.cfg = list(parts), cfg
        self.container = nn.ModuleList(parts)
        self.batch = batch = parts[0].batch
        self.device = device = next(self.container.parameters()).device
        self.stds, self.means, self.tgts = [], [], []
        for part, target in zip(parts, targets, strict=True):
            t = target.to(device=device, dtype=torch.float32)
            if t.shape != (part.batch, part.m, part.n) or part.batch != batch:
                raise ValueError(f"target {tuple(t.shape)} does not match part {(part.batch, part.m, part.n)}")
            t_std, mean, std = standardise(t)
            self.tgts.append(t_std)
            self.means.append(mean)
            self.stds.append(std)
        self.single_entry = [t[0].numel() <= 1 for t in targets]
        # gradient weight per part: equal weight per layer, scaled so that one part gets weight 1
        # (the plain sum of squared errors; Adam's epsilon then sees the same gradients as before)
        largest = max(p.m * p.n for p in parts)
        self.weights = [largest / (p.m * p.n) for p in parts]
        # variable projection: the read-out is solved, not descended
        self.readout = ({id(getattr(p, name)) for p in parts for name in p.READOUT}
                        if cfg.solver == "varpro" else set())
        self.params = [p for p in self.container.parameters()
                       if p.requires_grad and id(p) not in self.readout]
        self.opt = torch.optim.Adam(self.params, lr=cfg.lr)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: _lr_factor(cfg, s))
        self.best = {k: v.detach().clone() for k, v in self.container.named_parameters()}
        self.best_loss = torch.full((batch,), math.inf, device=device)
        self.best_parts = torch.full((len(parts), batch), math.inf, device=device)
        self.best_step = [0] * batch
        self.failed: list[str | None] = [None] * batch
        self.alive = torch.ones(batch, dtype=torch.bool, device=device)
        self.active = torch.ones(batch, dtype=torch.bool, device=device)  # not yet converged
        self.stale = torch.zeros(batch, dtype=torch.long, device=device)
        self.stopped_at = [cfg.steps] * batch
        self.history: list[tuple[int, list[float]]] = []
        self.history_s: list[float] = []
        self.init_loss: torch.Tensor | None = None
        self.row_gen = torch.Generator(device=device).manual_seed(0)
        self.bar = _progress(cfg.steps, desc, progress)
        self.step_count = 0
        #: external selection (dev_guided): each element's kept state and its step
        self.kept: dict[str, torch.Tensor] | None = None
        self.kept_step = [0] * batch
        self.kept_parts = torch.full((len(parts), batch), math.inf, device=device)

    @property
    def done(self) -> bool:
        return self.step_count >= self.cfg.steps or not bool((self.alive & self.active).any())

    def run(self, until: int | None = None) -> None:
        """Advance to step ``until`` (default: the end or convergence of every element)."""
        stop = self.cfg.steps if until is None else min(until, self.cfg.steps)
        while self.step_count < stop and not self.done:
            self._step()
        if self.done and self.bar is not None:
            self.bar.close()
            self.bar = None

    @torch.no_grad()
    def _solve_readout(self, blocks: Sequence[Sequence[torch.Tensor | slice] | None] | None = None
                       ) -> torch.Tensor:
        """Variable projection: the exact least-squares read-out of every part for the current
        positions and metric (on the given row chunks of each part, default all rows); returns
        each part's mean squared error at it (parts, B)."""
        blocks = blocks or [None] * len(self.parts)
        return torch.stack([part.refit_readout(t, self.cfg.chunk_elems, b).to(t.dtype)
                            for part, t, b in zip(self.parts, self.tgts, blocks, strict=True)])

    def _step(self) -> None:
        cfg, step = self.cfg, self.step_count
        last = step == cfg.steps - 1
        is_eval = step % cfg.eval_every == 0 or last
        live = self.alive & self.active
        # one set of row chunks per part and step, shared by the read-out solve and the gradient
        blocks = [_row_blocks(part, cfg, is_eval, self.row_gen) for part in self.parts]
        if self.readout:
            self._solve_readout(blocks)
        self.opt.zero_grad(set_to_none=False)
        for p in self.container.parameters():  # the solved read-out takes no gradient steps
            if id(p) in self.readout:
                p.grad = None
        part_loss = torch.zeros(len(self.parts), self.batch, device=self.device)
        for k, (part, t) in enumerate(zip(self.parts, self.tgts)):
            part_loss[k] = _accumulate_part(part, t, blocks[k], live, self.weights[k])
        loss = part_loss.sum(0)
        if self.init_loss is None:
            self.init_loss = loss.clone()
        bad = self.alive & (~torch.isfinite(loss)
                            | (loss > cfg.diverge_factor * self.init_loss.clamp_min(1e-12)))
        if bad.any():
            for b in bad.nonzero().flatten().tolist():
                self.failed[b] = f"non-finite or diverging loss ({loss[b].item():.3g}) at step {step}"
            self.alive &= ~bad
            live = self.alive & self.active
        for p in self.container.parameters():  # stopped and failed elements get no update
            if p.grad is not None:
                p.grad[~live] = 0
        if is_eval:
            improved = live & (loss < self.best_loss * (1 - cfg.min_delta))
            if improved.any():
                with torch.no_grad():
                    for name, v in self.container.named_parameters():
                        self.best[name][improved] = v.detach()[improved]
                self.best_loss = torch.where(improved, loss, self.best_loss)
                self.best_parts[:, improved] = part_loss[:, improved]
                for b in improved.nonzero().flatten().tolist():
                    self.best_step[b] = step
            self.stale = torch.where(improved, 0, self.stale + live.long())
            if cfg.patience:
                converged = live & (self.stale >= cfg.patience)
                for b in converged.nonzero().flatten().tolist():
                    self.stopped_at[b] = step + 1
                self.active &= ~converged
            self.history.append((step, loss.tolist()))
            self.history_s.append(time.perf_counter() - self.start_time)
            if self.bar is not None and self.alive.any():
                self.bar.set_postfix(best_mse=f"{self.best_loss[self.alive].min().item():.3e}")
        if not bool((self.alive & self.active).any()):
            self.step_count = step + 1
            return
        self.opt.step()
        self.sched.step()
        self.step_count = step + 1
        if self.bar is not None:
            self.bar.update(1)

    @torch.no_grad()
    def current_parts(self) -> list[BatchedEmbedding]:
        """Copies of the parts in their current state, read-out solved and mapped back to the
        targets' units (what a network rebuilt now would hold). Shared tensors stay shared."""
        if self.readout:
            self._solve_readout()
        parts: list[BatchedEmbedding] = []
        for part, std, mean in zip(copy.deepcopy(self.container), self.stds, self.means,
                                   strict=True):
            assert isinstance(part, BatchedEmbedding)
            part.fold_affine(std, mean)
            parts.append(part)
        return parts

    @torch.no_grad()
    def current_loss(self) -> torch.Tensor:
        """Each part's mean squared error (standardised) of the current state (parts, B)."""
        if self.readout:
            return self._solve_readout()
        return torch.stack([((part.reconstruct(self.cfg.chunk_elems) - t).square().mean((1, 2)))
                            for part, t in zip(self.parts, self.tgts, strict=True)])

    @torch.no_grad()
    def keep(self, mask: torch.Tensor) -> None:
        """Keep the current state of the elements in ``mask`` (external selection); once
        :meth:`keep` has been called, :meth:`finish` restores these states, not the lowest-loss
        ones."""
        if self.kept is None:
            self.kept = {k: v.detach().clone() for k, v in self.container.named_parameters()}
        mask = mask.to(self.device)
        losses = self.current_loss()
        for k, v in self.container.named_parameters():
            self.kept[k][mask] = v.detach()[mask]
        self.kept_parts[:, mask] = losses[:, mask]
        for b in mask.nonzero().flatten().tolist():
            self.kept_step[b] = self.step_count

    def stop(self, mask: torch.Tensor) -> None:
        """Stop the elements in ``mask`` (e.g. dev_guided's stop once a seed beats the original)."""
        mask = mask.to(self.device)
        for b in (mask & self.active).nonzero().flatten().tolist():
            self.stopped_at[b] = self.step_count
        self.active &= ~mask

    @torch.no_grad()
    def finish(self) -> FitResult:
        """Restore the kept states, map them back to the targets' units and report."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.kept is None:  # strict: the lowest weight error seen at an evaluation step
            state, parts_loss, steps = self.best, self.best_parts, self.best_step
        else:
            state, parts_loss, steps = self.kept, self.kept_parts, self.kept_step
        for k, v in self.container.named_parameters():
            v.copy_(state[k])
        for part, std, mean in zip(self.parts, self.stds, self.means):
            part.fold_affine(std, mean)
        mse = torch.stack([parts_loss[k] * self.stds[k].square() for k in range(len(self.parts))])
        # the variance as the standardisation measured it (no float64 copy of the targets)
        var = torch.stack([torch.ones(self.batch).to(mse) if single else std.square()
                           for single, std in zip(self.single_entry, self.stds, strict=True)]).to(mse)
        return FitResult(mse=mse.cpu(), rel_mse=(mse / var.clamp_min(1e-30)).cpu(),
                         failed=self.failed, best_step=list(steps), steps_run=self.step_count,
                         wall_time_s=time.perf_counter() - self.start_time, history=self.history,
                         history_s=self.history_s, stopped_at=list(self.stopped_at))


def _row_blocks(part: BatchedEmbedding, cfg: FitConfig, full: bool,
                row_gen: torch.Generator) -> list[torch.Tensor | slice]:
    """The row chunks one step works on: every row (evaluation steps, ``row_fraction`` 1) or a
    random ``row_fraction`` of them (cheaper stochastic steps), in chunks of ``chunk_elems``."""
    step_rows = part.rows_per_chunk(cfg.chunk_elems)
    n_sub = max(1, round(cfg.row_fraction * part.m))
    if full or n_sub == part.m:
        return [slice(i, min(i + step_rows, part.m)) for i in range(0, part.m, step_rows)]
    picked = torch.randperm(part.m, generator=row_gen, device=row_gen.device)[:n_sub]
    return list(picked.split(step_rows))


def _accumulate_part(part: BatchedEmbedding, t: torch.Tensor, blocks: Sequence[torch.Tensor | slice],
                     alive: torch.Tensor, weight: float) -> torch.Tensor:
    """Back-propagate one part's loss chunk by chunk; return its per-element mean squared error."""
    rows_used = sum(b.stop - b.start if isinstance(b, slice) else b.numel() for b in blocks)
    loss = torch.zeros(part.batch, device=t.device)
    # the halves are built once with autograd; each chunk back-propagates into detached copies,
    # whose gradients then go through the halves once (same gradients, fewer rebuilds)
    halves = part.halves()
    leaves = None if halves is None else tuple(h.detach().requires_grad_(h.requires_grad)
                                               for h in halves)
    scale = torch.where(alive, 2.0 * weight, 0.0).to(t.dtype)  # d loss / d SSE per element
    scratch: dict[str, torch.Tensor] = {}
    for rows in blocks:
        err = part.fused_chunk_grad(leaves, rows, t[:, rows], scale, scratch)
        if err is None:
            err = (part.rows_from(leaves, rows) - t[:, rows]).square().sum((1, 2))
            # only live elements drive gradients; a NaN element cannot leak into the others
            live = torch.where(alive, err, torch.zeros_like(err)).sum()
            (live * weight if weight != 1.0 else live).backward()
        loss += err.detach()
    if halves is not None and leaves is not None:
        pairs = [(h, leaf.grad) for h, leaf in zip(halves, leaves, strict=True)
                 if h.requires_grad and leaf.grad is not None]
        if pairs:
            torch.autograd.backward([h for h, _ in pairs], [g for _, g in pairs])
    return loss / (rows_used * part.n)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, mininterval=1.0)


