"""The limit to reach: training steps a strong engineer writes by hand.

`jax.jit` + optax on the same model modules as ours (`tunix_dsl.models`),
parameters and optimizer state donated, the frozen weights (reference,
teacher, LoRA base) passed as plain arguments, and the same loss math written
directly — without the generic sums/counts plumbing, metrics or schedule
logging our compiled step carries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import _steps_common as common
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _steps_ours import ModelBank, with_lora
from flax import nnx

from tunix_dsl.models.lora import adapters_disabled

Batch = Mapping[str, jax.Array]


def forward(model: nnx.Module, b: Batch, prefix: str = "") -> jax.Array:
    return model(b[prefix + "tokens"], positions=b[prefix + "positions"],
                 attention_mask=b[prefix + "attention_mask"])


def target_logps(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log softmax(logits)[target] = logit[target] − logsumexp(logits)."""
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def sft_loss(m: nnx.Module, b: Batch) -> jax.Array:
    """Token mean of −log p(target) over the loss mask."""
    logps = target_logps(forward(m.policy, b), b["targets"])
    return -jnp.sum(logps * b["loss_mask"]) / jnp.sum(b["loss_mask"])


def _pair_logps(model: nnx.Module, both: Batch) -> tuple[jax.Array, jax.Array]:
    seq = jnp.sum(target_logps(forward(model, both), both["targets"]) * both["loss_mask"], -1)
    return jnp.split(seq, 2)


def dpo_loss(m: nnx.Module, b: Batch) -> jax.Array:
    """−mean log σ(β[(π_c − ref_c) − (π_r − ref_r)]), chosen and rejected in one forward."""
    names = ("tokens", "targets", "loss_mask", "attention_mask", "positions")
    both = {n: jnp.concatenate([b["chosen_" + n], b["rejected_" + n]]) for n in names}
    chosen, rejected = _pair_logps(m.policy, both)
    if hasattr(m, "reference"):
        ref_chosen, ref_rejected = _pair_logps(m.reference, both)
    else:
        with adapters_disabled(m.policy):
            ref_chosen, ref_rejected = _pair_logps(m.policy, both)
    margin = (chosen - jax.lax.stop_gradient(ref_chosen)) - (
        rejected - jax.lax.stop_gradient(ref_rejected))
    return -jnp.mean(jax.nn.log_sigmoid(common.DPO_BETA * margin))


def distill_loss(m: nnx.Module, b: Batch) -> jax.Array:
    """α·T²·KL(p_teacher^T ‖ p_student^T) + (1 − α)·CE, token means over the loss mask."""
    t, alpha = common.DISTILL_TEMPERATURE, common.DISTILL_ALPHA
    student = forward(m.student, b)
    teacher = jax.lax.stop_gradient(forward(m.teacher, b))
    log_s, log_t = jax.nn.log_softmax(student / t), jax.nn.log_softmax(teacher / t)
    kl = jnp.sum(jnp.exp(log_t) * (log_t - log_s), -1)
    ce = -target_logps(student, b["targets"])
    mask, tokens = b["loss_mask"], jnp.sum(b["loss_mask"])
    return (alpha * t * t * jnp.sum(kl * mask) + (1 - alpha) * jnp.sum(ce * mask)) / tokens


class Holder(nnx.Module):
    def __init__(self, **models: nnx.Module):
        for role, model in models.items():
            setattr(self, role, model)


class HandStep:
    """jit(loss, grads of the trainable params, clip + AdamW), params and opt state donated."""

    def __init__(self, modules: nnx.Module, loss: Callable[[nnx.Module, Batch], jax.Array],
                 trainable: Any, batch: dict[str, np.ndarray]):
        graphdef, params, frozen = nnx.split(modules, trainable, ...)
        tx = common.adamw(common.decays)

        @partial(jax.jit, donate_argnums=(0, 1))
        def step(params: nnx.State, opt_state: Any, frozen: nnx.State, batch: Batch,
                 ) -> tuple[nnx.State, Any, jax.Array]:
            value, grads = jax.value_and_grad(
                lambda p: loss(nnx.merge(graphdef, p, frozen), batch))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, value

        self.step, self.frozen = step, frozen
        self.params = jax.tree.map(jnp.copy, params)
        self.opt_state = jax.jit(tx.init)(self.params)
        self.batch = jax.device_put(batch)

    def __call__(self) -> jax.Array:
        self.params, self.opt_state, loss = self.step(
            self.params, self.opt_state, self.frozen, self.batch)
        jax.block_until_ready((self.params, self.opt_state, loss))
        return loss


def hand_steps(bank: ModelBank) -> dict[str, Callable[[], object]]:
    """name → blocking step, for the main table (same names as `_steps_ours.our_steps`)."""
    model, mesh = bank.model, bank.mesh
    lm, pairs = common.lm_batch(0), common.preference_batch(0)
    lora = nnx.LoRAParam
    return {
        "sft": HandStep(Holder(policy=model()), sft_loss, nnx.Param, lm),
        "sft lora": HandStep(Holder(policy=with_lora(model(), mesh)), sft_loss, lora, lm),
        "dpo": HandStep(Holder(policy=model(), reference=model()), dpo_loss,
                        nnx.All(nnx.Param, nnx.PathContains("policy")), pairs),
        "dpo lora": HandStep(Holder(policy=with_lora(model(), mesh)), dpo_loss, lora, pairs),
        "distill logit": HandStep(Holder(student=model(), teacher=model(1)), distill_loss,
                                  nnx.All(nnx.Param, nnx.PathContains("student")), lm),
    }
