"""ppo: proximal policy optimisation with a learned critic and GAE.

Per step (`compiler/rl_program.py` runs the programs; this file is the math):

1. rollout: one completion per prompt.
2. score, no gradients, one program: the policy's log-probs `old_t`, the
   reference's `ref_t` (β > 0; the LoRA base with adapters off when the reference
   is the policy's start) and the critic's values `V_t`.
3. host: the sequence reward r = Σ_i w_i·r_i.
4. update, μ passes in one program:

       r_t   = −β·KL_t(old ‖ ref) + r·[t = last]       (float32, per token)
       δ_t   = r_t + γ·V_{t+1} − V_t,   A_t = δ_t + γλ·A_{t+1},   R_t = A_t + V_t
       A     ← masked whitening of A                    (whiten_advantages)
       ℓ_t   = max(−A·ρ_t, −A·clip(ρ_t, 1 ± ε))                        policy
             + value_coef·0.5·max((V − R)², (clip(V, V_old ± c) − R)²)  critic
             − entropy_coef·H_t                                         entropy bonus
       loss  = token mean of ℓ over the rollout batch

The critic is a transformer trunk plus a scalar value head (zero-initialised):
a copy of the policy's starting weights, or the model named by `critic`. It
trains fully, at `critic_lr` when given. Its states, values and returns live on
the completion tokens: V_t is read where the policy predicts token t.

With an `environment` the completion is a multi-turn episode (`runtime/rl_agent.py`):
model turns with observations between them, `completion_mask` true on the model's own
tokens only. The critic reads the whole episode, but only model tokens are time steps:

- r_t, A_t, R_t and both losses live on model tokens; an observation token gets no
  reward, advantage, return, policy or value loss (its V is never read);
- "last" above is the episode's last model token: the episode's reward lands there;
- at an observation boundary the last token t of turn k bootstraps from the first token
  t' of turn k+1: δ_t = r_t + γ·V_{t'} − V_t, A_t = δ_t + γλ·A_{t'} (one factor γ, however
  long the observation). V_{t'} is read where the policy predicts t', i.e. after the whole
  observation, so the value target of turn k's end is the return of the episode's rest
  given what the environment answered (`losses_rl.gae` skips masked-out positions).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tunix_dsl.compiler import losses_rl
from tunix_dsl.compiler.optim import Schedule, build_optimizer, build_schedule
from tunix_dsl.compiler.rl_step import (
    Batch,
    RLStep,
    Sums,
    completion_hidden,
    completion_logps,
    completion_terms,
    masked_total,
    ratio_of_sums,
)
from tunix_dsl.compiler.stages.base import Container, StageModels, loss_chunk, trainable_filter
from tunix_dsl.compiler.stages.grpo import reference_logps
from tunix_dsl.models.transformer import Transformer
from tunix_dsl.schemas.stages import PPOConfig

METRICS = ("clip_fraction", "ratio", "approx_kl_old", "entropy", "policy_loss", "value_loss",
           "value_clip_fraction")


class Critic(nnx.Module):
    """A transformer trunk with a scalar value head on its final hidden states."""

    def __init__(self, trunk: Transformer):
        self.trunk = trunk
        d_model = trunk.cfg.d_model
        # zero-initialised: V = 0 everywhere at first, so early advantages are the rewards
        self.head = nnx.Param(jnp.zeros((d_model,), jnp.float32), out_sharding=("embed",), eager_sharding=False)
        self.bias = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, batch: Batch) -> jax.Array:
        """V_t `[N, C]` float32 on the completion tokens."""
        hidden = completion_hidden(self.trunk, batch).astype(jnp.float32)
        return hidden @ self.head[...] + self.bias[...]


def token_rewards(rewards: jax.Array, kl: jax.Array, mask: jax.Array, beta: float) -> jax.Array:
    """−β·KL on every trained token plus the sequence reward on the last one (float32): for an
    episode, the model's last token, however many observation tokens lie between its turns."""
    positions = jnp.arange(mask.shape[1])[None, :]
    last = positions == jnp.max(jnp.where(mask, positions, -1), axis=1, keepdims=True)
    return jnp.where(mask, -beta * kl + jnp.where(last, rewards[:, None].astype(jnp.float32), 0.0), 0.0)


def explained_variance(values: jax.Array, returns: jax.Array, mask: jax.Array) -> jax.Array:
    """1 − Var[R − V] / Var[R] over completion tokens (1: the critic predicts the returns)."""
    count = jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)

    def var(x: jax.Array) -> jax.Array:
        mean = jnp.sum(jnp.where(mask, x, 0.0)) / count
        return jnp.sum(jnp.where(mask, jnp.square(x - mean), 0.0)) / count

    total = var(returns)
    return jnp.where(total > 0, 1.0 - var(returns - values) / jnp.where(total > 0, total, 1.0), 0.0)


