"""The `kto` step: four forwards in one program, top to bottom.

The policy and the frozen reference each score the rows' completions and the mismatched
completions (`kl_*`, for the reference point z); `tnx_kto.loss` turns the sequence
log-probs into the loss. With LoRA and the reference left at the policy's start, the
reference is the policy's base with its adapters off: no second copy of the weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from tnx_kto.loss import kto_from_sums, kto_sums
from tunix_dsl.compiler import losses
from tunix_dsl.compiler.stages.base import (
    Container,
    StageLoss,
    StageModels,
    forward_hidden,
    loss_chunk,
    policy_and_reference,
    reference_of,
    trainable_filter,
)


def _sequence_logps(model: Any, batch: Mapping[str, jax.Array], prefix: str, chunk: int) -> jax.Array:
    """[B] completion log-probs summed over the `prefix` sequences' loss-masked tokens."""
    hidden, _ = forward_hidden(model, batch, prefix)
    mask = batch[prefix + "loss_mask"]
    token_logps = losses.chunked_token_logps(hidden, model.unembed, batch[prefix + "targets"],
                                             mask, chunk=chunk)
    return losses.sequence_logps(token_logps, mask)


def build(config: Any, models: StageModels) -> StageLoss:
    chunk = loss_chunk(config, models.models["policy"])

    def reference(modules: Container, batch: Mapping[str, jax.Array], prefix: str) -> jax.Array:
        return reference_of(modules, lambda model: _sequence_logps(model, batch, prefix, chunk))

    def micro_sums(modules: Container, mb: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        real = jnp.sum(mb["loss_mask"], axis=-1) > 0  # padding rows of an eval batch have none
        return kto_sums(
            _sequence_logps(modules.policy, mb, "", chunk), reference(modules, mb, ""),
            jax.lax.stop_gradient(_sequence_logps(modules.policy, mb, "kl_", chunk)),
            reference(modules, mb, "kl_"), mb["label"], real, beta=float(config.beta),
            desirable_weight=float(config.desirable_weight),
            undesirable_weight=float(config.undesirable_weight))

    def counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        return {"examples": jnp.sum(jnp.sum(batch["loss_mask"], axis=-1) > 0, dtype=jnp.float32)}

    return StageLoss(
        modules=policy_and_reference(models),
        trainable=trainable_filter("policy", models.lora),
        counts=counts,
        micro_sums=micro_sums,
        from_sums=kto_from_sums,
    )
