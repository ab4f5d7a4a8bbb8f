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
from tunix_dsl.models.chunked import chunked_logps, gather_logps, over_chunks
from tunix_dsl.models.kv_cache import init_cache
from tunix_dsl.models.transformer import Transformer
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


def completion_hidden(model: Transformer, batch: Batch, group: int = 1) -> Array:
    """Final hidden states `[N, C, D]` at the positions that predict the completion tokens.

    The forward runs over `tokens[:, :-1]`; its last C positions predict `tokens[:, -C:]`.
    With `group` G > 1 consecutive rows sharing one prompt (a rollout's G completions, see
    `rl_program.assemble`), the prompt runs once per group and its keys/values serve all
    G completions (`shared_prompt_hidden`): the same numbers for ~P·(G−1) fewer token rows
    of forward and backward.
    """
    rows = batch["tokens"].shape[0]
    if group > 1 and rows % group == 0:
        return shared_prompt_hidden(model, batch, group)
    completion = batch["completion_mask"].shape[1]
    hidden, _ = model.hidden(
        batch["tokens"][:, :-1],
        positions=batch["positions"][:, :-1],
        attention_mask=batch["attention_mask"][:, :-1],
    )
    return hidden[:, -completion:]


def shared_prompt_hidden(model: Any, batch: Batch, group: int) -> Array:
    """`completion_hidden` for rows whose prompts repeat in groups of `group`.

        prompts [N/G, P] ──forward, KV cache──▶ keys/values, last prompt state
                     each repeated G times ──▶ completions [N, C−1] attend to them

    The prompt's last state predicts the first completion token; completion tokens
    0..C−2 predict the rest. Gradients reach the prompt's forward through the shared
    keys/values (summed over the group), as they would through G separate copies.
    Real tokens see exactly the keys the full forward shows them (earlier real tokens of
    their own row), so their states are the full forward's up to rounding.
    """
    completion = batch["completion_mask"].shape[1]
    tokens, mask, positions = batch["tokens"], batch["attention_mask"], batch["positions"]
    prompt = tokens.shape[1] - completion
    cache = init_cache(model.cfg, batch=tokens.shape[0] // group, max_len=prompt + completion - 1)
    first = slice(None, None, group)  # one row per group
    prompt_hidden, out = model.hidden(tokens[first, :prompt], positions=positions[first, :prompt],
                                      attention_mask=mask[first, :prompt], cache=cache)
    last = jnp.repeat(prompt_hidden[:, -1:], group, axis=0)  # left padding: the last slot is real
    if completion == 1:
        return last
    hidden, _ = model.hidden(tokens[:, prompt:-1], positions=positions[:, prompt:-1],
                             attention_mask=mask[:, prompt:-1], cache=out.cache.repeat(group))
    return jnp.concatenate([last, hidden], axis=1)


def completion_targets(batch: Batch) -> Array:
    return batch["tokens"][:, -batch["completion_mask"].shape[1]:]


def token_terms(logits: Array, targets: Array, entropy_gradient: bool) -> tuple[Array, Array]:
    """(log p(target), entropy) per token, float32, from `logits [.., V]`; the entropy carries
    no gradient unless `entropy_gradient` (a loss term, not a metric). The log-probs use
    `gather_logps`, the score program's own formula: at equal weights the update's
    log-probs equal the scored ones bit for bit (a KL to an unmoved reference is exactly 0)."""
    logits = logits.astype(jnp.float32)
    logps = gather_logps(logits, targets)
    log_probs = jax.nn.log_softmax(logits if entropy_gradient else jax.lax.stop_gradient(logits), axis=-1)
    return logps, -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


def completion_terms(model: Transformer, batch: Batch, chunk: int, group: int = 1,
                     entropy_gradient: bool = False) -> tuple[Array, Array]:
    """(log π(completion token), entropy) `[N, C]` float32, 0 where the completion mask is off.

    The output head runs over `chunk`-token slices of the completion (`models.chunked`), so
    `[N, C, V]` float32 logits never exist at once; the backward recomputes each slice."""
    fn = lambda h, y: token_terms(model.unembed(h), y, entropy_gradient)  # noqa: E731
    logps, entropy = over_chunks(fn, chunk, completion_hidden(model, batch, group), completion_targets(batch))
    mask = batch["completion_mask"]
    return jnp.where(mask, logps, 0.0), jnp.where(mask, entropy, 0.0)


def completion_logps(model: Transformer, batch: Batch, chunk: int, group: int = 1) -> Array:
    """log π(completion token) `[N, C]` float32 (0 where the completion mask is off), the
    output head over `chunk`-token slices."""
    logps = chunked_logps(model.unembed, completion_hidden(model, batch, group), completion_targets(batch), chunk)
    return jnp.where(batch["completion_mask"], logps, 0.0)


def masked_total(x: Array, mask: Array) -> Array:
    return jnp.sum(jnp.where(mask, x.astype(jnp.float32), 0.0))


def ratio_of_sums(sums: Sums, names: tuple[str, ...], denominator: str) -> Metrics:
    """`sums[name] / sums[denominator]` for every name (0 on an empty denominator)."""
    d = sums[denominator]
    return {n: jnp.where(d > 0, sums[n] / jnp.where(d > 0, d, 1.0), 0.0) for n in names}
