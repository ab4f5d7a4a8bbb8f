"""`tnx plan`'s rollout row for an agent stage: the programs an episode runs, compiled ahead.

An episode is not the single-turn rollout program but three (`runtime/agent_rollout.py`):

    prefill  prompts [B, P] → logits, KV cache of B·G rows × (P + W) slots
    turn     decode up to max_new_tokens on the cache                 (× max_turns)
    append   [last token, observation] chunks of 1 + O tokens          (× turns − 1, + opening)

W is the episode's width (`episode_tokens`: every turn and observation), so the cache is
sized for the whole episode from the start. The three run one after another, handing the
cache on: the row shows the one with the highest peak (its arguments hold the cache), and
FLOPs add up prefill + max_turns × turn + appends (a turn's decode loop counted once per
turn, as XLA counts one trip of a while loop: a lower bound). Tokens per step are
B·G × max_turns × (max_new_tokens + max_observation_tokens): what an episode can feed
through the model.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tunix_dsl.compiler.plan import compiled_flops
from tunix_dsl.compiler.rl_plan import RolloutCost, abstract_bytes
from tunix_dsl.compiler.rl_program import RLProgram
from tunix_dsl.compiler.train_step import TrainState
from tunix_dsl.models.sampler import SamplingConfig
from tunix_dsl.runtime.agent_rollout import (
    AgentSettings,
    episode_append,
    episode_prefill,
    episode_turn,
)


def agent_rollout_cost(program: RLProgram, state: TrainState, settings: AgentSettings, *,
                       prompt_len: int, opening: bool, stops: tuple[tuple[int, ...], ...]
                       ) -> RolloutCost:
    """Compile an episode's prefill, turn and append for `program`'s policy on abstract
    inputs; `stops`: the turn's stop sequences (`</tool_call>` for a tools environment)."""
    policy = program.merged_modules(state).policy
    graphdef, weights = nnx.split(policy)
    group = program.rl.generations
    prompts = program.prompts_per_step
    rows = prompts * group
    width = settings.episode_tokens + (settings.max_observation_tokens if opening else 0)
    s = program.sampling
    sampling = SamplingConfig(settings.max_new_tokens, s.temperature, s.top_k, s.top_p, group,
                              s.stop_ids, s.pad_id, stops)
    sds = jax.ShapeDtypeStruct
    tokens, mask = sds((prompts, prompt_len), jnp.int32), sds((prompts, prompt_len), jnp.bool_)
    logits, cache = jax.eval_shape(episode_prefill, graphdef, weights, tokens, mask, width, group)
    key = jax.eval_shape(lambda: jax.random.key(0))
    chunk = 1 + settings.max_observation_tokens
    compiled = {
        "prefill": episode_prefill.lower(graphdef, weights, tokens, mask, width, group).compile(),
        "turn": episode_turn.lower(graphdef, weights, logits, cache, key, sampling,
                            sds((rows,), jnp.bool_)).compile(),
        "append": episode_append.lower(graphdef, weights, cache, sds((rows, chunk), jnp.int32),
                                sds((rows, chunk), jnp.bool_)).compile(),
    }
    runs = {"prefill": 1, "turn": settings.max_turns, "append": settings.max_turns - 1 + opening}
    memory = {label: _memory(exe) for label, exe in compiled.items()}

    def peak(label: str) -> int:
        m = memory[label]
        return int(m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
                   - m.alias_size_in_bytes)

    top = max(memory, key=peak)
    flops = sum(runs[label] * compiled_flops(exe) for label, exe in compiled.items())
    cache_bytes = abstract_bytes(cache)
    m = memory[top]
    return RolloutCost(
        argument_bytes=int(m.argument_size_in_bytes), output_bytes=int(m.output_size_in_bytes),
        temp_bytes=int(m.temp_size_in_bytes), alias_bytes=int(m.alias_size_in_bytes),
        flops=flops,
        tokens=rows * settings.max_turns * (settings.max_new_tokens + settings.max_observation_tokens),
        note=(f"episode: prefill, {settings.max_turns} turns, {runs['append']} appends; the {top} "
              f"program's peak shown; KV cache {rows} rows × {prompt_len + width} slots "
              f"({cache_bytes:,} bytes)"),
    )



def _memory(executable: Any) -> Any:
    memory = executable.memory_analysis()
    assert memory is not None, "XLA gave no memory analysis for a compiled program"
    return memory
