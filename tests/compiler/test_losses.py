"""Supervised losses of compiler/losses.py against the plain numpy references."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.compiler import numpy_ref as ref
from tunix_dsl.compiler import losses

B, T, V = 3, 7, 11
RTOL = 2e-5


def _close(actual, expected, rtol=RTOL, atol=1e-6) -> None:
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol, atol=atol)


def _ragged_mask(rng: np.random.Generator, batch: int = B, length: int = T) -> np.ndarray:
    """Right-padded rows of random lengths, one of them empty."""
    lengths = rng.integers(1, length + 1, size=batch)
    lengths[-1] = 0
    return np.arange(length)[None, :] < lengths[:, None]


def _with_garbage(values: np.ndarray, mask: np.ndarray, garbage: float) -> np.ndarray:
    """Overwrite masked-out positions: a bug that reads them changes the result."""
    out = values.copy()
    out[~mask] = garbage
    return out


@pytest.fixture
def batch():
    rng = np.random.default_rng(0)
    mask = _ragged_mask(rng)
    logits = rng.normal(0, 3, (B, T, V)).astype(np.float32)
    targets = rng.integers(0, V, (B, T))
    targets[~mask] = -100  # an out-of-range padding label must not matter either
    return logits, targets, mask


# --------------------------------------------------------------------------- SFT


@pytest.mark.parametrize("garbage", [1e30, -1e30, np.nan])
def test_sft_loss_matches_numpy_and_ignores_padding(batch, garbage):
    logits, targets, mask = batch
    expected = ref.sft(logits, targets, mask)
    loss, metrics = losses.sft_loss(_with_garbage(logits, mask, garbage), targets, mask)
    _close(loss, expected["loss"])
    for key in ("loss", "tokens", "accuracy", "perplexity"):
        _close(metrics[key], expected[key])
    nll_sum, count = losses.sft_loss_sum(_with_garbage(logits, mask, garbage), targets, mask)
    _close(nll_sum, expected["nll_sum"])
    _close(count, mask.sum())


def test_token_logps_bfloat16_input_computes_in_float32(batch):
    logits, targets, mask = batch
    bf16 = jnp.asarray(logits, jnp.bfloat16)
    out = losses.token_logps(bf16, jnp.where(mask, targets, 0))
    assert out.dtype == jnp.float32
    expected = ref.token_logps(np.asarray(bf16.astype(jnp.float32)), targets, mask)
    _close(np.where(mask, out, 0.0), expected)


def test_sft_accuracy_counts_argmax_hits_only_on_masked_tokens():
    logits = np.zeros((1, 3, 4), np.float32)
    logits[0, 0, 2] = logits[0, 1, 1] = logits[0, 2, 3] = 5.0
    targets = np.array([[2, 0, 3]])
    mask = np.array([[True, True, False]])  # the third (correct) guess is padding
    _, metrics = losses.sft_loss(logits, targets, mask)
    _close(metrics["accuracy"], 0.5)


def test_sft_accumulation_over_micro_batches_is_the_global_token_mean(batch):
    logits, targets, mask = batch
    micro = [slice(0, 1), slice(1, 3)]  # unequal token counts: mean of means would differ
    parts = [losses.sft_sums(logits[s], targets[s], mask[s]) for s in micro]
    total = losses.add_sums(parts)
    loss, metrics = losses.sft_from_sums(total)
    expected = ref.sft(logits, targets, mask)
    _close(loss, expected["loss"])
    _close(metrics["accuracy"], expected["accuracy"])
    means = [ref.sft(logits[s], targets[s], mask[s])["loss"] for s in micro]
    assert abs(np.mean(means) - expected["loss"]) > 1e-3  # the test can tell them apart

    # Gradients: Σ_micro ∇ from_sums(sums_mb with the global token count) == ∇ global loss.
    def micro_loss(lg, tg, mk):
        sums = losses.sft_sums(lg, tg, mk)
        return losses.sft_from_sums({**sums, "tokens": total["tokens"]})[0]

    grad_micro = jax.jit(jax.grad(micro_loss))
    accumulated = np.concatenate(
        [grad_micro(logits[s], targets[s], mask[s]) for s in micro], axis=0
    )
    full = jax.jit(jax.grad(lambda lg: losses.sft_loss(lg, targets, mask)[0]))(logits)
    _close(accumulated, full, atol=1e-7)


def test_sft_gradient_is_finite_and_zero_at_nan_padding(batch):
    logits, targets, mask = batch
    poisoned = jnp.asarray(_with_garbage(logits, mask, np.nan))
    grads = jax.grad(lambda lg: losses.sft_loss(lg, targets, mask)[0])(poisoned)
    assert np.isfinite(grads).all()
    assert np.all(np.asarray(grads)[~mask] == 0)


def test_sft_all_padding_batch_gives_zero_not_nan(batch):
    logits, targets, _ = batch
    empty = np.zeros((B, T), bool)
    loss, metrics = losses.sft_loss(logits, targets, empty)
    assert float(loss) == 0.0 and float(metrics["tokens"]) == 0.0
    assert np.isfinite(jax.grad(lambda lg: losses.sft_loss(lg, targets, empty)[0])(logits)).all()


def test_sequence_logps_sum_and_length_mean(batch):
    logits, targets, mask = batch
    per_token = ref.token_logps(logits, targets, mask)
    garbage = _with_garbage(per_token, mask, np.nan)
    _close(losses.sequence_logps(garbage, mask), per_token.sum(-1))
    lengths = mask.sum(-1)
    expected = np.where(lengths > 0, per_token.sum(-1) / np.maximum(lengths, 1), 0.0)
    _close(losses.mean_sequence_logps(garbage, mask), expected)


# --------------------------------------------------------------------------- DPO


@pytest.mark.parametrize("beta,label_smoothing", [(0.1, 0.0), (0.5, 0.2)])
def test_dpo_matches_numpy(beta, label_smoothing):
    rng = np.random.default_rng(1)
    pc, pr, rc, rr = (rng.normal(-20, 5, 6).astype(np.float32) for _ in range(4))
    pair_mask = np.array([1, 1, 0, 1, 1, 1], bool)
    pc_garbage = np.where(pair_mask, pc, np.nan).astype(np.float32)
    loss, metrics = losses.dpo_loss(
        pc_garbage, pr, rc, rr, beta=beta, label_smoothing=label_smoothing, pair_mask=pair_mask
    )
    expected = ref.dpo(pc, pr, rc, rr, beta, label_smoothing, pair_mask)
    _close(loss, expected["loss"])
    for key, value in expected.items():
        _close(metrics[key], value)
    loss_sum, pairs = losses.dpo_loss_sum(
        pc, pr, rc, rr, beta=beta, label_smoothing=label_smoothing, pair_mask=pair_mask
    )
    _close(loss_sum / pairs, expected["loss"])


def test_dpo_reference_equal_to_policy_gives_log2_and_half_accuracy():
    logps = jnp.asarray(np.random.default_rng(2).normal(-30, 4, (2, 8)), jnp.float32)
    chosen, rejected = logps
    loss, metrics = losses.dpo_loss(chosen, rejected, chosen, rejected, beta=0.1)
    _close(loss, math.log(2))
    _close(metrics["rewards/accuracy"], 0.5)
    _close(metrics["rewards/margin"], 0.0)


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    args = [jnp.float32(v) * jnp.ones(3) for v in (-10.0, -12.0, -11.0, -11.0)]
    grads = jax.grad(lambda c, r: losses.dpo_loss(c, r, args[2], args[3])[0], argnums=(0, 1))(
        args[0], args[1]
    )
    assert np.all(np.isfinite(grads)) and np.all(grads[0] < 0) and np.all(grads[1] > 0)


# --------------------------------------------------------------------------- ORPO


def _orpo_inputs(rng):
    chosen_mask, rejected_mask = _ragged_mask(rng), _ragged_mask(rng)
    chosen_mask[-1, :2] = rejected_mask[-1, :3] = True  # every pair has tokens
    chosen = -rng.exponential(1.0, (B, T)).astype(np.float32)
    rejected = -rng.exponential(2.0, (B, T)).astype(np.float32)
    return chosen, chosen_mask, rejected, rejected_mask


def test_orpo_matches_numpy_and_ignores_padding():
    chosen, chosen_mask, rejected, rejected_mask = _orpo_inputs(np.random.default_rng(3))
    loss, metrics = losses.orpo_loss(
        _with_garbage(chosen, chosen_mask, np.nan), chosen_mask,
        _with_garbage(rejected, rejected_mask, -1e30), rejected_mask, lam=0.3,
    )
    expected = ref.orpo(chosen, chosen_mask, rejected, rejected_mask, 0.3)
    _close(loss, expected["loss"])
    for key, value in expected.items():
        _close(metrics[key], value, rtol=1e-4)


def test_orpo_stays_finite_when_log_probs_round_to_zero():
    mask = np.ones((2, 4), bool)
    loss_and_grads = jax.jit(
        jax.value_and_grad(lambda c, r: losses.orpo_loss(c, mask, r, mask)[0], argnums=(0, 1))
    )
    for chosen_value in (0.0, -1e-9, -1e-4):
        chosen = jnp.full((2, 4), chosen_value, jnp.float32)
        rejected = jnp.full((2, 4), -1e-8, jnp.float32)
        loss, grads = loss_and_grads(chosen, rejected)
        assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)
    # log1mexp is accurate on both branches.
    xs = np.array([-1e-5, -0.1, -0.69, -0.7, -5.0, -40.0])
    _close(losses.log1mexp(xs), np.log(-np.expm1(xs)), rtol=1e-5)


# --------------------------------------------------------------------------- distillation


@pytest.mark.parametrize("temperature,alpha", [(2.0, 0.5), (1.0, 0.9)])
def test_logit_distill_matches_numpy_with_all_padding_rows(temperature, alpha):
    rng = np.random.default_rng(4)
    mask = _ragged_mask(rng)  # last row all padding
    student = rng.normal(0, 2, (B, T, V)).astype(np.float32)
    teacher = rng.normal(0, 2, (B, T, V)).astype(np.float32)
    labels = rng.integers(0, V, (B, T))
    loss, metrics = losses.logit_distill_loss(
        _with_garbage(student, mask, np.nan), _with_garbage(teacher, mask, 1e30), labels, mask,
        temperature=temperature, alpha=alpha,
    )
    expected = ref.logit_distill(student, teacher, labels, mask, temperature, alpha)
    for key, value in expected.items():
        _close(metrics[key], value, rtol=1e-4)
    _close(loss, expected["loss"], rtol=1e-4)
    grad_s, grad_t = jax.grad(
        lambda s, t: losses.logit_distill_loss(s, t, labels, mask)[0], argnums=(0, 1)
    )(jnp.asarray(student), jnp.asarray(teacher))
    assert np.isfinite(grad_s).all() and not np.any(grad_t)  # the teacher gets no gradient


def test_logit_distill_of_identical_models_has_zero_kl():
    logits = np.random.default_rng(5).normal(size=(2, 3, V)).astype(np.float32)
    _, metrics = losses.logit_distill_loss(logits, logits, np.zeros((2, 3), int), np.ones((2, 3)))
    _close(metrics["kl"], 0.0, atol=1e-6)


def test_logit_distill_vocab_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="share one vocabulary"):
        losses.logit_distill_loss(
            jnp.zeros((1, 2, 5)), jnp.zeros((1, 2, 6)), jnp.zeros((1, 2), int), jnp.ones((1, 2))
        )


def _attention_maps(rng, layers, heads):
    scores = rng.normal(size=(layers, B, heads, T, T))
    causal = np.tril(np.ones((T, T), bool))
    scores = np.where(causal, scores, -np.inf)
    maps = np.exp(scores - scores.max(-1, keepdims=True))
    return (maps / maps.sum(-1, keepdims=True)).astype(np.float32)


def test_attention_transfer_matches_numpy_with_head_pooling_and_layer_map():
    rng = np.random.default_rng(6)
    mask = _ragged_mask(rng)
    student, teacher = _attention_maps(rng, 2, 2), _attention_maps(rng, 4, 4)
    layer_map = losses.uniform_layer_map(2, 4)
    assert layer_map == [(0, 1), (1, 3)]
    # padded query rows of the student hold NaN
    garbage_student = np.where(mask[None, :, None, :, None], student, np.nan)
    loss, metrics = losses.attention_transfer_loss(list(garbage_student), list(teacher), mask)
    expected = ref.attention_transfer(student, teacher, mask, layer_map)
    _close(loss, expected["loss"], rtol=1e-4)
    _close(metrics["cosine"], expected["cosine"], rtol=1e-4)
    # identical maps (teacher = student repeated per head group) → zero distance
    same, _ = losses.attention_transfer_loss(
        list(student), [np.repeat(s, 2, axis=1) for s in student], mask, layer_map=[(0, 0), (1, 1)]
    )
    _close(same, 0.0, atol=1e-6)
    grads = jax.grad(lambda s: losses.attention_transfer_loss(s, teacher, mask)[0])(
        jnp.asarray(student)
    )
    assert np.isfinite(grads).all()


def test_attention_transfer_rejects_indivisible_heads_and_bad_layer_pairs():
    rng = np.random.default_rng(7)
    mask = np.ones((B, T), bool)
    with pytest.raises(ValueError, match="multiple of the student"):
        losses.attention_transfer_loss(_attention_maps(rng, 1, 2), _attention_maps(rng, 1, 3), mask)
    with pytest.raises(ValueError, match="out of range"):
        losses.attention_transfer_loss(
            _attention_maps(rng, 1, 2), _attention_maps(rng, 1, 2), mask, layer_map=[(0, 5)]
        )


def test_feature_projection_matches_numpy_and_trains_the_projection():
    rng = np.random.default_rng(8)
    mask = _ragged_mask(rng)
    student = rng.normal(size=(B, T, 4)).astype(np.float32)
    teacher = rng.normal(size=(B, T, 6)).astype(np.float32)
    kernel = losses.init_feature_projection(jax.random.key(0), 4, 6)
    assert kernel.shape == (4, 6) and kernel.dtype == jnp.float32
    loss, metrics = losses.feature_projection_loss(
        _with_garbage(student, mask, np.nan), _with_garbage(teacher, mask, np.inf), kernel, mask
    )
    expected = ref.feature_projection(student, teacher, np.asarray(kernel), mask)
    _close(loss, expected, rtol=1e-5)
    _close(metrics["tokens"], mask.sum())
    grad = jax.grad(lambda k: losses.feature_projection_loss(student, teacher, k, mask)[0])(kernel)
    assert np.isfinite(grad).all() and np.abs(grad).sum() > 0
    with pytest.raises(ValueError, match="student width 4 to teacher width 6"):
        losses.feature_projection_loss(student, teacher, jnp.zeros((6, 4)), mask)


def test_losses_trace_under_jit_and_agree_with_eager(batch):
    logits, targets, mask = batch
    seq = np.random.default_rng(9).normal(-5, 1, (B, 4)).astype(np.float32)
    token = -np.abs(logits[..., 0])
    maps = _attention_maps(np.random.default_rng(9), 1, 2)
    calls = {
        "sft": (losses.sft_loss, (logits, targets, mask)),
        "dpo": (losses.dpo_loss, tuple(seq.T)),
        "orpo": (losses.orpo_loss, (token, mask | True, token - 1, mask | True)),
        "distill": (losses.logit_distill_loss, (logits, logits[::-1], targets, mask)),
        "attention": (losses.attention_transfer_loss, (maps, maps, mask)),
        "feature": (losses.feature_projection_loss, (logits, logits, np.eye(V), mask)),
        "policy": (losses.policy_gradient_loss, (token, token * 0.9, seq[:, 0], mask)),
        "value": (losses.value_loss, (token, token * 0.9, token * 1.1, mask)),
    }
    for name, (fn, args) in calls.items():
        eager_loss, eager_metrics = fn(*args)
        jit_loss, jit_metrics = jax.jit(fn)(*args)
        _close(jit_loss, eager_loss, rtol=1e-5)
        assert set(jit_metrics) == set(eager_metrics), name
