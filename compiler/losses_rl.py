"""RL loss math (DESIGN.md §6 "grpo", "gspo-token", "ppo"), re-exported by ``compiler/losses.py``.

Shapes: ``logps``/``old_logps``/``ref_logps``/``values`` are per-token ``[B, T]`` over the
completion; ``mask`` ``[B, T]`` marks completion tokens (right-padded rows; True = real).
Everything is computed in float32, and masked-out positions never reach a sum.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tunix_dsl.compiler.losses_common import as_f32, masked_sum, safe_div

Array = jax.Array
Metrics = dict[str, Array]


# --------------------------------------------------------------------------- advantages


def group_advantages(
    rewards: Array, group_size: int, *, scale_by_std: bool = True, eps: float = 1e-6
) -> Array:
    """GRPO group-relative advantages for ``rewards`` ``[N]`` laid out as ``N / G`` groups of
    ``G = group_size`` consecutive completions of one prompt.

    ``A = (r − mean_g) / (std_g + eps)``; with ``scale_by_std=False`` (Dr. GRPO)
    ``A = r − mean_g``. ``std_g`` is the sample standard deviation (ddof = 1), as in
    TRL and Tunix. Returns float32 ``[N]``.
    """
    if group_size < 2:
        raise ValueError(
            f"group_advantages: group_size must be > 1 (got {group_size}); a group of one "
            "completion has no baseline — raise the number of generations per prompt"
        )
    if rewards.shape[0] % group_size:
        raise ValueError(
            f"group_advantages: {rewards.shape[0]} rewards do not split into groups of "
            f"{group_size}; the batch must hold whole groups"
        )
    grouped = as_f32(rewards).reshape(-1, group_size)
    centred = grouped - jnp.mean(grouped, axis=1, keepdims=True)
    if scale_by_std:
        centred = centred / (jnp.std(grouped, axis=1, ddof=1, keepdims=True) + eps)
    return centred.reshape(-1)


# --------------------------------------------------------------------------- aggregation


def _real_rows(mask: Array) -> Array:
    return jnp.any(mask, axis=-1)


def _token_mean(per_token: Array, mask: Array, norm: float | None) -> Array:
    return safe_div(masked_sum(per_token, mask), jnp.sum(mask, dtype=jnp.float32))


def _sequence_mean(per_sequence: Array, mask: Array) -> Array:
    rows = _real_rows(mask)  # rows with no completion token (batch padding) are left out
    return safe_div(masked_sum(per_sequence, rows), jnp.sum(rows, dtype=jnp.float32))


def _row_sums(per_token: Array, mask: Array) -> Array:
    return jnp.sum(jnp.where(mask, as_f32(per_token), 0.0), axis=-1)


def _seq_mean_token_mean(per_token: Array, mask: Array, norm: float | None) -> Array:
    lengths = jnp.sum(mask, axis=-1, dtype=jnp.float32)
    return _sequence_mean(safe_div(_row_sums(per_token, mask), lengths), mask)


def _seq_mean_token_sum(per_token: Array, mask: Array, norm: float | None) -> Array:
    return _sequence_mean(_row_sums(per_token, mask), mask)


def _seq_mean_token_scale(per_token: Array, mask: Array, norm: float | None) -> Array:
    scale = float(norm) if norm is not None else float(per_token.shape[-1])
    return _sequence_mean(_row_sums(per_token, mask) / scale, mask)


# name → fn(per_token [B, T], mask [B, T] bool, norm) → scalar
AGGREGATIONS: dict[str, Callable[[Array, Array, float | None], Array]] = {
    # Σ_{b,t} ℓ·m / Σ m  (DAPO: every token weighs the same)
    "token-mean": _token_mean,
    # mean_b [Σ_t ℓ·m / Σ_t m]  (original GRPO)
    "sequence-mean-token-mean": _seq_mean_token_mean,
    # mean_b [Σ_t ℓ·m]
    "seq-mean-token-sum": _seq_mean_token_sum,
    # mean_b [Σ_t ℓ·m / norm], norm a constant (default T, the max completion length; Dr. GRPO)
    "sequence-mean-token-scale": _seq_mean_token_scale,
}


def aggregate_token_loss(
    per_token: Array, mask: Array, aggregation: str = "token-mean", *, norm: float | None = None
) -> Array:
    """Reduce a per-token loss ``[B, T]`` to a scalar with one of :data:`AGGREGATIONS`.
    Sequence means average over rows that hold at least one real token."""
    try:
        reduce = AGGREGATIONS[aggregation]
    except KeyError:
        raise ValueError(
            f"unknown loss aggregation {aggregation!r}; expected one of {sorted(AGGREGATIONS)}"
        ) from None
    return reduce(per_token, mask.astype(bool), norm)


def aggregation_weights(
    mask: Array, aggregation: str = "token-mean", *, norm: float | None = None
) -> Array:
    """Per-token weights ``w [B, T]`` with ``Σ w·ℓ = aggregate_token_loss(ℓ, mask, aggregation)``.

    The weights depend on the mask alone, so a loss over micro-batches of one batch is the
    sum of each micro-batch's ``Σ w·ℓ`` with the weights computed once over the whole
    batch — exact gradient accumulation for every aggregation:

    - token-mean: ``m / Σ m``;
    - sequence-mean-token-mean: ``m / (len_b · R)`` with ``R`` the rows holding a token;
    - seq-mean-token-sum: ``m / R``;  sequence-mean-token-scale: ``m / (norm · R)``.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(
            f"unknown loss aggregation {aggregation!r}; expected one of {sorted(AGGREGATIONS)}"
        )
    mask = mask.astype(bool)
    m = mask.astype(jnp.float32)
    rows = jnp.sum(_real_rows(mask), dtype=jnp.float32)
    if aggregation == "token-mean":
        return safe_div(m, jnp.sum(m))
    if aggregation == "sequence-mean-token-mean":
        lengths = jnp.sum(m, axis=-1, keepdims=True)
        return safe_div(m, lengths * rows)
    scale = 1.0 if aggregation == "seq-mean-token-sum" else (
        float(norm) if norm is not None else float(mask.shape[-1]))
    return safe_div(m, scale * rows)


