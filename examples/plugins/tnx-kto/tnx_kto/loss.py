"""The KTO loss (Ethayarajh et al., 2024, "KTO: Model Alignment as Prospect Theoretic
Optimization"), in the `*_sums` / `*_from_sums` form of tunix-dsl's losses.

For a row (x, y) with sequence log-probs summed over completion tokens:

    r   = log π(y|x) − log π_ref(y|x)                          (implied reward)
    z   = max(0, mean_j [log π(y'_j|x_j) − log π_ref(y'_j|x_j)])  (reference point)
    v   = λ_D·σ(β(r − z))   if y is desirable
          λ_U·σ(β(z − r))   if y is undesirable
    ℓ   = λ_y − v                                                (per row)
    L   = Σ_rows ℓ / rows

z estimates KL(π‖π_ref) from mismatched pairs (x_j with another row's completion y'_j)
and gets no gradient. It is computed per micro-batch: with `grad_accum = 1` the step is
exactly the formula above over the global batch; with more micro-batches each uses its own
batch estimate of z, as the paper's per-batch estimate does.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

Array = jax.Array


def kto_sums(logps: Array, ref_logps: Array, kl_logps: Array, kl_ref_logps: Array,
             desirable: Array, row_mask: Array, *, beta: float = 0.1,
             desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> dict[str, Array]:
    """Additive pieces of the loss over the real rows (`row_mask`) of one micro-batch.

    All inputs are `[B]`; `desirable` is 1.0 for desirable rows, 0.0 for undesirable ones.
    Returns loss_sum, examples, desirable, undesirable, reward_desirable_sum,
    reward_undesirable_sum (β·r sums) and kl_sum (z times the rows, for a row-weighted mean).
    """
    keep = row_mask.astype(jnp.float32)
    rows = jnp.sum(keep)
    r = logps.astype(jnp.float32) - ref_logps.astype(jnp.float32)
    mismatched = kl_logps.astype(jnp.float32) - kl_ref_logps.astype(jnp.float32)
    z = jax.lax.stop_gradient(jnp.maximum(jnp.sum(mismatched * keep) / jnp.maximum(rows, 1.0), 0.0))
    good = desirable.astype(jnp.float32)
    value = (good * desirable_weight * jax.nn.sigmoid(beta * (r - z))
             + (1.0 - good) * undesirable_weight * jax.nn.sigmoid(beta * (z - r)))
    weight = good * desirable_weight + (1.0 - good) * undesirable_weight
    reward = jax.lax.stop_gradient(beta * r)
    return {
        "loss_sum": jnp.sum((weight - value) * keep),
        "examples": rows,
        "desirable": jnp.sum(good * keep),
        "undesirable": jnp.sum((1.0 - good) * keep),
        "reward_desirable_sum": jnp.sum(reward * good * keep),
        "reward_undesirable_sum": jnp.sum(reward * (1.0 - good) * keep),
        "kl_sum": z * rows,
    }


def _div(a: Array, b: Array) -> Array:
    return jnp.where(b > 0, a / jnp.where(b > 0, b, 1.0), 0.0)


def kto_from_sums(sums: Mapping[str, Array]) -> tuple[Array, dict[str, Array]]:
    """Row mean of the loss; metrics loss, rewards/desirable and rewards/undesirable (mean β·r
    of each kind of row), kl (mean z), desirable, undesirable, examples."""
    loss = _div(sums["loss_sum"], sums["examples"])
    return loss, {
        "loss": loss,
        "rewards/desirable": _div(sums["reward_desirable_sum"], sums["desirable"]),
        "rewards/undesirable": _div(sums["reward_undesirable_sum"], sums["undesirable"]),
        "kl": _div(sums["kl_sum"], sums["examples"]),
        "desirable": sums["desirable"],
        "undesirable": sums["undesirable"],
        "examples": sums["examples"],
    }
