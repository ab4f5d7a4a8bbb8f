"""Loss math for the supervised stage kinds (DESIGN.md §6), as pure functions.

Every loss returns ``(loss, metrics)``: a float32 scalar and a ``dict[str, jax.Array]``
of float32 scalars. Inputs may be bfloat16; all arithmetic is done in float32. Masks are
``[B, T]`` (bool or 0/1; True = a token that counts). Positions where the mask is False may
hold anything — garbage logits, out-of-range target ids such as ``-100`` — and are never
counted: they are removed with ``jnp.where`` (not multiplied by 0, which keeps NaN·0 = NaN).

Exact gradient accumulation. A loss that is a mean over the *global* batch is a ratio of
sums, so each family also has a ``*_sums`` form returning a dict of additive numerators and
counts (``tokens`` and/or ``pairs``), and a ``*_from_sums`` form turning totals into
``(loss, metrics)``. To accumulate over micro-batches: compute the global counts from the
masks first, then per micro-batch differentiate ``*_from_sums`` of the micro-batch's sums
with their counts replaced by the global ones (what ``compiler/train_step.py`` does);
the gradients add up to the gradient of the global-batch loss, because ``*_from_sums`` is
linear in the numerators once the counts are fixed. Add the micro-batch sums and call
``*_from_sums`` once more for the logged metrics.

The RL losses (GRPO, GSPO, PPO) live in ``compiler/losses_rl.py`` and are re-exported here.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from tunix_dsl.compiler.losses_common import (
    Unembed,
    as_f32,
    chunked_token_logps,
    log1mexp,
    mask_logits,
    masked_sum,
    safe_div,
    tie_aware_accuracy,
    token_logps,
)
from tunix_dsl.compiler.losses_distill import (
    attention_transfer_from_sums,
    attention_transfer_loss,
    attention_transfer_sums,
    feature_projection_from_sums,
    feature_projection_loss,
    feature_projection_sums,
    init_feature_projection,
    logit_distill_from_sums,
    logit_distill_loss,
    logit_distill_sums,
    logit_distill_sums_chunked,
    pool_heads,
    uniform_layer_map,
)
from tunix_dsl.compiler.losses_rl import (
    AGGREGATIONS,
    KL_ESTIMATORS,
    aggregate_token_loss,
    clipped_surrogate_loss,
    entropy_from_logits,
    gae,
    group_advantages,
    gspo_token_ratio,
    kl_penalty,
    masked_whiten,
    policy_gradient_loss,
    value_loss,
)
from tunix_dsl.models.chunked import over_chunks

Array = jax.Array
Metrics = dict[str, Array]

__all__ = [
    "AGGREGATIONS",
    "KL_ESTIMATORS",
    "add_sums",
    "aggregate_token_loss",
    "attention_transfer_from_sums",
    "attention_transfer_loss",
    "attention_transfer_sums",
    "chunked_token_logps",
    "clipped_surrogate_loss",
    "dpo_from_sums",
    "dpo_loss",
    "dpo_loss_sum",
    "dpo_sums",
    "entropy_from_logits",
    "feature_projection_from_sums",
    "feature_projection_loss",
    "feature_projection_sums",
    "gae",
    "group_advantages",
    "gspo_token_ratio",
    "init_feature_projection",
    "kl_penalty",
    "log1mexp",
    "mask_logits",
    "logit_distill_from_sums",
    "logit_distill_loss",
    "logit_distill_sums",
    "logit_distill_sums_chunked",
    "masked_sum",
    "masked_whiten",
    "pool_heads",
    "mean_sequence_logps",
    "orpo_from_sums",
    "orpo_loss",
    "orpo_sums",
    "policy_gradient_loss",
    "safe_div",
    "sequence_logps",
    "sft_from_sums",
    "sft_loss",
    "sft_loss_sum",
    "sft_sums",
    "sft_sums_chunked",
    "token_logps",
    "uniform_layer_map",
    "value_loss",
]


# --------------------------------------------------------------------------- SFT / pretrain


def sft_sums(logits: Array, targets: Array, mask: Array) -> Metrics:
    """Additive pieces of the next-token cross-entropy over masked tokens.

    ``nll_sum = Σ_{b,t} m·(−log p(y_bt))``, ``tokens = Σ m``,
    ``correct = Σ m·[argmax_v logits_btv == y_bt]``.
    ``logits`` is ``[B, T, V]`` already aligned with ``targets`` ``[B, T]`` (shifting is the
    caller's job).
    """
    mask = mask.astype(bool)
    return _sft_totals(*_sft_token_terms(logits, targets, mask), mask)


def sft_sums_chunked(hidden: Array, unembed: Unembed, targets: Array, mask: Array, *,
                     chunk: int) -> Metrics:
    """``sft_sums(unembed(hidden), targets, mask)`` with the output head, log-softmax and
    argmax run over sequence chunks of ``chunk`` tokens: ``hidden`` ``[B, T, D]`` final
    hidden states; the ``[B, T, V]`` logits never exist at once."""
    mask = mask.astype(bool)
    token_loss, correct = over_chunks(lambda h, y, m: _sft_token_terms(unembed(h), y, m), chunk,
                                      hidden, targets, mask)
    return _sft_totals(token_loss, correct, mask)


def _sft_token_terms(logits: Array, targets: Array, mask: Array) -> tuple[Array, Array]:
    """Per token: (−log p(y), argmax == y), both [B, T]."""
    logits = mask_logits(logits, mask)
    return -token_logps(logits, targets), jnp.argmax(logits, axis=-1) == targets


def _sft_totals(nll: Array, correct: Array, mask: Array) -> Metrics:
    return {
        "nll_sum": masked_sum(nll, mask),
        "tokens": jnp.sum(mask, dtype=jnp.float32),
        "correct": jnp.sum(correct & mask, dtype=jnp.float32),
    }


def sft_from_sums(sums: Mapping[str, Array]) -> tuple[Array, Metrics]:
    """``loss = nll_sum / tokens`` (0 when there are no tokens); metrics
    loss, tokens, accuracy = correct / tokens, perplexity = exp(loss)."""
    loss = safe_div(sums["nll_sum"], sums["tokens"])
    metrics = {
        "loss": loss,
        "tokens": sums["tokens"],
        "accuracy": safe_div(sums["correct"], sums["tokens"]),
        "perplexity": jnp.exp(loss),
    }
    return loss, metrics


def sft_loss_sum(logits: Array, targets: Array, mask: Array) -> tuple[Array, Array]:
    """``(Σ m·(−log p(y)), Σ m)``: the sum of token NLLs and the token count, both float32.

    The global-batch token mean is ``Σ_micro nll_sum / Σ_micro count`` — not the mean of
    per-micro-batch means.
    """
    mask = mask.astype(bool)
    nll = -token_logps(logits, targets, mask)
    return masked_sum(nll, mask), jnp.sum(mask, dtype=jnp.float32)


def sft_loss(logits: Array, targets: Array, mask: Array) -> tuple[Array, Metrics]:
    """Token-mean next-token cross-entropy over the batch (pretrain: mask = real tokens;
    SFT: mask = completion tokens).

    ``L = Σ_{b,t} m_bt·(−log softmax(logits_bt)[y_bt]) / Σ_{b,t} m_bt``.
    Metrics: loss, tokens, accuracy (argmax == target on masked tokens), perplexity = e^L.
    """
    return sft_from_sums(sft_sums(logits, targets, mask))


# --------------------------------------------------------------------------- sequence log-probs


def sequence_logps(token_logps_: Array, mask: Array) -> Array:
    """Sum of per-token log-probs over the masked (completion) tokens: ``[B, T] -> [B]``."""
    return jnp.sum(jnp.where(mask.astype(bool), as_f32(token_logps_), 0.0), axis=-1)


def mean_sequence_logps(token_logps_: Array, mask: Array) -> Array:
    """Length-averaged sequence log-prob ``Σ_t m·logp / Σ_t m`` (0 for an empty row): ``[B]``."""
    length = jnp.sum(mask.astype(bool), axis=-1, dtype=jnp.float32)
    return safe_div(sequence_logps(token_logps_, mask), length)


def _pair_mask(reference: Array, pair_mask: Array | None) -> Array:
    if pair_mask is None:
        return jnp.ones(reference.shape, bool)
    return pair_mask.astype(bool)


# --------------------------------------------------------------------------- DPO


def dpo_sums(
    chosen_logps: Array,
    rejected_logps: Array,
    ref_chosen_logps: Array,
    ref_rejected_logps: Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    pair_mask: Array | None = None,
) -> Metrics:
    """Additive pieces of the DPO loss over real pairs (``pair_mask``, default all).

    Per pair: ``Δ = (πc − refc) − (πr − refr)``,
    ``ℓ = −[(1 − ls)·log σ(βΔ) + ls·log σ(−βΔ)]``, reward_c = β(πc − refc),
    reward_r = β(πr − refr), win = 1 if reward_c > reward_r, ½ on a tie, else 0.
    Returns ``loss_sum``, ``pairs``, ``reward_chosen_sum``, ``reward_rejected_sum``,
    ``correct``.
    """
    keep = _pair_mask(chosen_logps, pair_mask)
    chosen_reward = beta * (as_f32(chosen_logps) - as_f32(ref_chosen_logps))
    rejected_reward = beta * (as_f32(rejected_logps) - as_f32(ref_rejected_logps))
    scaled_margin = chosen_reward - rejected_reward  # = β·Δ
    per_pair = -(
        (1.0 - label_smoothing) * jax.nn.log_sigmoid(scaled_margin)
        + label_smoothing * jax.nn.log_sigmoid(-scaled_margin)
    )
    return {
        "loss_sum": masked_sum(per_pair, keep),
        "pairs": jnp.sum(keep, dtype=jnp.float32),
        "reward_chosen_sum": masked_sum(chosen_reward, keep),
        "reward_rejected_sum": masked_sum(rejected_reward, keep),
        "correct": masked_sum(tie_aware_accuracy(chosen_reward, rejected_reward), keep),
    }


def dpo_from_sums(sums: Mapping[str, Array]) -> tuple[Array, Metrics]:
    """Pair means of :func:`dpo_sums`: loss, rewards/chosen, rewards/rejected,
    rewards/margin = chosen − rejected, rewards/accuracy, pairs."""
    pairs = sums["pairs"]
    loss = safe_div(sums["loss_sum"], pairs)
    chosen = safe_div(sums["reward_chosen_sum"], pairs)
    rejected = safe_div(sums["reward_rejected_sum"], pairs)
    metrics = {
        "loss": loss,
        "rewards/chosen": chosen,
        "rewards/rejected": rejected,
        "rewards/margin": chosen - rejected,
        "rewards/accuracy": safe_div(sums["correct"], pairs),
        "pairs": pairs,
    }
    return loss, metrics


def dpo_loss_sum(
    chosen_logps: Array,
    rejected_logps: Array,
    ref_chosen_logps: Array,
    ref_rejected_logps: Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    pair_mask: Array | None = None,
) -> tuple[Array, Array]:
    """``(Σ_pairs ℓ, number of pairs)`` for exact accumulation; see :func:`dpo_loss`."""
    sums = dpo_sums(
        chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
        beta=beta, label_smoothing=label_smoothing, pair_mask=pair_mask,
    )
    return sums["loss_sum"], sums["pairs"]


def dpo_loss(
    chosen_logps: Array,
    rejected_logps: Array,
    ref_chosen_logps: Array,
    ref_rejected_logps: Array,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    pair_mask: Array | None = None,
) -> tuple[Array, Metrics]:
    """Direct Preference Optimization (Rafailov et al. 2023), conservative with ``ls`` > 0.

    Inputs are sequence log-probs ``[B]`` (sum over completion tokens, see
    :func:`sequence_logps`) of the policy and the frozen reference.
    ``Δ = (πc − refc) − (πr − refr)``;
    ``L = mean_pairs −[(1 − ls)·log σ(βΔ) + ls·log σ(−βΔ)]``.
    Metrics: loss, rewards/chosen = β(πc − refc), rewards/rejected = β(πr − refr),
    rewards/margin, rewards/accuracy (chosen reward > rejected reward; a tie counts ½, so
    reference == policy gives exactly 0.5 and loss log 2), pairs.
    """
    return dpo_from_sums(
        dpo_sums(
            chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps,
            beta=beta, label_smoothing=label_smoothing, pair_mask=pair_mask,
        )
    )


# --------------------------------------------------------------------------- ORPO


def orpo_sums(
    chosen_token_logps: Array,
    chosen_mask: Array,
    rejected_token_logps: Array,
    rejected_mask: Array,
    *,
    pair_mask: Array | None = None,
) -> Metrics:
    """Additive pieces of ORPO: ``nll_sum``/``tokens`` over chosen completion tokens of real
    pairs, and per pair (length-averaged log-probs ``lc``, ``lr``)
    ``log_odds = (lc − lr) − [log(1 − e^lc) − log(1 − e^lr)]``, ``or_sum = Σ −log σ(log_odds)``,
    ``log_odds_sum``, ``chosen_logps_sum``, ``rejected_logps_sum``, ``correct`` (lc > lr,
    tie ½), ``pairs``."""
    keep = _pair_mask(chosen_token_logps[..., 0], pair_mask)
    chosen_tokens = chosen_mask.astype(bool) & keep[:, None]
    mean_chosen = mean_sequence_logps(chosen_token_logps, chosen_mask)
    mean_rejected = mean_sequence_logps(rejected_token_logps, rejected_mask)
    log_odds = (mean_chosen - mean_rejected) - (log1mexp(mean_chosen) - log1mexp(mean_rejected))
    return {
        "nll_sum": masked_sum(-as_f32(chosen_token_logps), chosen_tokens),
        "tokens": jnp.sum(chosen_tokens, dtype=jnp.float32),
        "or_sum": masked_sum(-jax.nn.log_sigmoid(log_odds), keep),
        "log_odds_sum": masked_sum(log_odds, keep),
        "chosen_logps_sum": masked_sum(mean_chosen, keep),
        "rejected_logps_sum": masked_sum(mean_rejected, keep),
        "correct": masked_sum(tie_aware_accuracy(mean_chosen, mean_rejected), keep),
        "pairs": jnp.sum(keep, dtype=jnp.float32),
    }


def orpo_from_sums(sums: Mapping[str, Array], *, lam: float = 0.1) -> tuple[Array, Metrics]:
    """``L = nll_sum / tokens + λ · or_sum / pairs``; metrics loss, sft_loss, or_loss,
    log_odds, chosen_logps, rejected_logps (pair means of length-averaged log-probs),
    accuracy, tokens, pairs."""
    sft = safe_div(sums["nll_sum"], sums["tokens"])
    odds_ratio = safe_div(sums["or_sum"], sums["pairs"])
    loss = sft + lam * odds_ratio
    pairs = sums["pairs"]
    metrics = {
        "loss": loss,
        "sft_loss": sft,
        "or_loss": odds_ratio,
        "log_odds": safe_div(sums["log_odds_sum"], pairs),
        "chosen_logps": safe_div(sums["chosen_logps_sum"], pairs),
        "rejected_logps": safe_div(sums["rejected_logps_sum"], pairs),
        "accuracy": safe_div(sums["correct"], pairs),
        "tokens": sums["tokens"],
        "pairs": pairs,
    }
    return loss, metrics


def orpo_loss(
    chosen_token_logps: Array,
    chosen_mask: Array,
    rejected_token_logps: Array,
    rejected_mask: Array,
    *,
    lam: float = 0.1,
    pair_mask: Array | None = None,
) -> tuple[Array, Metrics]:
    """Odds Ratio Preference Optimization (Hong et al. 2024); no reference model.

    Inputs are per-token log-probs ``[B, T]`` of the chosen and rejected completions and
    their completion masks. With length-averaged log-probs ``lc``, ``lr`` (see
    :func:`mean_sequence_logps`):
    ``log_odds = (lc − lr) − [log1p(−e^lc) − log1p(−e^lr)]``, ``L_OR = −log σ(log_odds)``,
    ``L = L_SFT(chosen) + λ·mean_pairs L_OR`` where ``L_SFT`` is the token-mean NLL of the
    chosen completions. ``log1p(−e^x)`` is evaluated by :func:`log1mexp`, finite even when a
    log-prob rounds to 0. Metrics: see :func:`orpo_from_sums`.
    """
    sums = orpo_sums(
        chosen_token_logps, chosen_mask, rejected_token_logps, rejected_mask, pair_mask=pair_mask
    )
    return orpo_from_sums(sums, lam=lam)


def add_sums(parts: Sequence[Mapping[str, Array]]) -> Metrics:
    """Element-wise total of several ``*_sums`` dicts (e.g. over micro-batches)."""
    return {key: functools.reduce(jnp.add, (part[key] for part in parts)) for key in parts[0]}
