"""The fitting engine: recovery, parameter accounting, batching, failure isolation, sizing."""


import pytest
import torch

from riembench.config.fit import FitConfig
from riembench.config.methods import METHODS
from riembench.core.errors import ImpossibleBudget, RiembenchError
from riembench.engine.embeddings import LpNormEmbedding, RiemEmbedding, default_shifts
from riembench.engine.fit import fit
from riembench.engine.starts.svd_warm import init_riem_from_svd


def _riem_target(m=40, n=30, d=8, d_mu=3, seed=123):
    gen = RiemEmbedding([seed], m, n, d, d_mu, default_shifts(d, 6))
    with torch.no_grad():
        gen.U.mul_(3)
        gen.w.mul_(3)
    return gen.reconstruct()[0]


def test_riem_recovers_matrix_of_its_own_form():
    target = _riem_target()
    model = RiemEmbedding([0, 1], 40, 30, 8, 3, default_shifts(8, 6))
    res = fit(model, target.expand(2, 40, 30), FitConfig(steps=800, lr=2e-2))
    assert res.failed == [None, None]
    assert res.rel_mse.min() < 0.02, res.rel_mse
    # the reported MSE is the MSE of what the model now reconstructs (affine folded back)
    recon = model.reconstruct()
    mse = (recon - target).square().mean((1, 2))
    assert torch.allclose(mse, res.mse, rtol=1e-3, atol=1e-7)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_lpnorm_recovers_matrix_of_its_own_form(p, tol=1e-3):
    """A 2-D distance field, fitted with d = 8: with exactly d = 2 gradient descent gets stuck in
    folded local minima (rel. MSE ~0.2); a few spare dimensions let it unfold."""
    g = torch.Generator().manual_seed(5)
    u, v = torch.rand(30, 2, generator=g), torch.rand(25, 2, generator=g)
    target = 1.3 * torch.cdist(u, v, p=p) + 0.3
    model = LpNormEmbedding([0, 1, 2], 30, 25, d=8, heads=1, p=p)
    res = fit(model, target.expand(3, 30, 25), FitConfig(steps=1500, lr=2e-2))
    assert res.rel_mse.min() < tol, res.rel_mse


@pytest.mark.parametrize("m,n,d,d_mu,s", [(40, 30, 8, 3, 6), (7, 11, 5, 2, 3), (128, 256, 52, 14, 6)])
def test_riem_param_count_closed_form(m, n, d, d_mu, s):
    model = RiemEmbedding([0], m, n, d, d_mu, default_shifts(d, s))
    expected = (m + n) * d + s * (d * d_mu + d_mu) + d_mu + 1
    assert model.params_per_matrix == expected == model.tensor_params_per_matrix()


@pytest.mark.parametrize("offset", [True, False])
def test_lpnorm_param_count_closed_form(offset):
    model = LpNormEmbedding([0, 1], 50, 20, d=12, heads=3, p=2, offset=offset)
    assert model.params_per_matrix == 70 * 12 + 3 + int(offset) == model.tensor_params_per_matrix()


def test_poster_lenet_lpnorm_count():
    # DESIGN.md: FC neurons 400+120+84+10 with d = 10 give 6,140 position parameters
    assert sum(LpNormEmbedding.count(a, 0, 10, 1, False) - 1 for a in (400, 120, 84, 10)) == 6140


def test_one_sizing_rule_picks_largest_fitting_size():
    """The methods' solve_dims is the only sizing rule (what a 20x20 at ratio 0.2 gets is
    what the method builds)."""
    m, n, budget = 100, 80, 5000
    riem = METHODS.get("riem")(METHODS.schema("riem")())
    dims = riem.solve_dims([(m, n)], budget)
    assert riem.count(m, n, dims) <= budget < riem.count(m, n, riem.dims_for_d(dims["d"] + 1, {}))
    assert riem.build((m, n), budget, [0]).params_per_matrix == riem.count(m, n, dims)
    lp = METHODS.get("lpnorm")(METHODS.schema("lpnorm")())
    d = lp.solve_dims([(m, n)], budget)["d"]
    assert LpNormEmbedding.count(m, n, d, 4) <= budget < LpNormEmbedding.count(m, n, d + 4, 4)
    small = riem.solve_dims([(20, 20)], int(0.2 * 400))
    assert riem.build((20, 20), int(0.2 * 400), [0]).d == small["d"]
    with pytest.raises(ImpossibleBudget, match="needs at least"):
        riem.solve_dims([(m, n)], 50)
    with pytest.raises(ImpossibleBudget):
        lp.solve_dims([(m, n)], 100)


