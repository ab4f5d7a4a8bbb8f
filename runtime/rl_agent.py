"""An RL stage with an `environment`: multi-turn episodes in place of single completions.

`RLLoop` asks `StageAgent.sample` for the step's rollout instead of dispatching the
rollout program. The rest of the step is unchanged: the score and update programs read
the episode batch (prompt, then the episode; `completion_mask` marks the model's own
tokens, so observations are context and never targets), and the host rewards score each
episode's final answer — plus, for a `python(...)` environment, the sum of its step
rewards. The PRNG key is the rollout program's, `fold_in(fold_in(key(seed), step), draw)`,
one fold more per turn, so a resumed run replays the same episodes (given deterministic
tools).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from tunix_dsl.runtime.agent_env import PythonEnv, ToolsEnv, build_environment
from tunix_dsl.runtime.agent_rollout import AgentRollout, AgentSettings, Episodes


@dataclass
class StageAgent:
    rollout: AgentRollout
    seed: int
    generations: int

    def sample(self, program: Any, state: Any, batch: Mapping[str, np.ndarray],
               rows: Sequence[Mapping[str, Any]], step: int, draw: int
               ) -> tuple[dict[str, jax.Array], Episodes]:
        """Run the episodes of the step's prompts with the policy's current weights."""
        policy = program.merged_modules(state).policy
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(self.seed), step), draw)
        episodes = self.rollout.rollout(policy, batch["tokens"], batch["attention_mask"], rows, key)
        arrays = episodes.batch(np.asarray(batch["tokens"]), np.asarray(batch["attention_mask"]),
                                self.generations)
        return program.put(arrays), episodes

    @property
    def tools(self) -> list[Mapping[str, Any]] | None:
        """The JSON schemas of the environment's tools, the `tools` its prompts are rendered
        with (a tool-aware chat template lists them); None without tools."""
        return list(self.rollout.env.schemas) or None

    def metrics(self, episodes: Episodes) -> dict[str, float]:
        """Turns and length per episode, and (cumulative) per-tool calls, errors, latency."""
        out = {
            "agent/turns": float(episodes.turns.mean()),
            "agent/episode_tokens": float(episodes.real.sum(axis=1).mean()),
            "agent/model_tokens": float(episodes.own_lengths.mean()),
            "agent/observations_cut": float(episodes.observation_cuts),
        }
        env = self.rollout.env
        if isinstance(env, ToolsEnv):
            out.update({f"agent/{k}": v for k, v in env.runner.stats.metrics().items()})
            assert episodes.calls_ok is not None
            # this step's tool-use accuracy: episodes with a call that ran and returned
            out["agent/tool_success"] = float((episodes.calls_ok > 0).mean())
        if isinstance(env, PythonEnv):
            out["agent/environment_reward"] = float(episodes.rewards.mean())
        return out

    def evaluate(self, policy: Any, rows: Sequence[Mapping[str, Any]], score: Any, *,
                 max_prompt_len: int, batch_size: int, seed: int) -> float:
        """Mean score of one episode per held-out row (the stage's sampling, a fixed key):
        accuracy *with* the tools (an `eval` block with `environment` measures the same)."""
        from tunix_dsl.runtime.agent_eval import episode_batches

        single = AgentRollout(self.rollout.env, self.rollout.tokenizer, self.rollout.settings,
                              dataclasses.replace(self.rollout.sampling, num_samples=1))
        scores = []
        for _, chosen, episodes, valid in episode_batches(
                single, policy, rows, max_prompt_len=max_prompt_len, batch_size=batch_size, seed=seed):
            scores.append(np.asarray(score(chosen, episodes), np.float32)[valid])
        return float(np.concatenate(scores).mean())

    def close(self) -> None:
        self.rollout.env.close()


def stage_agent(executor: Any, stage: Any, program: Any, tokenizer: Any, seed: int) -> StageAgent | None:
    """The agent of a stage with `environment = NAME`; None for a plain RL stage."""
    config = stage.config
    name = getattr(config, "environment", None)
    if name is None:
        return None
    pipeline = executor.pipeline
    tools = {n: d.spec for n, d in pipeline.tools.items()}
    env = build_environment(pipeline.environments[name].spec, tools, executor.base_dir, config, name)
    settings = AgentSettings(int(config.max_turns), int(config.max_new_tokens),
                             int(config.max_observation_tokens))
    rollout = AgentRollout(env, tokenizer, settings, program.sampling)
    return StageAgent(rollout, seed, program.rl.generations)
