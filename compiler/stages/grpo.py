"""grpo: group relative policy optimisation and its variants (Dr. GRPO, DAPO, GSPO-token).

Per step (`compiler/rl_program.py` runs the programs; this file is the math):

1. rollout: B prompts, G completions each (one shared prefill per prompt).
2. score, no gradients, one program:
   - old-policy log-probs `old_t` — only when μ = `iterations` > 1 or the rollout is
     async (older weights generated it); with μ = 1 and a sync rollout the policy has not
     moved since the rollout, so `old = sg(logp)` inside the update (the first ratio is
     exactly 1, and a forward is saved);
   - reference log-probs `ref_t` — only when β > 0; with LoRA and a reference equal
     to the policy's start, the policy's base with its adapters off (no copy).
3. host: rewards r = Σ_i w_i·r_i (+ the overlong penalty, in tokens).
4. update, μ passes in one program:

       A     = (r − mean_g) / (std_g + 1e-6)          (dr-grpo: r − mean_g)
       ρ_t   = exp(logp_t − old_t)                     (gspo-token: exp(logp_t − sg(logp_t) + sg(s)),
                                                        s = masked mean of logp − old per sequence)
       ℓ_t   = max(−A·ρ_t, −A·clip(ρ_t, 1 − ε, 1 + ε_high))   (dual clip: min(ℓ_t, −c·A) for A < 0)
               + β·KL_t(π ‖ ref)                       (k1 or k3 estimator)
       loss  = Σ_t w_t·ℓ_t                             (w: the aggregation's per-token weights)

`loss` picks the advantage and the ratio, and the defaults of what the user left
unset: grpo — sequence-mean-token-mean; dr-grpo — no std division,
sequence-mean-token-scale (norm = max_new_tokens); dapo — token-mean and
ε_high = 0.28 (clip-higher); gspo-token — the sequence-level ratio. An explicit
`aggregation` or `epsilon_high` always wins.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tunix_dsl.compiler import losses_rl
from tunix_dsl.compiler.rl_step import (
    Batch,
    RLStep,
    Sums,
    completion_logps,
    completion_terms,
    masked_total,
    ratio_of_sums,
)
from tunix_dsl.compiler.stages.base import (
    Container,
    StageModels,
    loss_chunk,
    policy_and_reference,
    reference_of,
    trainable_filter,
)
from tunix_dsl.schemas.stages import GRPOConfig

# loss variant -> (divide advantages by the group std, default aggregation, default ε_high)
VARIANTS: dict[str, tuple[bool, str, float | None]] = {
    "grpo": (True, "sequence-mean-token-mean", None),
    "dr-grpo": (False, "sequence-mean-token-scale", None),
    "dapo": (True, "token-mean", 0.28),
    "gspo-token": (True, "sequence-mean-token-mean", None),
}

METRICS = ("clip_fraction", "dual_clip_fraction", "ratio", "approx_kl_old", "kl_ref", "entropy")


def effective(config: GRPOConfig) -> tuple[bool, str, float]:
    """(scale by std, aggregation, ε_high) after the loss variant's defaults."""
    scale_by_std, aggregation, eps_high = VARIANTS[config.loss]
    chosen = config.model_fields_set
    if "aggregation" in chosen:
        aggregation = config.aggregation
    if config.epsilon_high is not None:
        eps_high = config.epsilon_high
    return scale_by_std, aggregation, float(eps_high if eps_high is not None else config.epsilon)


def reference_logps(modules: Container, batch: Batch, chunk: int, group: int) -> jax.Array:
    return reference_of(modules, lambda model: completion_logps(model, batch, chunk, group))


def build(config: GRPOConfig, models: StageModels) -> RLStep:
    group = int(config.generations)
    mu = int(config.iterations)
    beta = float(config.beta)
    eps_low, dual_clip, estimator = float(config.epsilon), config.dual_clip, config.kl_estimator
    scale_by_std, aggregation, eps_high = effective(config)
    gspo = config.loss == "gspo-token"
    norm = float(config.max_new_tokens)
    chunk = loss_chunk(config, models.models["policy"])  # completion tokens per output-head slice

    # The behaviour policy's log-probs: after μ > 1 passes, or under async rollout (weights up
    # to `max_staleness` steps older than the update's), the policy is no longer the sampler.
    off_policy = mu > 1 or config.rollout == "async"

    def score(modules: Container, batch: Batch) -> dict[str, jax.Array]:
        out = {}
        if off_policy and "old_logps" not in batch:  # agent episodes bring the sampler's
            out["old_logps"] = completion_logps(modules.policy, batch, chunk, group)
        if beta > 0:
            out["ref_logps"] = reference_logps(modules, batch, chunk, group)
        return out

    def prepare(batch: Batch) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        advantages = losses_rl.group_advantages(batch["rewards"], group, scale_by_std=scale_by_std)
        weights = losses_rl.aggregation_weights(batch["completion_mask"], aggregation, norm=norm)
        metrics = {"advantage_mean": jnp.mean(advantages), "advantage_std": jnp.std(advantages)}
        return {**batch, "advantages": advantages, "weights": weights}, metrics

    def micro_loss(modules: Container, mb: Batch) -> tuple[jax.Array, Sums]:
        mask = mb["completion_mask"]
        logps, entropy = completion_terms(modules.policy, mb, chunk, group)  # entropy: a metric
        old = mb["old_logps"] if off_policy else jax.lax.stop_gradient(logps)
        token_log_ratio = logps - jax.lax.stop_gradient(old)
        ratio = losses_rl.gspo_token_ratio(logps, old, mask) if gspo else jnp.exp(token_log_ratio)
        per_token, clipped, dual = losses_rl.clipped_surrogate_per_token(
            ratio, mb["advantages"], eps_low=eps_low, eps_high=eps_high, dual_clip=dual_clip)
        kl = losses_rl.kl_penalty(logps, mb["ref_logps"], estimator) if beta > 0 else jnp.zeros_like(logps)
        per_token = jnp.where(mask, per_token + beta * kl, 0.0)
        loss = jnp.sum(per_token * mb["weights"])
        sg = jax.lax.stop_gradient
        sums = {
            "tokens": jnp.sum(mask, dtype=jnp.float32),
            "clip_fraction": masked_total(clipped, mask),
            "dual_clip_fraction": masked_total(dual, mask),
            "ratio": masked_total(sg(ratio), mask),
            "approx_kl_old": masked_total(sg(jnp.expm1(token_log_ratio) - token_log_ratio), mask),
            "kl_ref": masked_total(sg(kl), mask),
            "entropy": masked_total(entropy, mask),
        }
        return loss, sums

    return RLStep(
        modules=policy_and_reference(models, reference=beta > 0),
        trainable=trainable_filter("policy", models.lora),
        generations=group,
        iterations=mu,
        score=score,
        prepare=prepare,
        micro_loss=micro_loss,
        finish=lambda sums: ratio_of_sums(sums, METRICS, "tokens"),
    )

