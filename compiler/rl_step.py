"""What an RL stage kind contributes to its three programs.

An RL stage (grpo.py, ppo.py) reads top to bottom as the whole algorithm. The
generic machinery — the rollout with the sampler, placing and jitting the
programs, the μ passes over micro-batches, the optimizer and `on_nonfinite` —
lives in `compiler/rl_program.py`. A kind supplies:

- `score(modules, batch) -> arrays`: the frozen forwards over a rollout (old-policy
  log-probs, reference log-probs, critic values), no gradients;
- `prepare(batch) -> (batch, metrics)`: once per rollout inside the update program,
  after the host rewards arrived: advantages and the per-token loss weights;
- `micro_loss(modules, micro) -> (loss, sums)`: the loss of one micro-batch, linear
  in its tokens (global normalisers come from `prepare`), so summing micro-batch
  gradients is exact; `sums` are additive metric numerators;
- `finish(sums) -> metrics`: the logged metrics from the summed sums.

A rollout batch holds, for N = prompts × generations rows, the prompt
(left-padded) followed by the completion (right-padded): `tokens`,
`attention_mask`, `positions` `[N, P + C]`, `completion_mask` `[N, C]`, and
after the host step `rewards` `[N]` float32.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tunix_dsl.compiler.optim import Schedule
from tunix_dsl.models.transformer import Transformer, gather_logps
from tunix_dsl.schemas.stages import RLTrainingConfig, TrainingConfig

if TYPE_CHECKING:  # the stage modules import this one to register: no import back at run time
    from tunix_dsl.compiler.stages.base import StageModels

Array = jax.Array
Batch = Mapping[str, Array]
Sums = dict[str, Array]
Metrics = dict[str, Array]


@dataclass(frozen=True)
class RLStep:
    """An RL stage kind's math, ready for `compiler.rl_program.lower_rl_stage`."""

    modules: nnx.Module  # container holding every model of the stage
    trainable: Any  # nnx filter of the parameters that train
    generations: int  # completions per prompt (they share the prompt's prefill)
    iterations: int  # μ: optimizer updates per rollout
    score: Callable[[Any, Batch], dict[str, Array]]  # (the stage's Container, batch)
    prepare: Callable[[Batch], tuple[dict[str, Array], Metrics]]
    micro_loss: Callable[[Any, Batch], tuple[Array, Sums]]
    finish: Callable[[Sums], Metrics]
    # Per-parameter optimizer (e.g. PPO's critic at its own learning rate); None: the stage's.
    optimizer: Callable[[optax.GradientTransformation, Schedule], optax.GradientTransformation] | None = None


# An RL kind's `build(config, models) -> RLStep`, named lazily by its `StageKind.lowering`
# (`program = "rl"`): the math; schema and data layout live in the `StageKind`.
# The RL kinds' schemas share `RLTrainingConfig`: what the generic RL lowering, planning and
# runtime read. A kind's own build takes its own class.
RLConfig = RLTrainingConfig


def rl_config(config: TrainingConfig) -> RLConfig:
    """A stage's config as an RL kind's (only kinds with `program = "rl"` reach the RL lowering)."""
    assert isinstance(config, RLTrainingConfig), f"not an RL stage: {type(config).__name__}"
    return config


BuildRL = Callable[[Any, "StageModels"], RLStep]


def completion_hidden(model: Transformer, batch: Batch) -> Array:
    """Final hidden states `[N, C, D]` at the positions that predict the completion tokens.

    The forward runs over `tokens[:, :-1]`; its last C positions predict `tokens[:, -C:]`.
    """
    completion = batch["completion_mask"].shape[1]
    hidden, _ = model.hidden(
        batch["tokens"][:, :-1],
        positions=batch["positions"][:, :-1],
        attention_mask=batch["attention_mask"][:, :-1],
    )
    return hidden[:, -completion:]


def completion_targets(batch: Batch) -> Array:
    return batch["tokens"][:, -batch["completion_mask"].shape[1]:]


def completion_logits(model: Transformer, batch: Batch) -> Array:
    """Logits `[N, C, V]` over the completion only: the prompt's positions never reach the
    output head."""
    return model.unembed(completion_hidden(model, batch))


def completion_logps(model: Transformer, batch: Batch) -> Array:
    """log π(completion token) `[N, C]` float32 (0 where the completion mask is off)."""
    logps = gather_logps(completion_logits(model, batch), completion_targets(batch))
    return jnp.where(batch["completion_mask"], logps, 0.0)


def masked_total(x: Array, mask: Array) -> Array:
    return jnp.sum(jnp.where(mask, x.astype(jnp.float32), 0.0))


def ratio_of_sums(sums: Sums, names: tuple[str, ...], denominator: str) -> Metrics:
    """`sums[name] / sums[denominator]` for every name (0 on an empty denominator)."""
    d = sums[denominator]
    return {n: jnp.where(d > 0, sums[n] / jnp.where(d > 0, d, 1.0), 0.0) for n in names}
