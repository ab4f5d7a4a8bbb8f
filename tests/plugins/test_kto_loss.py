"""The KTO loss of the example plugin against a plain numpy transcription of its formula."""

from __future__ import annotations

import numpy as np
import pytest

from tests.plugins.install import KTO


@pytest.fixture(scope="module")
def kto_loss(tmp_path_factory):
    import importlib.util

    spec = importlib.util.spec_from_file_location("tnx_kto_loss_under_test", KTO / "tnx_kto" / "loss.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_kto(logps, ref, kl_logps, kl_ref, desirable, keep, beta, lam_d, lam_u):
    r = logps - ref
    z = max(0.0, float(np.sum((kl_logps - kl_ref) * keep) / max(keep.sum(), 1.0)))
    value = np.where(desirable > 0, lam_d * _sigmoid(beta * (r - z)), lam_u * _sigmoid(beta * (z - r)))
    weight = np.where(desirable > 0, lam_d, lam_u)
    return float(np.sum((weight - value) * keep) / keep.sum()), z


@pytest.mark.parametrize("beta,lam_d,lam_u", [(0.1, 1.0, 1.0), (2.0, 1.5, 0.5)])
def test_kto_matches_numpy(kto_loss, beta, lam_d, lam_u):
    rng = np.random.default_rng(0)
    n = 7
    logps, ref, kl_logps, kl_ref = (rng.normal(-10, 3, n).astype(np.float32) for _ in range(4))
    kl_logps = kl_ref + np.abs(rng.normal(0, 1, n)).astype(np.float32)  # z > 0: the max is active
    desirable = (rng.random(n) < 0.5).astype(np.float32)
    keep = np.asarray([1, 1, 1, 1, 1, 1, 0], np.float32)  # the last row is padding
    sums = kto_loss.kto_sums(logps, ref, kl_logps, kl_ref, desirable, keep > 0, beta=beta,
                             desirable_weight=lam_d, undesirable_weight=lam_u)
    loss, metrics = kto_loss.kto_from_sums(sums)
    expected, z = numpy_kto(logps, ref, kl_logps, kl_ref, desirable, keep, beta, lam_d, lam_u)
    assert z > 0
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kl"]), z, rtol=1e-5)
    good = (desirable > 0) & (keep > 0)
    np.testing.assert_allclose(float(metrics["rewards/desirable"]),
                               float(np.mean(beta * (logps - ref)[good])), rtol=1e-5)
    assert float(metrics["examples"]) == 6.0


def test_kl_point_is_clamped_at_zero_and_gets_no_gradient(kto_loss):
    import jax
    import jax.numpy as jnp

    ones = jnp.ones(4, jnp.float32)

    def loss_of(kl_logps):
        sums = kto_loss.kto_sums(-ones, -ones, kl_logps, -ones, jnp.asarray([1.0, 0.0, 1.0, 0.0]),
                                 ones > 0)
        return kto_loss.kto_from_sums(sums)[0]

    # the policy equals the reference: r = 0, z = max(0, negative) = 0, every row loses λ/2
    assert float(loss_of(-2 * ones)) == pytest.approx(0.5)
    assert np.all(np.asarray(jax.grad(loss_of)(-0.5 * ones)) == 0.0)


def test_desirable_rows_gain_by_raising_their_reward(kto_loss):
    import jax
    import jax.numpy as jnp

    def loss_of(logps):
        zeros = jnp.zeros(2, jnp.float32)
        sums = kto_loss.kto_sums(logps, zeros, zeros, zeros, jnp.asarray([1.0, 0.0]),
                                 jnp.asarray([True, True]), beta=0.5)
        return kto_loss.kto_from_sums(sums)[0]

    grad = np.asarray(jax.grad(loss_of)(jnp.zeros(2, jnp.float32)))
    assert grad[0] < 0 < grad[1]  # raise the desirable log-prob, lower the undesirable one
