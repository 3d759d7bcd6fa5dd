"""Table 5's baselines: svd, the four scikit-learn embeddings + linear decoder, two autoencoders.

Sizes below are worked out by hand for a 60 x 60 matrix and budget 1080 (0.3 N^2), so a change
in a solver or a count shows up as a failure rather than being recomputed by the same code.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import riembench.compression.methods.autoencoder as ae
import riembench.compression.methods.manifold as mf
import riembench.compression.methods.svd as svd_mod
from riembench.compression.methods.base import MatrixApprox
from riembench.config.datasets import SyntheticConfig
from riembench.config.methods import METHODS
from riembench.core.errors import ImpossibleBudget, RiembenchError
from riembench.data.synthetic import build_synthetic
from riembench.harness.evaluate import matvec_error

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"
CPU = torch.device("cpu")
N, BUDGET = 60, 1080  # 0.3 * 60^2

#: method -> (solved size key in info, its value, stored parameters), by hand for N=60, budget 1080
EXPECTED = {
    "svd": ("rank", 9, 9 * 120),  # r (m + n) <= 1080 -> r = 9
    "isomap": ("k", 8, 60 * 8 + 9 * 60),  # m k + (k + 1) n <= 1080 -> k = 8
    "lle": ("k", 8, 60 * 8 + 9 * 60),
    "nystroem": ("k", 8, 60 * 8 + 9 * 60),
    "kernel_pca": ("k", 8, 60 * 8 + 9 * 60),
    "autoencoder": ("k", 8, 60 * 8 + 8 * 60 + 60),  # codes + Linear(8, 60)
    # k = 5, h = 10: codes 300 + Linear(5, 10) 60 + Linear(10, 60) 660 = 1020; k = 6 needs 1224
    "deep_autoencoder": ("k", 5, 300 + 60 + 660),
}
NAMES = list(EXPECTED)
STOCHASTIC = ["nystroem", "autoencoder", "deep_autoencoder"]
DETERMINISTIC = ["svd", "isomap", "lle", "kernel_pca"]


def settings(name: str, **overrides):
    return METHODS.schema(name)(**overrides)


def method(name: str, **overrides):
    return METHODS.get(name)(settings(name, **overrides))


@pytest.fixture(scope="module")
def lowrank():
    return build_synthetic(SyntheticConfig(n=N, family="lowrank", rank=5, noise=0.01))


@pytest.fixture(scope="module")
def fits(lowrank) -> dict[str, list[MatrixApprox]]:
    """Every method once, seeds 0 and 1 (shared by several tests to keep the file fast)."""
    return {name: method(name).approximate(lowrank.target, BUDGET, [0, 1], CPU) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_shape_budget_and_closed_form_count(name, fits):
    key, size, params = EXPECTED[name]
    for approx in fits[name]:
        assert approx.failed is None
        assert approx.a_hat is not None and approx.a_hat.shape == (N, N)
        assert approx.a_hat.dtype == torch.float32 and torch.isfinite(approx.a_hat).all()
        assert approx.info[key] == size
        assert approx.n_params == params <= BUDGET


@pytest.mark.parametrize("name", NAMES)
def test_beats_zero_predictor_on_low_rank_matrix(name, fits, lowrank):
    zero = 1 / math.sqrt(N)
    assert matvec_error(lowrank.target, torch.zeros(N, N), lowrank.test_probes) == pytest.approx(zero)
    for approx in fits[name]:
        assert matvec_error(lowrank.target, approx.a_hat, lowrank.test_probes) < zero


@pytest.mark.parametrize("name", ["svd", "kernel_pca"])
def test_linear_methods_recover_rank_5_signal(name, fits, lowrank):
    """Rank 9 (svd) / 8 components (linear kernel PCA) hold the rank-5 signal; only noise is left."""
    err = matvec_error(lowrank.target, fits[name][0].a_hat, lowrank.test_probes)
    assert err < 0.05 / math.sqrt(N)


def test_svd_is_exact_on_exact_rank_when_budget_allows_it():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(N, 4, generator=g) @ torch.randn(4, N, generator=g)
    probes = torch.rand(N, 32, generator=g)
    [fit] = method("svd").approximate(a, 4 * (N + N), [0], CPU)
    assert fit.info["rank"] == 4 and fit.n_params == 480
    assert matvec_error(a, fit.a_hat, probes) < 1e-5
    [short] = method("svd").approximate(a, 4 * (N + N) - 1, [0], CPU)  # one short: rank 3
    assert short.info["rank"] == 3 and matvec_error(a, short.a_hat, probes) > 1e-3


def test_truncated_svd_factors_and_lowrank_solver_agree():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 40, generator=g,
                                                                          dtype=torch.float64)
    left, right = svd_mod.truncated_svd(a, 6)
    assert left.shape == (50, 6) and right.shape == (6, 40)
    assert torch.allclose(left @ right, a, atol=1e-10)
    # right has orthonormal rows: the singular values live in left
    assert torch.allclose(right @ right.T, torch.eye(6, dtype=a.dtype), atol=1e-10)
    l2, r2 = svd_mod.truncated_svd(a, 6, solver="lowrank")
    assert torch.allclose(l2 @ r2, a, atol=1e-8)
    l3, r3 = svd_mod.truncated_svd(a, 6, solver="lowrank")
    assert torch.equal(l2, l3) and torch.equal(r2, r3)  # fixed internal seed
    # truncation keeps the top singular directions: rank 2 error = tail singular values
    s = torch.linalg.svdvals(a)
    l4, r4 = svd_mod.truncated_svd(a, 2)
    assert torch.linalg.matrix_norm(a - l4 @ r4) == pytest.approx(float(s[2:].norm()), rel=1e-9)


def test_svd_auto_solver_switches_only_for_large_thin_problems():
    m = method("svd")
    assert m.resolve_solver(1000, 1000, 50) == "exact"
    assert m.resolve_solver(10000, 10000, 500) == "lowrank"
    assert m.resolve_solver(10000, 10000, 1500) == "exact"


@pytest.mark.parametrize("name", NAMES)
def test_tiny_budget_is_impossible_before_any_work(name, monkeypatch, lowrank):
    m = method(name)
    # any fitting would go through these; make them explode so "before any work" is checked
    monkeypatch.setattr(mf.EmbeddingDecoderMethod, "estimator", _boom, raising=True)
    monkeypatch.setattr(ae, "train_autoencoder", _boom)
    monkeypatch.setattr(svd_mod, "truncated_svd", _boom)
    with pytest.raises(ImpossibleBudget):
        m.approximate(lowrank.target, 3, [0], CPU)


def _boom(*args, **kwargs):
    raise AssertionError("fitting started despite an impossible budget")


@pytest.mark.parametrize("name", STOCHASTIC)
def test_stochastic_methods_seeds_differ_and_repeat(name, fits, lowrank):
    a0, a1 = (f.a_hat for f in fits[name])
    assert not torch.allclose(a0, a1)
    [again] = method(name).approximate(lowrank.target, BUDGET, [0], CPU)
    assert torch.equal(again.a_hat, a0)
    assert not settings(name).deterministic


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_methods_ignore_the_seed(name, fits):
    a0, a1 = (f.a_hat for f in fits[name])
    assert torch.equal(a0, a1)
    assert settings(name).deterministic


def test_determinism_flag_follows_the_eigen_solver():
    assert not settings("kernel_pca", eigen_solver="arpack").deterministic
    assert not settings("lle", eigen_solver="arpack").deterministic
    assert settings("isomap", eigen_solver="arpack").deterministic  # no random_state to reach


def test_embedding_size_is_capped_by_the_estimator():
    assert mf.solve_embedding_dim(60, 60, 10**6, k_max=59, name="x") == 59
    assert mf.solve_embedding_dim(60, 60, 1080, k_max=59, name="x") == 8
    with pytest.raises(ImpossibleBudget):
        mf.solve_embedding_dim(60, 60, 119, k_max=59, name="x")  # k=1 needs 60 + 2*60 = 180


def test_info_records_effective_estimator_settings(fits):
    settings = fits["isomap"][0].info["estimator"]
    assert settings["class"] == "Isomap" and settings["n_components"] == 8
    assert settings["n_neighbors"] == 5 and settings["eigen_solver"] == "dense"
    assert fits["nystroem"][1].info["estimator"]["random_state"] == 1


def test_linear_decoder_reproduces_targets_linear_in_the_embedding():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(30, 3, generator=g, dtype=torch.float64)
    target = emb @ torch.randn(3, 20, generator=g, dtype=torch.float64) + 5.0  # offset: intercept
    out = mf.linear_decode(emb.numpy(), target.numpy())
    assert torch.allclose(torch.from_numpy(out), target, atol=1e-10)


def test_deep_autoencoder_decoder_count_matches_network():
    model = ae.build_autoencoder([70, 14, 7], "relu", 0, CPU)
    assert ae.n_stored(model, 50) == ae.deep_params(50, 70, 7, 14) == 50 * 7 + 7 * 14 + 14 + 14 * 70 + 70
    assert ae.largest_fitting(lambda k: ae.shallow_params(60, 60, k), BUDGET, 60) == 8


def test_autoencoder_divergence_is_reported_not_raised(lowrank):
    [fit] = method("autoencoder", lr=1e12, steps=20).approximate(lowrank.target, BUDGET, [0], CPU)
    assert fit.a_hat is None
    assert fit.failed is not None and fit.failed.startswith("non-finite loss at step ")


def test_autoencoder_minibatch_runs(lowrank):
    [fit] = method("autoencoder", batch_size=16, steps=50).approximate(lowrank.target, BUDGET, [3], CPU)
    assert fit.failed is None and fit.a_hat.shape == (N, N)


def test_bad_config_values_are_rejected():
    with pytest.raises(RiembenchError):
        ae.AutoencoderConfig(activation="swish")
    with pytest.raises(RiembenchError):
        mf.KernelPcaConfig(eigen_solver="magic")
    with pytest.raises(RiembenchError):
        svd_mod.SvdConfig(solver="qr")


@pytest.mark.parametrize("name", NAMES)
def test_yaml_documents_every_default(name):
    """conf/method/<name>.yaml lists each field with the dataclass's default (label aside)."""
    node = OmegaConf.to_container(OmegaConf.load(CONF / f"{name}.yaml"))
    assert node.pop("defaults") == [f"{name}_schema", "_self_"]
    defaults = asdict(METHODS.schema(name)())
    defaults.pop("label")
    assert node == defaults