def test_seed_fits_the_same_alone_or_in_a_batch():
    target = _riem_target()
    cfg = FitConfig(steps=60, lr=1e-2)
    alone = RiemEmbedding([3], 40, 30, 8, 3, default_shifts(8, 6))
    batch = RiemEmbedding([1, 3, 5], 40, 30, 8, 3, default_shifts(8, 6))
    r1 = fit(alone, target[None], cfg)
    r3 = fit(batch, target.expand(3, 40, 30), cfg)
    assert torch.allclose(r1.mse[0], r3.mse[1], rtol=1e-3)
    assert not torch.allclose(r3.mse[0], r3.mse[1], rtol=1e-3)  # seeds do differ


def test_nan_seed_is_recorded_and_isolated():
    target = _riem_target()
    model = RiemEmbedding([0, 1, 2], 40, 30, 8, 3, default_shifts(8, 6))
    with torch.no_grad():
        model.P[1, 0, 0] = float("nan")
    res = fit(model, target.expand(3, 40, 30), FitConfig(steps=100, lr=1e-2))
    assert res.failed[1] is not None and "step 0" in res.failed[1]
    assert res.failed[0] is None and res.failed[2] is None
    assert torch.isfinite(res.mse[[0, 2]]).all() and res.rel_mse[[0, 2]].max() < 1.0


def test_svd_init_starts_near_truncated_svd_and_beats_random():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(60, 6, generator=g) @ torch.randn(6, 50, generator=g)
    cfg = FitConfig(steps=150, lr=1e-2)
    smart = RiemEmbedding([0], 60, 50, 12, 5, default_shifts(12, 6))
    rank = init_riem_from_svd(smart, target[None], seeds=[0])
    # at most |S| * (d_mu - 1) // 2 factors, capped by d - 1 (one slot cancels the leftovers);
    # shift collisions can cost a few, but the target's rank 6 must fit
    assert 6 <= rank <= 11
    t = (target - target.mean()) / target.std()
    assert (smart.reconstruct()[0] - t).square().mean() < 0.02  # near-exact before any step
    r_smart = fit(smart, target[None], cfg)
    r_rand = fit(RiemEmbedding([0], 60, 50, 12, 5, default_shifts(12, 6)), target[None], cfg)
    assert r_smart.rel_mse[0] < 0.05
    assert r_smart.rel_mse[0] < 0.2 * r_rand.rel_mse[0]


def test_row_subsampling_still_fits():
    target = _riem_target()
    model = RiemEmbedding([0], 40, 30, 8, 3, default_shifts(8, 6))
    res = fit(model, target[None], FitConfig(steps=800, lr=2e-2, row_fraction=0.25))
    assert res.rel_mse[0] < 0.05


def test_fit_config_rejects_bad_values():
    with pytest.raises(RiembenchError):
        FitConfig(row_fraction=0)
    with pytest.raises(RiembenchError):
        FitConfig(schedule="linear")


@pytest.mark.parametrize("wrap,combine", [(True, "sum"), (False, "difference")])
def test_riem_variants_match_formula(wrap, combine):
    """rows() against a direct evaluation of the formula in docs/riem.md."""
    m, n, d, d_mu, shifts = 5, 4, 6, 2, [0, 1, 3]
    model = RiemEmbedding([7], m, n, d, d_mu, shifts, "tanh", wrap, combine)
    P, R, U, b, w, c = (t[0].detach() for t in (model.P, model.R, model.U, model.bias, model.w, model.c))
    out = torch.zeros(m, n)
    for i in range(m):
        for j in range(n):
            total = torch.zeros(d_mu)
            for s_idx, s in enumerate(shifts):
                shifted = torch.tensor([R[j, k + s] if k + s < d else (R[j, (k + s) % d] if wrap else 0.0)
                                        for k in range(d)])
                x = P[i] + shifted if combine == "sum" else P[i] - shifted
                total += torch.tanh(U[s_idx] @ x + b[s_idx])
            out[i, j] = w @ total + c
    assert torch.allclose(model.reconstruct()[0], out, atol=1e-5)


