"""Distillation losses (DESIGN.md §6 "distill"): logit, attention transfer, feature projection.

Same conventions as ``compiler/losses.py`` (re-exported there): float32 math, masks
``[B, T]`` with True = real token, ``(loss, metrics)`` results, and ``*_sums`` /
``*_from_sums`` pairs for exact gradient accumulation. The teacher's tensors pass through
``jax.lax.stop_gradient``: the teacher never receives gradients.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

from tunix_dsl.compiler.losses_common import (
    Unembed,
    as_f32,
    mask_logits,
    masked_sum,
    safe_div,
    token_logps,
)
from tunix_dsl.models.chunked import over_chunks

Array = jax.Array
Metrics = dict[str, Array]


def _check_same_shape(where: str, student: Array, teacher: Array, fix: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(
            f"{where}: student shape {tuple(student.shape)} != teacher shape "
            f"{tuple(teacher.shape)}; {fix}"
        )


# --------------------------------------------------------------------------- logit distillation


def logit_distill_sums(
    student_logits: Array,
    teacher_logits: Array,
    labels: Array,
    mask: Array,
    *,
    temperature: float = 2.0,
) -> Metrics:
    """Additive pieces over real tokens: ``kl_sum = Σ m·KL(p_t^T ‖ p_s^T)`` with
    ``p^T = softmax(logits / T)``, ``ce_sum = Σ m·(−log softmax(s)[y])`` (temperature 1),
    ``tokens = Σ m``."""
    _check_same_shape(
        "logit_distill_loss", student_logits, teacher_logits,
        "teacher and student must share one vocabulary (same tokenizer and vocab size)",
    )
    mask = mask.astype(bool)
    kl_per_token, ce_per_token = _logit_distill_terms(
        student_logits, teacher_logits, labels, mask, temperature)
    return _logit_distill_totals(kl_per_token, ce_per_token, mask)


def logit_distill_sums_chunked(
    student_hidden: Array,
    student_unembed: Unembed,
    teacher_hidden: Array,
    teacher_unembed: Unembed,
    labels: Array,
    mask: Array,
    *,
    temperature: float = 2.0,
    chunk: int,
) -> Metrics:
    """``logit_distill_sums`` of ``student_unembed(student_hidden)`` and
    ``teacher_unembed(teacher_hidden)`` (final hidden states ``[B, T, D_s]``, ``[B, T, D_t]``),
    both output heads run over sequence chunks of ``chunk`` tokens: neither model's
    ``[B, T, V]`` logits exist at once."""
    mask = mask.astype(bool)

    def terms(h_s: Array, h_t: Array, y: Array, m: Array) -> tuple[Array, Array]:
        s_logits, t_logits = student_unembed(h_s), teacher_unembed(h_t)
        _check_same_shape(
            "logit_distill_loss", s_logits, t_logits,
            "teacher and student must share one vocabulary (same tokenizer and vocab size)",
        )
        return _logit_distill_terms(s_logits, t_logits, y, m, temperature)

    kl_per_token, ce_per_token = over_chunks(terms, chunk, student_hidden, teacher_hidden,
                                             labels, mask)
    return _logit_distill_totals(kl_per_token, ce_per_token, mask)


def _logit_distill_terms(student_logits: Array, teacher_logits: Array, labels: Array,
                         mask: Array, temperature: float) -> tuple[Array, Array]:
    """Per token [B, T]: KL(p_t^T ‖ p_s^T) and the student's CE at temperature 1."""
    student_logits = mask_logits(student_logits, mask)
    teacher_logits = jax.lax.stop_gradient(mask_logits(teacher_logits, mask))
    log_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
    log_teacher = jax.nn.log_softmax(teacher_logits / temperature, axis=-1)
    teacher_probs = jnp.exp(log_teacher)
    # p·(log p − log q) with the 0·log 0 = 0 convention (a teacher may put exactly 0 mass).
    kl_terms = jnp.where(teacher_probs > 0, teacher_probs * (log_teacher - log_student), 0.0)
    return jnp.sum(kl_terms, axis=-1), -token_logps(student_logits, labels)


def _logit_distill_totals(kl_per_token: Array, ce_per_token: Array, mask: Array) -> Metrics:
    return {
        "kl_sum": masked_sum(kl_per_token, mask),
        "ce_sum": masked_sum(ce_per_token, mask),
        "tokens": jnp.sum(mask, dtype=jnp.float32),
    }