def build(config: PPOConfig, models: StageModels) -> RLStep:
    beta, estimator = float(config.beta), config.kl_estimator
    gamma, lam, eps = float(config.gamma), float(config.lam), float(config.epsilon)
    value_clip, value_coef, entropy_coef = float(config.value_clip), float(config.value_coef), float(config.entropy_coef)
    whiten = bool(config.whiten_advantages)
    chunk = loss_chunk(config, models.models["policy"])  # completion tokens per output-head slice

    def score(modules: Container, batch: Batch) -> dict[str, jax.Array]:
        out = {"old_logps": completion_logps(modules.policy, batch, chunk), "old_values": modules.critic(batch)}
        if beta > 0:
            out["ref_logps"] = reference_logps(modules, batch, chunk, 1)
        return out

    def prepare(batch: Batch) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
        mask = batch["completion_mask"]
        kl = (losses_rl.kl_penalty(batch["old_logps"], batch["ref_logps"], estimator) if beta > 0
              else jnp.zeros_like(batch["old_logps"]))
        rewards = token_rewards(batch["rewards"], kl, mask, beta)
        advantages, returns = losses_rl.gae(rewards, batch["old_values"], mask, gamma=gamma, lam=lam)
        tokens = jnp.maximum(jnp.sum(mask, dtype=jnp.float32), 1.0)
        metrics = {
            "advantage_mean": jnp.sum(advantages) / tokens,
            "advantage_std": jnp.sqrt(jnp.sum(jnp.where(mask, jnp.square(advantages - jnp.sum(advantages) / tokens),
                                                        0.0)) / tokens),
            "kl_ref": masked_total(kl, mask) / tokens,
            "explained_variance": explained_variance(batch["old_values"], returns, mask),
        }
        if whiten:
            advantages = losses_rl.masked_whiten(advantages, mask)
        weights = losses_rl.aggregation_weights(mask, "token-mean")
        return {**batch, "advantages": advantages, "returns": returns, "weights": weights}, metrics

    def micro_loss(modules: Container, mb: Batch) -> tuple[jax.Array, Sums]:
        mask = mb["completion_mask"]
        # the entropy bonus is a loss term: it keeps its gradient
        logps, entropy = completion_terms(modules.policy, mb, chunk, entropy_gradient=True)
        log_ratio = logps - mb["old_logps"]
        ratio = jnp.exp(log_ratio)
        policy, clipped, _ = losses_rl.clipped_surrogate_per_token(ratio, mb["advantages"], eps_low=eps)
        values = modules.critic(mb)
        value, value_clipped = losses_rl.value_loss_per_token(values, mb["old_values"], mb["returns"],
                                                              clip=value_clip)
        per_token = jnp.where(mask, policy + value_coef * value - entropy_coef * entropy, 0.0)
        loss = jnp.sum(per_token * mb["weights"])
        sg = jax.lax.stop_gradient
        sums = {
            "tokens": jnp.sum(mask, dtype=jnp.float32),
            "clip_fraction": masked_total(clipped, mask),
            "ratio": masked_total(sg(ratio), mask),
            "approx_kl_old": masked_total(sg(jnp.expm1(log_ratio) - log_ratio), mask),
            "entropy": masked_total(sg(entropy), mask),
            "policy_loss": masked_total(sg(policy), mask),
            "value_loss": masked_total(sg(value), mask),
            "value_clip_fraction": masked_total(value_clipped, mask),
        }
        return loss, sums

    def optimizer(policy_opt: optax.GradientTransformation, _schedule: Schedule) -> optax.GradientTransformation:
        """The critic at `critic_lr` (its own schedule of the same shape); the policy as configured."""
        if config.critic_lr is None:
            return policy_opt
        spec = config.optimizer.model_copy(update={"lr": float(config.critic_lr)})
        critic_opt = build_optimizer(spec, schedule=build_schedule(spec, int(config.steps) * int(config.iterations)))

        def labels(params: Any) -> Any:
            return jax.tree_util.tree_map_with_path(
                lambda path, _: "critic" if getattr(path[0], "key", None) == "critic" else "policy", params)

        return optax.multi_transform({"policy": policy_opt, "critic": critic_opt}, labels)

    policy = models.models["policy"]
    trunk = models.models.get("critic")
    container = Container(policy=policy, critic=Critic(trunk if trunk is not None else nnx.clone(policy)))
    if beta > 0 and not models.shared_reference:
        container.reference = models.models["reference"]
    return RLStep(
        modules=container,
        trainable=trainable_filter("policy", models.lora, extra=("critic",)),
        generations=1,
        iterations=int(config.iterations),
        score=score,
        prepare=prepare,
        micro_loss=micro_loss,
        finish=lambda sums: ratio_of_sums(sums, METRICS, "tokens"),
        optimizer=optimizer,
    )