# --------------------------------------------------------------------------- policy gradient


def clipped_surrogate_per_token(
    ratio: Array,
    advantages: Array,
    *,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    dual_clip: float | None = None,
) -> tuple[Array, Array, Array]:
    """The unreduced clipped surrogate of :func:`clipped_surrogate_loss`:
    ``(ℓ [B, T], clipped term active [B, T], dual clip active [B, T])``."""
    eps_high = eps_low if eps_high is None else eps_high
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (got {dual_clip}); it caps −c·A for A < 0")
    ratio = as_f32(ratio)
    adv = as_f32(advantages)
    adv = adv[:, None] if adv.ndim == 1 else adv
    unclipped = -adv * ratio
    clipped = -adv * jnp.clip(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = jnp.maximum(unclipped, clipped)
    dual_active = jnp.zeros_like(per_token, dtype=bool)
    if dual_clip is not None:
        cap = -dual_clip * adv
        dual_active = (adv < 0) & (per_token > cap)
        per_token = jnp.where(dual_active, cap, per_token)
    return per_token, clipped > unclipped, dual_active


def clipped_surrogate_loss(
    ratio: Array,
    advantages: Array,
    mask: Array,
    *,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    dual_clip: float | None = None,
    aggregation: str = "token-mean",
    norm: float | None = None,
) -> tuple[Array, Metrics]:
    """PPO clipped surrogate on importance ratios ``ratio`` ``[B, T]``.

    ``ℓ_t = max(−A·ρ_t, −A·clip(ρ_t, 1 − ε_low, 1 + ε_high))`` (``ε_high`` defaults to
    ``ε_low``; ε_high > ε_low is DAPO's clip-higher). With ``dual_clip = c > 1`` (Ye et al.
    2020) tokens with ``A < 0`` are further capped: ``ℓ_t = min(ℓ_t, −c·A)``.
    ``advantages`` is per sequence ``[B]`` or per token ``[B, T]``. Reduced by
    :func:`aggregate_token_loss`. Metrics (token means): loss, clip_fraction (clipped term
    active), dual_clip_fraction, ratio.
    """
    mask = mask.astype(bool)
    per_token, clipped_active, dual_active = clipped_surrogate_per_token(
        ratio, advantages, eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip
    )
    loss = aggregate_token_loss(per_token, mask, aggregation, norm=norm)
    tokens = jnp.sum(mask, dtype=jnp.float32)
    metrics = {
        "loss": loss,
        "clip_fraction": safe_div(masked_sum(clipped_active, mask), tokens),
        "dual_clip_fraction": safe_div(masked_sum(dual_active, mask), tokens),
        "ratio": safe_div(masked_sum(ratio, mask), tokens),
    }
    return loss, metrics


def policy_gradient_loss(
    logps: Array,
    old_logps: Array,
    advantages: Array,
    mask: Array,
    *,
    eps_low: float = 0.2,
    eps_high: float | None = None,
    dual_clip: float | None = None,
    aggregation: str = "token-mean",
    norm: float | None = None,
) -> tuple[Array, Metrics]:
    """GRPO/PPO policy loss with token ratios ``ρ_t = exp(logp_t − old_t)`` (old is
    stop-gradient); see :func:`clipped_surrogate_loss` for the objective and arguments.
    Adds metric approx_kl = token mean of ``(ρ − 1) − log ρ`` (k3 estimate of KL(old‖new))."""
    log_ratio = as_f32(logps) - jax.lax.stop_gradient(as_f32(old_logps))
    loss, metrics = clipped_surrogate_loss(
        jnp.exp(log_ratio), advantages, mask, eps_low=eps_low, eps_high=eps_high,
        dual_clip=dual_clip, aggregation=aggregation, norm=norm,
    )
    mask = mask.astype(bool)
    approx_kl = jnp.expm1(log_ratio) - log_ratio
    metrics["approx_kl"] = safe_div(masked_sum(approx_kl, mask), jnp.sum(mask, dtype=jnp.float32))
    return loss, metrics


def gspo_token_ratio(logps: Array, old_logps: Array, mask: Array) -> Array:
    """GSPO-token importance ratios ``[B, T]`` (Zheng et al. 2025).

    ``s_b = Σ_t m·(logp − old) / Σ_t m`` (sequence-level log-ratio);
    ``log ρ_t = logp_t − sg(logp_t) + sg(s_b)``, so ``ρ_t = exp(s_b)`` in value while
    ``∇ρ_t = exp(s_b)·∇logp_t``. Feed the result to :func:`clipped_surrogate_loss`.
    """
    mask = mask.astype(bool)
    logps = as_f32(logps)
    token_log_ratio = logps - jax.lax.stop_gradient(as_f32(old_logps))
    lengths = jnp.sum(mask, axis=-1, dtype=jnp.float32)
    sequence_log_ratio = safe_div(_row_sums(token_log_ratio, mask), lengths)
    stopped = jax.lax.stop_gradient
    return jnp.exp(logps - stopped(logps) + stopped(sequence_log_ratio)[:, None])


# --------------------------------------------------------------------------- KL and entropy


def _kl_k1(log_ratio: Array) -> Array:
    return log_ratio


def _kl_k3(log_ratio: Array) -> Array:
    # with log_ratio = logp − ref:  e^{ref − logp} − (ref − logp) − 1 ≥ 0
    return jnp.expm1(-log_ratio) + log_ratio


KL_ESTIMATORS: dict[str, Callable[[Array], Array]] = {"k1": _kl_k1, "k3": _kl_k3}


def kl_penalty(logps: Array, ref_logps: Array, estimator: str = "k3") -> Array:
    """Per-token estimate of KL(π ‖ π_ref) from sampled tokens (Schulman 2020), float32
    ``[B, T]`` (not reduced: it joins the per-token policy loss before aggregation).

    ``k1 = logp − ref``; ``k3 = e^{ref − logp} − (ref − logp) − 1`` (unbiased, ≥ 0).
    """
    try:
        estimate = KL_ESTIMATORS[estimator]
    except KeyError:
        raise ValueError(
            f"unknown KL estimator {estimator!r}; expected one of {sorted(KL_ESTIMATORS)}"
        ) from None
    return estimate(as_f32(logps) - as_f32(ref_logps))


def entropy_from_logits(logits: Array) -> Array:
    """Entropy of ``softmax(logits)`` per position, ``H = −Σ_v p_v·log p_v``, float32 ``[...]``
    for ``logits`` ``[..., V]``."""
    log_probs = jax.nn.log_softmax(as_f32(logits), axis=-1)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


# --------------------------------------------------------------------------- PPO critic


def gae(
    rewards: Array, values: Array, mask: Array, *, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Array, Array]:
    """Generalised advantage estimation (Schulman et al. 2016) over the real tokens of each row.

    ``δ_t = r_t + γ·V_{t'} − V_t``, ``A_t = δ_t + γλ·A_{t'}``, ``returns = A + V``, where
    ``t'`` is the row's next position with ``mask`` true (``V_{t'}`` and ``A_{t'}`` are 0
    past the row's last one). Positions with ``mask`` false are not time steps: the chain
    jumps over them. For right-padded rows that is the usual GAE; in a multi-turn episode
    (``mask`` = the model's own tokens) the observation between two turns is skipped, so the
    last token of a turn bootstraps from the value at the first token of the next turn — read
    after the observation — with one factor γ, and the episode's reward reaches every turn.
    ``rewards`` is float (e.g. the score on the last token minus β·KL per token). Returns
    float32 ``(advantages, returns)`` ``[B, T]``, 0 where ``mask`` is false.
    """
    mask = mask.astype(bool)
    rewards = jnp.where(mask, as_f32(rewards), 0.0)
    values = jnp.where(mask, as_f32(values), 0.0)

    def step(carry: tuple[Array, Array], inputs: tuple[Array, Array, Array]
             ) -> tuple[tuple[Array, Array], Array]:
        next_advantage, next_value = carry
        reward, value, real = inputs
        advantage = reward + gamma * next_value - value + gamma * lam * next_advantage
        # a masked-out position passes the next real token's (A, V) back unchanged
        return ((jnp.where(real, advantage, next_advantage), jnp.where(real, value, next_value)),
                jnp.where(real, advantage, 0.0))

    # scan runs over time (axis 0 after the transpose), from the last token backwards.
    zeros = jnp.zeros(rewards.shape[0], jnp.float32)
    _, advantages = jax.lax.scan(step, (zeros, zeros), (rewards.T, values.T, mask.T), reverse=True)
    advantages = advantages.T
    return advantages, jnp.where(mask, advantages + values, 0.0)


def masked_whiten(x: Array, mask: Array, *, shift_mean: bool = True, eps: float = 1e-8) -> Array:
    """``(x − μ) / sqrt(σ² + eps)`` with μ, σ² the mean and (population) variance over masked
    entries; ``shift_mean=False`` adds μ back (rescale only). 0 at masked-out positions."""
    mask = mask.astype(bool)
    x = as_f32(x)
    count = jnp.sum(mask, dtype=jnp.float32)
    mean = safe_div(masked_sum(x, mask), count)
    variance = safe_div(masked_sum(jnp.square(x - mean), mask), count)
    whitened = (x - mean) * jax.lax.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return jnp.where(mask, whitened, 0.0)


def value_loss_per_token(
    values: Array, old_values: Array, returns: Array, *, clip: float = 0.2
) -> tuple[Array, Array]:
    """The unreduced clipped value loss of :func:`value_loss`:
    ``(0.5·max((V − R)², (clip(V, V_old ± c) − R)²) [B, T], clipped term larger [B, T])``."""
    values, returns, old_values = as_f32(values), as_f32(returns), as_f32(old_values)
    clipped_values = jnp.clip(values, old_values - clip, old_values + clip)
    unclipped_error = jnp.square(values - returns)
    clipped_error = jnp.square(clipped_values - returns)
    return 0.5 * jnp.maximum(unclipped_error, clipped_error), clipped_error > unclipped_error


def value_loss(
    values: Array, old_values: Array, returns: Array, mask: Array, *, clip: float = 0.2
) -> tuple[Array, Metrics]:
    """Clipped value loss, token mean over ``mask``:
    ``L = mean_tok 0.5·max((V − R)², (clip(V, V_old − c, V_old + c) − R)²)``.
    Metrics: loss, clip_fraction (clipped term larger), values (mean V), returns (mean R)."""
    mask = mask.astype(bool)
    values, returns = as_f32(values), as_f32(returns)
    per_token, clipped_active = value_loss_per_token(values, old_values, returns, clip=clip)
    tokens = jnp.sum(mask, dtype=jnp.float32)
    loss = safe_div(masked_sum(per_token, mask), tokens)
    metrics = {
        "loss": loss,
        "clip_fraction": safe_div(masked_sum(clipped_active, mask), tokens),
        "values": safe_div(masked_sum(values, mask), tokens),
        "returns": safe_div(masked_sum(returns, mask), tokens),
    }
    return loss, metrics
