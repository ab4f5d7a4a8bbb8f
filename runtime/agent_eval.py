"""Evaluation by episodes: each held-out prompt is one episode with the environment in the loop.

    eval with_tools { models = [...], data = questions, metric = correct,
                      environment = calculator, tool_format = "hermes", max_turns = 2 }

The model takes turns, the tools answer, up to `max_turns` (as an agentic RL stage's rollout
runs them, `runtime/agent_rollout.py`), and the metric scores the episode's final answer —
its last model turn. Only the metric counts: the environment's shaping (`call_reward`, a
python environment's step rewards) trains a policy, it does not measure one. A plain `eval`
of the same data without `environment` is the score without the tools.

`episode_batches` is the one loop over held-out prompts: `eval` blocks here and the
`eval_every` score of an agentic RL stage (`runtime/rl_agent.py`) both use it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from tunix_dsl.data.tokenizers import Tokenizer
from tunix_dsl.models import Transformer
from tunix_dsl.models.sampler import SamplingConfig
from tunix_dsl.runtime.agent_env import build_environment
from tunix_dsl.runtime.agent_rollout import AgentRollout, AgentSettings, Episodes
from tunix_dsl.runtime.batches import length_buckets, ordered_batches
from tunix_dsl.runtime.data import tokenize_rows
from tunix_dsl.runtime.evaluation import EvalResult
from tunix_dsl.runtime.rewards import RewardFn, RowName, score_rows
from tunix_dsl.schemas.agents import EnvironmentSource, PythonTool
from tunix_dsl.schemas.pipeline import EvalConfig

Row = Mapping[str, Any]


class EpisodeBatch(NamedTuple):
    ids: np.ndarray  # [B] the rows' indices in the dataset
    rows: list[Row]
    episodes: Episodes
    valid: np.ndarray  # [B] bool: False on the repeats that fill the last batch


def episode_batches(rollout: AgentRollout, policy: nnx.Module, rows: Sequence[Row], *,
                    max_prompt_len: int, batch_size: int, seed: int) -> Iterator[EpisodeBatch]:
    """One episode per row, in dataset order (batch i samples with `fold_in(key(seed), i)`).
    `rollout` must sample one episode per prompt (`num_samples = 1`)."""
    assert rollout.sampling.num_samples == 1, "one episode per held-out prompt"
    tools = list(rollout.env.schemas) or None  # what the chat template lists, as in training
    data = tokenize_rows(rows, "prompt", rollout.tokenizer, max_prompt_len, source="eval",
                         tools=tools)
    key = jax.random.key(seed)
    for i, batch in enumerate(ordered_batches(data, batch_size, length_buckets(max_prompt_len))):
        ids = np.asarray(batch["example_ids"])
        chosen = [rows[int(r)] for r in ids]
        episodes = rollout.rollout(policy, batch["tokens"], batch["attention_mask"], chosen,
                                   jax.random.fold_in(key, i))
        yield EpisodeBatch(ids, chosen, episodes, np.asarray(batch["valid"]))


def episode_text(episodes: Episodes, row: int, tokenizer: Tokenizer) -> str:
    """The whole episode as the model saw it: its turns and the observations between them."""
    ids = episodes.tokens[row][episodes.real[row]]
    return tokenizer.decode(ids.tolist(), skip_special=True)


def evaluate_agent(name: str, model: Transformer, tokenizer: Tokenizer, rows: Sequence[Row],
                   metric: RewardFn, config: EvalConfig, environment: EnvironmentSource,
                   tools: Mapping[str, PythonTool], base_dir: Path, *, seed: int, examples: int = 3,
                   row_name: RowName = lambda row: f"row {row + 1}") -> EvalResult:
    """An `eval` block with `environment = NAME`: the metric over one episode per row."""
    assert config.environment is not None
    env = build_environment(environment, tools, base_dir, config, config.environment)
    settings = AgentSettings(config.max_turns, config.max_new_tokens, config.max_observation_tokens)
    sampling = SamplingConfig(config.max_new_tokens, config.temperature,
                              stop_ids=tuple(tokenizer.stop_ids), pad_id=tokenizer.pad_id)
    try:
        rollout = AgentRollout(env, tokenizer, settings, sampling)
        prompt_budget = model.cfg.max_seq_len - rollout.width
        if prompt_budget < 2:  # TNX523 refuses this at lint time
            raise ValueError(
                f"eval of `{name}`: episodes of {rollout.width} tokens leave no room for a prompt "
                f"in the model's context of {model.cfg.max_seq_len} tokens")
        scores: list[np.ndarray] = []
        shown: list[dict[str, Any]] = []
        for ids, chosen, episodes, valid in episode_batches(
                rollout, model, rows, max_prompt_len=prompt_budget, batch_size=config.batch_size,
                seed=seed):
            columns = {c: [row.get(c) for row in chosen] for c in chosen[0]}

            def batch_row(i: int, ids: np.ndarray = ids) -> str:  # episode i -> its dataset row
                return row_name(int(ids[i]))

            score = score_rows(metric, [row["prompt"] for row in chosen], episodes.final_texts,
                               episodes.own_lengths, columns, batch_row)
            score = np.asarray(score, np.float32)
            scores.append(score[valid])
            for i in np.flatnonzero(valid)[: max(examples - len(shown), 0)]:
                shown.append({"prompt": chosen[i]["prompt"],
                              "completion": episode_text(episodes, int(i), tokenizer),
                              "score": float(score[i])})
    finally:
        env.close()
    all_scores = np.concatenate(scores)
    return EvalResult(name, float(all_scores.mean()), int(all_scores.size), shown)
