"""dpo: direct preference optimisation.

Per pair, with sequence log-probs summed over completion tokens:

    Δ    = (π_chosen − ref_chosen) − (π_rejected − ref_rejected)
    loss = −[(1 − ls)·log σ(βΔ) + ls·log σ(−βΔ)]          (mean over pairs)

Chosen and rejected sequences share one forward (concatenated on the batch
axis). The reference forward runs in the same program with no gradient; with
LoRA and a reference equal to the policy's starting model it is the policy's
base with adapters switched off, so no second copy of the weights exists.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp

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
from tunix_dsl.models.transformer import Transformer
from tunix_dsl.schemas.stages import DPOConfig


def pair_batch(mb: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    """Stack chosen over rejected: arrays [2B, T], chosen first."""
    names = ("tokens", "targets", "loss_mask", "attention_mask", "positions")
    return {n: jnp.concatenate([mb["chosen_" + n], mb["rejected_" + n]]) for n in names}


def sequence_logps(model: Transformer, both: Mapping[str, jax.Array], chunk: int) -> tuple[jax.Array, jax.Array]:
    """Summed completion log-probs of the chosen and rejected halves (the output head over
    `chunk`-token slices of the sequence)."""
    hidden, _ = forward_hidden(model, both)
    # The mask zeroes padded positions before the log-softmax: NaN-free gradients there.
    token_logps = losses.chunked_token_logps(hidden, model.unembed, both["targets"],
                                             both["loss_mask"], chunk=chunk)
    seq = losses.sequence_logps(token_logps, both["loss_mask"])
    half = seq.shape[0] // 2
    return seq[:half], seq[half:]


def real_pairs(mb: Mapping[str, jax.Array]) -> jax.Array:
    """[B] bool: pairs with a completion (padding rows of an eval batch have none)."""
    return jnp.sum(mb["chosen_loss_mask"], axis=-1) > 0


def pair_counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    return {"pairs": jnp.asarray(batch["chosen_tokens"].shape[0], jnp.float32)}


def build(config: DPOConfig, models: StageModels) -> StageLoss:
    beta = float(config.beta)
    label_smoothing = float(config.label_smoothing)
    chunk = loss_chunk(config, models.models["policy"])

    def micro_sums(modules: Container, mb: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        both = pair_batch(mb)
        chosen, rejected = sequence_logps(modules.policy, both, chunk)
        ref_chosen, ref_rejected = reference_of(modules, lambda model: sequence_logps(model, both, chunk))
        return losses.dpo_sums(
            chosen, rejected, ref_chosen, ref_rejected, beta=beta, label_smoothing=label_smoothing,
            pair_mask=real_pairs(mb),
        )

    return StageLoss(
        modules=policy_and_reference(models),
        trainable=trainable_filter("policy", models.lora),
        counts=pair_counts,
        micro_sums=micro_sums,
        from_sums=losses.dpo_from_sums,
    )

