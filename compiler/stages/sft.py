"""pretrain and sft: next-token cross-entropy.

pretrain trains on every token of a text; sft on completion tokens only (the
data layer masks the prompt). Both use the global-batch token mean:

    loss = Σ_{micro-batches} Σ_tokens mask·nll  /  Σ_{global batch} mask

so gradient accumulation gives exactly the big-batch gradient.
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
    trainable_filter,
)
from tunix_dsl.schemas.stages import PretrainConfig, SFTConfig


def token_counts(batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
    return {"tokens": jnp.sum(batch["loss_mask"], dtype=jnp.float32)}


def lm_sums_fn(chunk: int):
    """Cross-entropy sums of one micro-batch, the output head run over `chunk`-token slices."""

    def lm_sums(modules: Container, mb: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        hidden, _ = forward_hidden(modules.model, mb)
        return losses.sft_sums_chunked(hidden, modules.model.unembed, mb["targets"],
                                       mb["loss_mask"], chunk=chunk)

    return lm_sums


def build(config: PretrainConfig | SFTConfig, models: StageModels) -> StageLoss:
    model = models.models["model"]
    return StageLoss(
        modules=Container(model=model),
        trainable=trainable_filter("model", models.lora),
        counts=token_counts,
        micro_sums=lm_sums_fn(loss_chunk(config, model)),
        from_sums=losses.sft_from_sums,
    )
