"""Numerical building blocks shared by the loss modules (float32, mask-safe, jit-friendly)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from tunix_dsl.models.chunked import over_chunks

Unembed = Callable[[jax.Array], jax.Array]  # final hidden [B,c,D] -> logits [B,c,V]

Array = jax.Array

# log1mexp clamps its argument here: a (length-averaged) log-prob that rounds to 0 would make
# log(1 − e^x) = −inf. The clamp treats probabilities within ~1e-6 of 1 as 1 − 1e-6.
_LOG_PROB_CEILING = -1e-6
_LN_HALF = -0.6931471805599453


def as_f32(x: Array) -> Array:
    """Upcast to float32 (bfloat16 activations in, float32 loss math out)."""
    return jnp.asarray(x).astype(jnp.float32)


def masked_sum(values: Array, mask: Array) -> Array:
    """``Σ values`` over positions where ``mask`` is True, as float32.

    Uses ``where`` rather than ``values * mask`` so NaN/inf at masked-out positions
    cannot leak into the sum.
    """
    return jnp.sum(jnp.where(mask.astype(bool), as_f32(values), 0.0))


def safe_div(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, or 0 where the denominator is 0 (e.g. an all-padding
    batch), without producing NaN in either the value or its gradient."""
    denominator = as_f32(denominator)
    nonzero = denominator != 0
    return jnp.where(nonzero, as_f32(numerator) / jnp.where(nonzero, denominator, 1.0), 0.0)


def token_logps(logits: Array, targets: Array, mask: Array | None = None) -> Array:
    """Per-token log-probability of the target: ``logits[..., y] − logsumexp(logits)``.

    ``logits`` ``[..., V]`` (any float dtype), ``targets`` ``[...]`` integer ids; returns
    float32 ``[...]``. One gather and one logsumexp — the log-softmax over the vocabulary is
    never materialised. Target ids outside ``[0, V)`` (padding labels such as -100) are
    clamped for the gather: such positions must be masked out by the caller.

    With ``mask`` (True = real token), logits at masked-out positions are replaced by 0 before
    any arithmetic, so NaN/inf there reach neither the values nor the gradients (the result
    is then ``−log V`` at those positions, to be masked out downstream).
    """
    logits = mask_logits(logits, mask)
    log_normalizer = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(
        logits, targets.astype(jnp.int32)[..., None], axis=-1, mode="clip"
    )[..., 0]
    return picked - log_normalizer


def chunked_token_logps(hidden: Array, unembed: Unembed, targets: Array, mask: Array, *,
                        chunk: int) -> Array:
    """``token_logps(unembed(hidden), targets, mask)`` ``[B, T]`` float32, with the output head
    and the log-softmax run over sequence chunks of ``chunk`` tokens (``models.chunked``):
    the ``[B, T, V]`` logits never exist at once, in the forward or the backward."""
    return over_chunks(lambda h, y, m: token_logps(unembed(h), y, m), chunk, hidden, targets,
                       mask.astype(bool))


def mask_logits(logits: Array, mask: Array | None) -> Array:
    """float32 ``logits`` with positions where ``mask`` is False set to 0 (a ``select``, so
    even NaN there gets an exact zero gradient)."""
    logits = as_f32(logits)
    if mask is None:
        return logits
    return jnp.where(mask.astype(bool)[..., None], logits, 0.0)


def log1mexp(x: Array) -> Array:
    """``log(1 − e^x)`` for ``x ≤ 0``, accurate at both ends (Mächler 2012):
    ``log(−expm1(x))`` for ``x > −log 2`` and ``log1p(−e^x)`` otherwise.

    ``x`` is clamped to ``≤ −1e-6`` so that a log-prob that rounds to 0 gives a finite value
    (≈ −13.8) and a finite gradient instead of −inf / NaN.
    """
    x = jnp.minimum(as_f32(x), _LOG_PROB_CEILING)
    # Both branches are finite for every clamped x, so where() cannot leak NaN gradients.
    return jnp.where(x > _LN_HALF, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def tie_aware_accuracy(winner: Array, loser: Array) -> Array:
    """1 where ``winner > loser``, ½ on an exact tie, 0 otherwise (float32).

    Ties count ½ so that an untrained policy (all rewards 0) reads as chance, 0.5.
    """
    winner, loser = as_f32(winner), as_f32(loser)
    return jnp.where(winner > loser, 1.0, jnp.where(winner == loser, 0.5, 0.0))
