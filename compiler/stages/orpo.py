"""orpo: odds-ratio preference optimisation (reference-free).

With length-averaged completion log-probs l_c, l_r of chosen and rejected:

    log_odds = (l_c − l_r) − [log(1 − e^{l_c}) − log(1 − e^{l_r})]
    loss     = NLL(chosen completion tokens, token mean) + λ·mean_pairs(−log σ(log_odds))

Chosen and rejected sequences share one forward.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial

import jax
import jax.numpy as jnp

from tunix_dsl.compiler import losses
from tunix_dsl.compiler.stages.base import (
    Container,
    StageLoss,
    StageModels,
    forward_hidden,
    loss_chunk,
    trainable_filter,
)
from tunix_dsl.compiler.stages.dpo import pair_batch, real_pairs
from tunix_dsl.schemas.stages import ORPOConfig


def counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    return {
        "tokens": jnp.sum(batch["chosen_loss_mask"], dtype=jnp.float32),
        "pairs": jnp.asarray(batch["chosen_tokens"].shape[0], jnp.float32),
    }


def micro_sums_fn(chunk: int):
    def micro_sums(modules: Container, mb: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        both = pair_batch(mb)
        hidden, _ = forward_hidden(modules.policy, both)
        token_logps = losses.chunked_token_logps(hidden, modules.policy.unembed, both["targets"],
                                                 both["loss_mask"], chunk=chunk)
        half = token_logps.shape[0] // 2
        return losses.orpo_sums(
            token_logps[:half], mb["chosen_loss_mask"], token_logps[half:], mb["rejected_loss_mask"],
            pair_mask=real_pairs(mb),
        )

    return micro_sums


def build(config: ORPOConfig, models: StageModels) -> StageLoss:
    return StageLoss(
        modules=Container(policy=models.models["policy"]),
        trainable=trainable_filter("policy", models.lora),
        counts=counts,
        micro_sums=micro_sums_fn(loss_chunk(config, models.models["policy"])),
        from_sums=partial(losses.orpo_from_sums, lam=float(config.lambda_)),
    )

