"""RL losses of compiler/losses_rl.py (re-exported by compiler/losses.py) against numpy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.compiler import numpy_ref as ref
from tunix_dsl.compiler import losses

B, T = 4, 6


def _close(actual, expected, rtol=2e-5, atol=1e-6) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


@pytest.fixture
def rollout():
    rng = np.random.default_rng(10)
    lengths = np.array([6, 3, 1, 0])  # the last row is batch padding
    mask = np.arange(T)[None, :] < lengths[:, None]
    old = rng.normal(-2.0, 0.5, (B, T)).astype(np.float32)
    logps = (old + rng.normal(0, 0.4, (B, T))).astype(np.float32)  # ratios both sides of 1±ε
    advantages = np.array([1.5, -0.7, -2.0, 3.0], np.float32)
    return logps, old, advantages, mask


def _poison(x, mask):
    return np.where(mask, x, np.nan).astype(np.float32)


@pytest.mark.parametrize("scale_by_std", [True, False])
def test_group_advantages(scale_by_std):
    rewards = np.array([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 5.0], np.float32)
    actual = losses.group_advantages(rewards, 4, scale_by_std=scale_by_std)
    _close(actual, ref.group_advantages(rewards, 4, scale_by_std), rtol=1e-5)


def test_group_advantages_rejects_bad_groups():
    with pytest.raises(ValueError, match="must be > 1"):
        losses.group_advantages(jnp.zeros(4), 1)
    with pytest.raises(ValueError, match="whole groups"):
        losses.group_advantages(jnp.zeros(6), 4)


@pytest.mark.parametrize("aggregation", sorted(losses.AGGREGATIONS))
@pytest.mark.parametrize("eps_high,dual_clip", [(None, None), (0.28, 3.0)])
def test_policy_gradient_loss_matches_numpy(rollout, aggregation, eps_high, dual_clip):
    logps, old, advantages, mask = rollout
    ratio = np.exp(logps.astype(np.float64) - old)
    per_token = ref.clipped_per_token(ratio, advantages, 0.2, eps_high or 0.2, dual_clip)
    loss, metrics = losses.policy_gradient_loss(
        _poison(logps, mask), old, advantages, mask, eps_low=0.2, eps_high=eps_high,
        dual_clip=dual_clip, aggregation=aggregation,
    )
    _close(loss, ref.aggregate(per_token, mask, aggregation), rtol=1e-5)
    _close(metrics["ratio"], ratio[mask].mean(), rtol=1e-5)
    assert 0.0 < float(metrics["clip_fraction"]) < 1.0
    grads = jax.grad(
        lambda lp: losses.policy_gradient_loss(
            lp, old, advantages, mask, eps_high=eps_high, dual_clip=dual_clip,
            aggregation=aggregation,
        )[0]
    )(jnp.asarray(logps))
    assert np.isfinite(grads).all() and not np.any(np.asarray(grads)[~mask])


def test_dual_clip_caps_negative_advantage_tokens():
    ratio = jnp.array([[10.0, 10.0]])
    loss, metrics = losses.clipped_surrogate_loss(
        ratio, jnp.array([[-1.0, 1.0]]), jnp.ones((1, 2)), dual_clip=3.0
    )
    # token 0: max(10, 1.2) = 10 → capped at 3; token 1: max(−10, −1.2) = −1.2
    _close(loss, (3.0 - 1.2) / 2)
    _close(metrics["dual_clip_fraction"], 0.5)
    with pytest.raises(ValueError, match="dual_clip must be > 1"):
        losses.clipped_surrogate_loss(ratio, jnp.ones(1), jnp.ones((1, 2)), dual_clip=0.5)


def test_sequence_mean_token_scale_uses_the_given_constant(rollout):
    logps, old, advantages, mask = rollout
    per_token = ref.clipped_per_token(np.exp(logps - old.astype(np.float64)), advantages,
                                      0.2, 0.2, None)
    loss, _ = losses.policy_gradient_loss(
        logps, old, advantages, mask, aggregation="sequence-mean-token-scale", norm=64
    )
    _close(loss, ref.aggregate(per_token, mask, "sequence-mean-token-scale", norm=64), rtol=1e-5)


def test_unknown_aggregation_and_estimator_name_the_choices(rollout):
    logps, old, advantages, mask = rollout
    with pytest.raises(ValueError, match="expected one of .*token-mean"):
        losses.policy_gradient_loss(logps, old, advantages, mask, aggregation="mean")
    with pytest.raises(ValueError, match=r"expected one of \['k1', 'k3'\]"):
        losses.kl_penalty(logps, old, "k9")


def test_gspo_token_ratio_value_and_gradient(rollout):
    logps, old, _, mask = rollout
    ratio = losses.gspo_token_ratio(_poison(logps, mask), old, mask)
    for b in range(B):
        if mask[b].any():
            sequence = np.mean(logps[b][mask[b]].astype(np.float64) - old[b][mask[b]])
            _close(np.asarray(ratio)[b][mask[b]], np.exp(sequence), rtol=1e-5)
    # ∂/∂logp_t of Σ_t m·ρ_t is exp(s_b) at every real token (the stop-gradient trick)
    grads = jax.grad(lambda lp: jnp.sum(jnp.where(mask, losses.gspo_token_ratio(lp, old, mask),
                                                  0.0)))(jnp.asarray(logps))
    _close(np.asarray(grads)[mask], np.asarray(ratio)[mask], rtol=1e-5)


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_penalty(rollout, estimator):
    logps, old, _, _ = rollout
    _close(losses.kl_penalty(logps, old, estimator), ref.kl(logps.astype(np.float64), old,
                                                             estimator), rtol=1e-4, atol=1e-6)
    assert estimator == "k1" or np.all(np.asarray(losses.kl_penalty(logps, old, "k3")) >= 0)


def test_entropy_from_logits_in_float32():
    logits = np.random.default_rng(11).normal(0, 2, (2, 3, 9)).astype(np.float32)
    out = losses.entropy_from_logits(jnp.asarray(logits, jnp.bfloat16))
    assert out.dtype == jnp.float32
    bf16_values = np.asarray(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32))
    _close(out, ref.entropy(bf16_values), rtol=1e-5)


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5)])
def test_gae_and_whitening(rollout, gamma, lam):
    _, _, _, mask = rollout
    rng = np.random.default_rng(12)
    rewards = rng.normal(size=(B, T)).astype(np.float32)
    values = rng.normal(size=(B, T)).astype(np.float32)
    advantages, returns = losses.gae(
        _poison(rewards, mask), _poison(values, mask), mask, gamma=gamma, lam=lam
    )
    expected_adv, expected_ret = ref.gae(rewards.astype(np.float64), values, mask, gamma, lam)
    _close(advantages, expected_adv, rtol=1e-5)
    _close(returns, expected_ret, rtol=1e-5)
    _close(losses.masked_whiten(advantages, mask), ref.whiten(expected_adv, mask), rtol=1e-4,
           atol=1e-5)
    shifted = losses.masked_whiten(advantages, mask, shift_mean=False)
    _close(np.asarray(shifted)[mask].mean(), expected_adv[mask].mean(), rtol=1e-4, atol=1e-5)


def test_value_loss(rollout):
    _, _, _, mask = rollout
    rng = np.random.default_rng(13)
    values, old_values, returns = (rng.normal(size=(B, T)).astype(np.float32) for _ in range(3))
    loss, metrics = losses.value_loss(_poison(values, mask), old_values, returns, mask, clip=0.2)
    _close(loss, ref.value_loss(values, old_values, returns, mask, 0.2), rtol=1e-5)
    assert 0.0 < float(metrics["clip_fraction"]) <= 1.0
    grads = jax.grad(lambda v: losses.value_loss(v, old_values, returns, mask)[0])(values)
    assert np.isfinite(grads).all()


@pytest.mark.parametrize("aggregation", sorted(losses.AGGREGATIONS))
def test_aggregation_weights_reproduce_the_aggregation_over_any_split(rollout, aggregation):
    from tunix_dsl.compiler.losses_rl import aggregation_weights

    logps, _, _, mask = rollout
    per_token = np.where(mask, logps, 0.0)
    weights = aggregation_weights(mask, aggregation, norm=5.0)
    whole = losses.aggregate_token_loss(per_token, mask, aggregation, norm=5.0)
    _close(jnp.sum(weights * per_token), float(whole))
    # micro-batches of two rows, weights from the whole batch: the sum of parts is the whole
    parts = [jnp.sum(weights[i:i + 2] * per_token[i:i + 2]) for i in (0, 2)]
    _close(sum(parts), float(whole))
    assert float(jnp.sum(jnp.where(mask, 0.0, weights))) == 0.0