def test_lpnorm_general_p_matches_cdist_and_has_finite_gradients():
    """p outside {1, 2} takes an explicit (faster) path: it must equal torch.cdist's distances."""
    m = LpNormEmbedding([0, 1], 30, 20, 8, 4, 3.0)
    with torch.no_grad():
        m.R[:, :, :3] = m.P[:, :, :3]  # coinciding neurons: distance 0, where s^(1/p) is steep
    out = m.rows(slice(0, 30))
    dist = torch.stack([torch.cdist(m.P[b], m.R[b], p=3.0) for b in range(2)])  # (B, H, m, n)
    ref = (dist * m.lam[:, :, None, None]).sum(1) + m.c[:, None, None]
    assert torch.allclose(out, ref, atol=1e-5)
    out.sum().backward()
    assert torch.isfinite(m.P.grad).all() and torch.isfinite(m.R.grad).all()


def test_gradients_through_shared_halves_equal_plain_autograd():
    """The engine builds RieM's row and column halves once per step and back-propagates each
    row chunk into them; the gradients must be those of the plain full-matrix loss."""
    from riembench.config.fit import FitConfig
    from riembench.engine.fit import _accumulate_part, _row_blocks

    torch.manual_seed(0)
    model = RiemEmbedding([0, 1], 13, 17, d=6, d_mu=3, shifts=[0, 2, 4])
    target = torch.randn(2, 13, 17)
    alive = torch.ones(2, dtype=torch.bool)
    cfg = FitConfig(chunk_elems=2 * 17 * 9 * 3 * 2)  # two rows per chunk: seven chunks
    loss = _accumulate_part(model, target, _row_blocks(model, cfg, True, torch.Generator()),
                            alive, 1.0)
    engine = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    ref = (model.rows(slice(None)) - target).square().sum((1, 2))
    ref.sum().backward()
    for k, p in model.named_parameters():
        assert torch.allclose(engine[k], p.grad, rtol=1e-4, atol=1e-6), k
    assert torch.allclose(loss, ref.detach() / (13 * 17), rtol=1e-5)
    with torch.no_grad():  # the reconstruction through the halves is the rows themselves
        assert torch.allclose(model.reconstruct(chunk_elems=100), model.rows(slice(None)),
                              atol=1e-6)


@pytest.mark.parametrize("activation,combine,wrap", [("sigmoid", "sum", True),
                                                      ("tanh", "difference", False)])
