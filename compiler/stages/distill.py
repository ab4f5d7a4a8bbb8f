"""distill: knowledge distillation from a frozen teacher into a student.

Teacher and student forwards live in the same step program; the teacher is
frozen (its parameters are not in the trainable set and its outputs pass
through `stop_gradient`). Strategies, all averaged over real tokens only:

- `logit`:   L = α·T²·KL(softmax(t/T) ‖ softmax(s/T)) + (1−α)·CE(s, y)
- `attention`: L = α·mean(1 − cos(a_s, pool(a_t))) + (1−α)·CE(s, y), student
  attention maps matched to teacher maps pooled to the student's head count,
  layers paired uniformly (`losses.uniform_layer_map`)
- `feature_projection`: L = α·MSE(h_s·W, h_t) + (1−α)·CE(s, y) with W a
  trainable projection from the student's width to the teacher's, trained
  with the student and dropped at hand-off.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from tunix_dsl.compiler import losses
from tunix_dsl.compiler.stages.base import (
    Container,
    StageLoss,
    StageModels,
    forward_hidden,
    loss_chunk,
    trainable_filter,
)
from tunix_dsl.compiler.stages.sft import token_counts
from tunix_dsl.compiler.train_step import FromSums
from tunix_dsl.models.transformer import Transformer
from tunix_dsl.schemas.stages import DistillConfig
from tunix_dsl.schemas.training import AttentionStrategy, FeatureProjectionStrategy, LogitStrategy

Sums = dict[str, jax.Array]


def _ce_sums(student: Transformer, hidden: jax.Array, mb: Mapping[str, jax.Array], chunk: int) -> Sums:
    """The student's cross-entropy sum, its output head over `chunk`-token slices."""
    sums = losses.sft_sums_chunked(hidden, student.unembed, mb["targets"], mb["loss_mask"],
                                   chunk=chunk)
    return {"ce_sum": sums["nll_sum"]}


def _mixed(alpha: float, key: str, count_key: str) -> Callable[[Sums], tuple[jax.Array, dict]]:
    """α·(strategy loss) + (1 − α)·CE from sums, for attention and feature strategies."""

    def from_sums(sums: Sums) -> tuple[jax.Array, dict]:
        strategy = losses.safe_div(sums[key], sums[count_key])
        ce = losses.safe_div(sums["ce_sum"], sums["tokens"])
        loss = alpha * strategy + (1.0 - alpha) * ce
        return loss, {"loss": loss, "strategy_loss": strategy, "ce": ce, "tokens": sums["tokens"]}

    return from_sums


class Projection(nnx.Module):
    """Trainable map from the student's hidden width to the teacher's."""

    def __init__(self, d_student: int, d_teacher: int, *, seed: int):
        key = jax.random.key(seed)
        self.kernel = nnx.Param(
            losses.init_feature_projection(key, d_student, d_teacher),
            out_sharding=("embed", None),
            eager_sharding=False,
        )


def build(config: DistillConfig, models: StageModels) -> StageLoss:
    student, teacher = models.models["student"], models.models["teacher"]
    strategy = config.strategy
    alpha = float(strategy.alpha)
    chunk = loss_chunk(config, student)
    modules = Container(student=student, teacher=teacher)
    extra: tuple[str, ...] = ()

    if isinstance(strategy, LogitStrategy):
        temperature = float(strategy.temperature)

        def micro_sums(m: Container, mb: Mapping[str, jax.Array]) -> Sums:
            student_hidden, _ = forward_hidden(m.student, mb)
            teacher_hidden = jax.lax.stop_gradient(forward_hidden(m.teacher, mb)[0])
            return losses.logit_distill_sums_chunked(
                student_hidden, m.student.unembed, teacher_hidden, m.teacher.unembed,
                mb["targets"], mb["loss_mask"], temperature=temperature, chunk=chunk,
            )

        def logit_from_sums(sums: Sums) -> tuple[jax.Array, dict]:
            return losses.logit_distill_from_sums(sums, temperature=temperature, alpha=alpha)

        from_sums: FromSums = logit_from_sums

        counts = token_counts

    elif isinstance(strategy, AttentionStrategy):
        n_student = student.cfg.n_layers
        layer_map = losses.uniform_layer_map(n_student, teacher.cfg.n_layers)
        student_heads = student.cfg.n_heads

        def micro_sums(m: Container, mb: Mapping[str, jax.Array]) -> Sums:
            hidden_s, out_s = forward_hidden(m.student, mb, return_attention=True)
            _, out_t = forward_hidden(m.teacher, mb, return_attention=True)
            attn = losses.attention_transfer_sums(
                out_s.attentions, jax.lax.stop_gradient(out_t.attentions),
                mb["attention_mask"], layer_map=layer_map,
            )
            return {**attn, **_ce_sums(m.student, hidden_s, mb, chunk),
                    "tokens": jnp.sum(mb["loss_mask"], dtype=jnp.float32)}

        def counts(batch: Mapping[str, jax.Array]) -> Sums:
            real_queries = jnp.sum(batch["attention_mask"], dtype=jnp.float32)
            return {**token_counts(batch), "rows": real_queries * student_heads * len(layer_map)}

        from_sums = _mixed(alpha, "distance_sum", "rows")

    elif isinstance(strategy, FeatureProjectionStrategy):
        modules.projection = Projection(
            student.cfg.d_model, teacher.cfg.d_model, seed=models.seed
        )
        extra = ("projection",)
        layer = int(strategy.layer)

        def micro_sums(m: Container, mb: Mapping[str, jax.Array]) -> Sums:
            final_s, out_s = forward_hidden(m.student, mb, return_hidden=True)
            _, out_t = forward_hidden(m.teacher, mb, return_hidden=True)
            feats = losses.feature_projection_sums(
                out_s.hidden_states[layer], jax.lax.stop_gradient(out_t.hidden_states[layer]),
                m.projection.kernel[...], mb["attention_mask"],
            )
            return {
                "sq_err_sum": feats["sq_err_sum"], "feature_tokens": feats["tokens"],
                **_ce_sums(m.student, final_s, mb, chunk),
                "tokens": jnp.sum(mb["loss_mask"], dtype=jnp.float32),
            }

        def counts(batch: Mapping[str, jax.Array]) -> Sums:
            return {
                **token_counts(batch),
                "feature_tokens": jnp.sum(batch["attention_mask"], dtype=jnp.float32),
            }

        from_sums = _mixed(alpha, "sq_err_sum", "feature_tokens")
    else:  # the checker only admits the strategies above
        raise ValueError(f"unknown distillation strategy {type(strategy).call_name!r}")

    return StageLoss(
        modules=modules,
        trainable=trainable_filter("student", models.lora, extra),
        counts=counts,
        micro_sums=micro_sums,
        from_sums=from_sums,
    )

