import math

import torch

from riembench.config.datasets import SyntheticConfig
from riembench.data.synthetic import build_synthetic, make_matrix
from riembench.harness.evaluate import matvec_error


def test_zero_predictor_scores_one_over_sqrt_n():
    task = build_synthetic(SyntheticConfig(n=200, family="randn", dev_probes=8, test_probes=16))
    err = matvec_error(task.target, torch.zeros_like(task.target), task.test_probes)
    assert math.isclose(err, 1 / math.sqrt(200), rel_tol=1e-12)


def test_exact_predictor_scores_zero_and_error_scales():
    task = build_synthetic(SyntheticConfig(n=50, family="lowrank"))
    assert matvec_error(task.target, task.target, task.test_probes) == 0.0
    half = matvec_error(task.target, 0.5 * task.target, task.test_probes)
    assert math.isclose(half, 0.5 / math.sqrt(50), rel_tol=1e-9)


def test_families_are_deterministic_and_distinct():
    a = make_matrix(SyntheticConfig(n=30, family="lp_field"))
    assert torch.equal(a, make_matrix(SyntheticConfig(n=30, family="lp_field")))
    assert not torch.equal(a, make_matrix(SyntheticConfig(n=30, family="lp_field", matrix_seed=1)))
    for fam in ("kernel_field", "lowrank", "randn"):
        m = make_matrix(SyntheticConfig(n=30, family=fam))
        assert m.shape == (30, 30) and torch.isfinite(m).all()


def test_dev_and_test_probes_differ():
    task = build_synthetic(SyntheticConfig(n=20, dev_probes=4, test_probes=4))
    assert not torch.equal(task.dev_probes, task.test_probes)


def test_output_fidelity_agreement_and_relative_error():
    import pytest
    import torch

    from riembench.core.errors import RiembenchError
    from riembench.harness.evaluate import output_fidelity

    ref = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [1.0, 0.0, 0.0]])
    same = output_fidelity(ref.clone(), ref)
    assert same == {"agree": 100.0, "out_rel_err": 0.0}
    other = ref.clone()
    other[3] = torch.tensor([0.0, 1.0, 0.0])  # one of four predictions changes
    got = output_fidelity(other, ref)
    assert got["agree"] == 75.0
    assert got["out_rel_err"] == pytest.approx(2 ** 0.5 / 13 ** 0.5)
    with pytest.raises(RiembenchError):
        output_fidelity(ref[:2], ref)