def logit_distill_from_sums(
    sums: Mapping[str, Array], *, temperature: float = 2.0, alpha: float = 0.5
) -> tuple[Array, Metrics]:
    """``L = α·T²·kl_sum/tokens + (1 − α)·ce_sum/tokens``; metrics loss, kl, ce, tokens."""
    kl = safe_div(sums["kl_sum"], sums["tokens"])
    ce = safe_div(sums["ce_sum"], sums["tokens"])
    loss = alpha * temperature**2 * kl + (1.0 - alpha) * ce
    return loss, {"loss": loss, "kl": kl, "ce": ce, "tokens": sums["tokens"]}


def logit_distill_loss(
    student_logits: Array,
    teacher_logits: Array,
    labels: Array,
    mask: Array,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> tuple[Array, Metrics]:
    """Hinton et al. (2015) knowledge distillation on logits ``[B, T, V]``.

    ``L = α·T²·mean_tok KL(softmax(t/T) ‖ softmax(s/T)) + (1 − α)·mean_tok CE(s, y)``,
    both means over real tokens only (``mask``); padding and all-padding rows add nothing.
    The T² factor keeps the soft-target gradients on the CE scale as T grows.
    Metrics: loss, kl (unscaled, mean per token), ce, tokens.
    """
    sums = logit_distill_sums(
        student_logits, teacher_logits, labels, mask, temperature=temperature
    )
    return logit_distill_from_sums(sums, temperature=temperature, alpha=alpha)


# --------------------------------------------------------------------------- attention transfer


def uniform_layer_map(n_student_layers: int, n_teacher_layers: int) -> list[tuple[int, int]]:
    """Pair every student layer ``i`` with teacher layer ``⌈(i+1)·Lt/Ls⌉ − 1``: layers are
    spread evenly and the last student layer meets the last teacher layer
    (e.g. Ls=2, Lt=4 → [(0, 1), (1, 3)])."""
    if n_student_layers < 1 or n_teacher_layers < 1:
        raise ValueError(
            f"uniform_layer_map: need at least one layer on each side, got student "
            f"{n_student_layers}, teacher {n_teacher_layers}"
        )
    return [
        (i, -(-(i + 1) * n_teacher_layers // n_student_layers) - 1)
        for i in range(n_student_layers)
    ]


def pool_heads(teacher_attn: Array, n_heads: int) -> Array:
    """Average ``[B, Ht, T, T]`` teacher maps over consecutive groups of ``Ht / n_heads``
    heads → ``[B, n_heads, T, T]`` (head h of the student ↔ teacher heads
    ``h·g … h·g + g − 1``)."""
    batch, teacher_heads, queries, keys = teacher_attn.shape
    if teacher_heads % n_heads:
        raise ValueError(
            f"attention_transfer_loss: teacher has {teacher_heads} heads, not a multiple of the "
            f"student's {n_heads}; pick models whose head counts divide"
        )
    grouped = teacher_attn.reshape(batch, n_heads, teacher_heads // n_heads, queries, keys)
    return jnp.mean(grouped, axis=2)


def attention_transfer_sums(
    student_attn: Sequence[Array] | Array,
    teacher_attn: Sequence[Array] | Array,
    mask: Array,
    *,
    layer_map: Sequence[tuple[int, int]] | None = None,
    eps: float = 1e-8,
) -> Metrics:
    """Additive pieces: ``distance_sum = Σ (1 − cos)`` and ``cosine_sum`` over (mapped layer
    pair, student head, real query position), and ``rows`` = their count."""
    n_student, n_teacher = len(student_attn), len(teacher_attn)
    pairs = list(layer_map) if layer_map is not None else uniform_layer_map(n_student, n_teacher)
    query_mask = mask.astype(bool)[:, None, :]  # [B, 1, T] → broadcasts over heads
    distance_sum = cosine_sum = rows = jnp.float32(0.0)
    for student_layer, teacher_layer in pairs:
        if not (0 <= student_layer < n_student and 0 <= teacher_layer < n_teacher):
            raise ValueError(
                f"attention_transfer_loss: layer pair ({student_layer}, {teacher_layer}) is out "
                f"of range for {n_student} student and {n_teacher} teacher layers"
            )
        student = as_f32(student_attn[student_layer])  # [B, Hs, T, T]
        teacher = pool_heads(
            jax.lax.stop_gradient(as_f32(teacher_attn[teacher_layer])), student.shape[1]
        )
        _check_same_shape(
            "attention_transfer_loss", student, teacher,
            "student and teacher must see the same batch and sequence length",
        )
        dot = jnp.sum(student * teacher, axis=-1)
        norms = jnp.linalg.norm(student, axis=-1) * jnp.linalg.norm(teacher, axis=-1)
        cosine = dot / jnp.maximum(norms, eps)  # [B, Hs, T]
        row_mask = jnp.broadcast_to(query_mask, cosine.shape)
        distance_sum += masked_sum(1.0 - cosine, row_mask)
        cosine_sum += masked_sum(cosine, row_mask)
        rows += jnp.sum(row_mask, dtype=jnp.float32)
    return {"distance_sum": distance_sum, "cosine_sum": cosine_sum, "rows": rows}


def attention_transfer_from_sums(sums: Mapping[str, Array]) -> tuple[Array, Metrics]:
    """``L = distance_sum / rows``; metrics loss, cosine (mean), rows."""
    loss = safe_div(sums["distance_sum"], sums["rows"])
    return loss, {
        "loss": loss, "cosine": safe_div(sums["cosine_sum"], sums["rows"]), "rows": sums["rows"]
    }


def attention_transfer_loss(
    student_attn: Sequence[Array] | Array,
    teacher_attn: Sequence[Array] | Array,
    mask: Array,
    *,
    layer_map: Sequence[tuple[int, int]] | None = None,
    eps: float = 1e-8,
) -> tuple[Array, Metrics]:
    """Attention transfer: student attention maps match head-pooled teacher maps.

    ``student_attn[l]`` is ``[B, Hs, T, T]`` (probabilities, query × key) and
    ``teacher_attn[l]`` ``[B, Ht, T, T]`` with ``Ht`` a multiple of ``Hs`` — a sequence of
    per-layer arrays or one stacked ``[L, B, H, T, T]`` array. ``layer_map`` lists
    ``(student_layer, teacher_layer)`` pairs (default :func:`uniform_layer_map`). Teacher
    heads are averaged in consecutive groups (:func:`pool_heads`). For each pair, student
    head h and real query position q (``mask[b, q]``):
    ``d = 1 − ⟨a_s, a_t⟩ / (‖a_s‖·‖a_t‖)`` over the key axis; ``L`` = mean of d.
    Metrics: loss, cosine, rows.
    """
    return attention_transfer_from_sums(
        attention_transfer_sums(student_attn, teacher_attn, mask, layer_map=layer_map, eps=eps)
    )


# --------------------------------------------------------------------------- feature projection


def init_feature_projection(key: Array, d_student: int, d_teacher: int) -> Array:
    """A trainable ``[d_student, d_teacher]`` float32 kernel, N(0, 1/d_student) (LeCun)."""
    return jax.random.normal(key, (d_student, d_teacher), jnp.float32) / jnp.sqrt(d_student)


def feature_projection_sums(
    student_hidden: Array, teacher_hidden: Array, projection_kernel: Array, mask: Array
) -> Metrics:
    """``sq_err_sum = Σ_tokens m·mean_d (h_s W − h_t)²`` and ``tokens = Σ m``."""
    if student_hidden.shape[-1] != projection_kernel.shape[0] or (
        teacher_hidden.shape[-1] != projection_kernel.shape[-1]
    ):
        raise ValueError(
            f"feature_projection_loss: projection kernel {tuple(projection_kernel.shape)} must "
            f"map student width {student_hidden.shape[-1]} to teacher width "
            f"{teacher_hidden.shape[-1]}"
        )
    projected = as_f32(student_hidden) @ as_f32(projection_kernel)  # [B, T, Dt]
    target = jax.lax.stop_gradient(as_f32(teacher_hidden))
    per_token = jnp.mean(jnp.square(projected - target), axis=-1)
    mask = mask.astype(bool)
    return {"sq_err_sum": masked_sum(per_token, mask), "tokens": jnp.sum(mask, dtype=jnp.float32)}


def feature_projection_from_sums(sums: Mapping[str, Array]) -> tuple[Array, Metrics]:
    """``L = sq_err_sum / tokens``; metrics loss, tokens."""
    loss = safe_div(sums["sq_err_sum"], sums["tokens"])
    return loss, {"loss": loss, "tokens": sums["tokens"]}


def feature_projection_loss(
    student_hidden: Array, teacher_hidden: Array, projection_kernel: Array, mask: Array
) -> tuple[Array, Metrics]:
    """FitNets-style hint loss through a trainable projection (student width → teacher width).

    ``student_hidden`` ``[B, T, Ds]``, ``teacher_hidden`` ``[B, T, Dt]``, ``projection_kernel``
    ``[Ds, Dt]`` (see :func:`init_feature_projection`; it trains with the student).
    ``L = Σ_tokens m·mean_d (h_s W − h_t)² / Σ m`` — MSE averaged over feature dims and
    real tokens. Metrics: loss, tokens.
    """
    return feature_projection_from_sums(
        feature_projection_sums(student_hidden, teacher_hidden, projection_kernel, mask)
    )
