"""`tnx plan` for RL stages: one row per program (rollout, score, update), no weights allocated.

Each program is lowered exactly as for a run (`compiler/rl_program.py`) on
abstract inputs and compiled ahead of time: the rollout with its KV cache for
B·G rows of P + N tokens, the score program's frozen forwards, the update's μ
passes. XLA reports per-device bytes and FLOPs; the rollout's FLOPs count one
trip of its decode loop body (XLA's cost analysis does not multiply by a
while-loop's trip count), so they are a lower bound.

An agent stage's rollout is not that program but the episode's (`runtime/agent_plan.py`:
prefill, turn, append, with the KV cache at the episode's width); the runtime hands its
figures in as `rollout`, a `RolloutCost`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from tunix_dsl.compiler import sharding
from tunix_dsl.compiler.plan import StagePlan, _count, compiled_flops
from tunix_dsl.compiler.rl_program import (
    RLProgram,
    _abstract_rollout,
    lower_rl_stage,
    prompts_per_step,
)
from tunix_dsl.compiler.rl_step import RLConfig
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.compiler.train_step import TrainState


@dataclass(frozen=True)
class RolloutCost:
    """A rollout row measured by the caller from programs of its own (an agent's episode)."""

    argument_bytes: int
    output_bytes: int
    temp_bytes: int
    alias_bytes: int
    flops: float
    tokens: int
    note: str


RolloutPlanner = Callable[[RLProgram, TrainState], RolloutCost]


def plan_rl_stage(
    name: str, kind: str, config: RLConfig, models: StageModels, mesh: Mesh, *,
    stop_ids: tuple[int, ...], pad_id: int, episode_width: int | None = None,
    rollout: RolloutPlanner | None = None,
) -> list[StagePlan]:
    """`episode_width`: an agent stage's completion width (its longest episode after the
    prompt), which the score and update programs see in place of `max_new_tokens`;
    `rollout`: the agent's episode row, in place of the single-turn rollout program's."""
    program = lower_rl_stage(name, kind, config, models, mesh, stop_ids=stop_ids, pad_id=pad_id)
    state, frozen = program.abstract_state(), program.split.frozen
    prompts, group = prompts_per_step(config, program.rl), program.rl.generations
    rows = prompts * group
    prompt_len, new = int(config.max_prompt_len), int(config.max_new_tokens)
    width = new if episode_width is None else episode_width
    placed = sharding.batch_sharding(mesh, 2)
    scalar = jax.ShapeDtypeStruct((), jnp.int32)
    compiled = {} if rollout is not None else {
        "rollout": program.rollout.lower(
            state, frozen, jax.ShapeDtypeStruct((prompts, prompt_len), jnp.int32, sharding=placed),
            jax.ShapeDtypeStruct((prompts, prompt_len), jnp.bool_, sharding=placed), scalar, scalar,
        ).compile(),
    }
    batch = _abstract_rollout(config, group, prompts, width)
    scores: dict[str, Any] = {}
    if program.score is not None:
        compiled["score"] = program.score.lower(state, frozen, batch).compile()
        scores = jax.eval_shape(program.score, state, frozen, batch)
    update_batch = {**batch, **scores, "rewards": jax.ShapeDtypeStruct((rows,), jnp.float32)}
    compiled["update"] = program.update.lower(state, frozen, update_batch).compile()

    # what the stage holds: models it does not use (a reference with β = 0) are not counted,
    # a critic copied from the policy is
    trainable, total = _count(program.split.trainable), _count(nnx.state(program.rl.modules, nnx.Param))
    tokens = {"rollout": rows * new, "score": rows * (prompt_len + width), "update": rows * (prompt_len + width)}
    # rollout = "async": the worker reads a copy of the train state while the update trains
    copy = abstract_bytes(state) // mesh.devices.size if getattr(config, "rollout", "sync") == "async" else 0
    plans = []
    if rollout is not None:
        cost = rollout(program, state)
        plans.append(StagePlan(
            name=name, kind=f"{kind}/rollout", trainable_params=trainable, total_params=total,
            tokens_per_step=cost.tokens, argument_bytes=cost.argument_bytes,
            output_bytes=cost.output_bytes, temp_bytes=cost.temp_bytes, alias_bytes=cost.alias_bytes,
            flops_per_step=cost.flops, devices=mesh.devices.size, note=cost.note))
    for label, executable in compiled.items():
        memory = executable.memory_analysis()
        held = copy if label == "update" else 0
        plans.append(StagePlan(
            name=name, kind=f"{kind}/{label}", trainable_params=trainable, total_params=total,
            tokens_per_step=tokens[label],
            argument_bytes=int(memory.argument_size_in_bytes) + held,
            output_bytes=int(memory.output_size_in_bytes),
            temp_bytes=int(memory.temp_size_in_bytes), alias_bytes=int(memory.alias_size_in_bytes),
            flops_per_step=compiled_flops(executable), devices=mesh.devices.size,
            note=f"arguments include the async rollout's copy of the train state ({held:,} bytes)"
            if held else "",
        ))
    return plans


def abstract_bytes(tree: Any) -> int:
    """Bytes of an abstract pytree (the whole of every array, unsharded)."""
    return sum(int(leaf.size) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree)
               if hasattr(leaf, "dtype"))