def test_hand_written_chunk_gradient_equals_autograd(activation, combine, wrap):
    """The fit's fused inner loop (``RiemEmbedding.fused_chunk_grad``) must give autograd's
    loss and gradients, also for a row subset (stochastic steps) and with a frozen element
    whose loss is NaN (it gets no gradient and its NaN reaches no other element)."""
    from riembench.config.fit import FitConfig
    from riembench.engine.fit import _accumulate_part, _row_blocks

    def grads(fused: bool, full: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = RiemEmbedding([0, 1, 2], 13, 17, d=6, d_mu=3, shifts=[0, 2, 4],
                              activation=activation, combine=combine, wrap=wrap)
        model.fused = fused
        with torch.no_grad():
            model.w[2] = float("nan")  # element 2 has diverged
        target = torch.randn(3, 13, 17)
        alive = torch.tensor([True, True, False])
        cfg = FitConfig(chunk_elems=3 * 17 * 9 * 3 * 2, row_fraction=0.6)
        blocks = _row_blocks(model, cfg, full, torch.Generator().manual_seed(3))
        loss = _accumulate_part(model, target, blocks, alive, 0.7)
        return loss, {k: p.grad.clone() for k, p in model.named_parameters()}

    for full in (True, False):
        loss_a, ref = grads(False, full)
        loss_f, got = grads(True, full)
        assert torch.allclose(loss_f[:2], loss_a[:2], rtol=1e-5)
        assert torch.isnan(loss_f[2])
        for k in ref:
            assert torch.isfinite(got[k][:2]).all(), k
            assert torch.allclose(got[k][:2], ref[k][:2], rtol=1e-4, atol=1e-6), k
    # and the fused step is the plain full-matrix loss's gradient
    torch.manual_seed(0)
    model = RiemEmbedding([0], 13, 17, d=6, d_mu=3, shifts=[0, 2, 4], activation=activation,
                          combine=combine, wrap=wrap)
    target = torch.randn(1, 13, 17)
    _accumulate_part(model, target, _row_blocks(model, FitConfig(chunk_elems=17 * 9 * 3 * 2), True,
                                                torch.Generator()),
                     torch.ones(1, dtype=torch.bool), 1.0)
    fused = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()
    (model.rows(slice(None)) - target).square().sum().backward()
    for k, p in model.named_parameters():
        assert torch.allclose(fused[k], p.grad, rtol=1e-4, atol=1e-6), k


def test_warm_start_svd_once_per_distinct_layer_gives_the_same_start():
    """Stacked units repeat each layer once per seed: one SVD per layer, then per-seed
    rotations, must equal the per-element SVD start."""
    from riembench.engine.linalg import svd_of_distinct as _svd_of_distinct

    torch.manual_seed(1)
    a, b = torch.randn(9, 11), torch.randn(9, 11)
    stack = torch.stack([a, a, a, b, b])
    u, s, vh = _svd_of_distinct(stack)
    u0, s0, vh0 = torch.linalg.svd(stack, full_matrices=False)
    assert torch.allclose(s, s0, atol=1e-5)
    assert torch.allclose(u * s[:, None] @ vh, u0 * s0[:, None] @ vh0, atol=1e-4)
    assert torch.equal(u[0], u[2]) and torch.equal(vh[3], vh[4])


@pytest.mark.parametrize("kind", ["riem", "lpnorm"])
def test_refit_readout_returns_the_error_of_the_new_readout(kind):
    """The read-out refit scores itself from its normal equations (the data-free starts use
    that instead of a reconstruction): it must equal the reconstruction's mean squared error."""
    torch.manual_seed(0)
    model = (RiemEmbedding([0, 1], 13, 17, d=6, d_mu=3, shifts=[0, 2, 4]) if kind == "riem"
             else LpNormEmbedding([0, 1], 13, 17, d=4, heads=2, p=2.0))
    target = torch.randn(2, 13, 17)
    mse = model.refit_readout(target, chunk_elems=200)
    with torch.no_grad():
        ref = (model.reconstruct() - target).double().square().mean((1, 2))
    assert torch.allclose(mse, ref, rtol=1e-4)
    assert (mse < target.double().var((1, 2))).all()


def test_variable_projection_recovers_a_matrix_of_the_models_own_form():
    """A target generated by a RieM embedding of the same dimensions is exactly representable:
    the default solver (variable projection) must get close to zero error, and much closer than
    Adam on every parameter in the same steps (measured 3.6e-4 vs 3.2e-3 relative MSE)."""
    from riembench.engine.starts import apply_start

    m, n, d, d_mu = 40, 30, 6, 3
    gen = RiemEmbedding([123], m, n, d, d_mu, default_shifts(d, 6))
    with torch.no_grad():
        gen.U.mul_(4)  # a metric that uses the sigmoid's curvature, not only its linear part
        target = gen.reconstruct()
    errors = {}
    for solver, lr in (("varpro", 0.1), ("adam", 0.01)):
        model = RiemEmbedding([0], m, n, d, d_mu, default_shifts(d, 6))
        apply_start("spectral", [model], [target], [0])
        res = fit(model, target, FitConfig(steps=800, solver=solver, lr=lr, patience=0))
        errors[solver] = float(res.rel_mse[0])
    assert errors["varpro"] < 1e-3, errors
    assert errors["varpro"] < errors["adam"] / 3, errors


def test_a_lone_matrix_vector_product_rounds_like_its_batch():
    from riembench.engine.linalg import batched_matvec

    gen = torch.Generator().manual_seed(0)
    a, v = torch.randn(4, 1200, 6, generator=gen), torch.randn(4, 6, generator=gen)
    full = batched_matvec(a, v)
    assert torch.allclose(full, torch.einsum("bmk,bk->bm", a, v), rtol=1e-5, atol=1e-5)
    for b in range(4):
        assert torch.equal(batched_matvec(a[b:b + 1], v[b:b + 1]), full[b:b + 1])
