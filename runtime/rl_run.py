"""Running one RL stage (grpo, ppo) inside the executor: the RL twin of
`runtime/stage_lifecycle.py` `run_stage`.

The durability is the supervised stage's own, not a copy of it: the same
`begin_stage` (free space, earlier work of another configuration moved
aside, the newest good checkpoint restored with its data cursor) and
`finish_stage` (the output saved as an HF directory with LoRA merged and
the adapter beside it, kept in memory only when read later, marked finished with
its files, superseded work dropped), and the same loop core
(`runtime/training.py` `DurableLoop`: checkpoint triggers, signals, finite checks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from tunix_dsl.check.ir import Stage
from tunix_dsl.compiler.rl_program import RLProgram, lower_rl_stage, prompts_per_step
from tunix_dsl.compiler.rl_step import rl_config
from tunix_dsl.compiler.stages import StageModels
from tunix_dsl.compiler.storage_dtype import models_hold_frozen
from tunix_dsl.compiler.train_step import TrainState
from tunix_dsl.data.row_tools import check_rows
from tunix_dsl.runtime.batches import BatchStream
from tunix_dsl.runtime.data import tokenize_rows
from tunix_dsl.runtime.evaluation import evaluate_model
from tunix_dsl.runtime.preemption import StopSignals
from tunix_dsl.runtime.progress import StageProgress
from tunix_dsl.runtime.rewards import RowName, build_reward, dataset_row_names
from tunix_dsl.runtime.rl_agent import StageAgent, stage_agent
from tunix_dsl.runtime.rl_loop import RLLoop
from tunix_dsl.runtime.rl_rewards import StageRewards
from tunix_dsl.runtime.run_dir import StageStatus, derived_seed
from tunix_dsl.runtime.stage_lifecycle import StageResult, begin_stage, drive, finish_stage
from tunix_dsl.schemas.agents import PythonEnvironment, ToolsEnvironment

if TYPE_CHECKING:  # the executor imports this module to run RL stages
    from tunix_dsl.runtime.executor import Executor


def stage_rewards(executor: Executor, stage: Stage) -> StageRewards:
    config = rl_config(stage.config)
    weights = config.reward_weights or [1.0] * len(config.rewards)
    rewards = [(name, build_reward(executor.pipeline.rewards[name].spec, executor.base_dir, name), float(w))
               for name, w in zip(config.rewards, weights, strict=True)]
    env = executor.pipeline.environments.get(config.environment or "")
    if env is not None and isinstance(env.spec, ToolsEnvironment):  # it scores the final answer
        name = env.spec.reward
        rewards.append((name, build_reward(executor.pipeline.rewards[name].spec, executor.base_dir, name),
                        1.0))
    return StageRewards(stage.name, rewards, int(config.max_new_tokens), getattr(config, "overlong", None))


def row_names(executor: Executor, dataset: str) -> RowName:
    return dataset_row_names(executor.pipeline.datasets[dataset].spec, executor.base_dir, dataset)


def lower(executor: Executor, stage: Stage, models: StageModels) -> RLProgram:
    config = rl_config(stage.config)
    tokenizer = executor.tokenizer_for(config.policy)
    context = executor.config_for(config.policy).max_seq_len
    width = int(config.max_new_tokens)
    if config.environment is not None:  # an episode: turns, observations, the opening
        from tunix_dsl.rules.agent_checks import episode_tokens

        env = executor.pipeline.environments[config.environment].spec
        width = episode_tokens(config, width, isinstance(env, PythonEnvironment))
    # TNX307 (a completion) and TNX515 (an episode) refuse longer sequences at lint time.
    assert config.max_prompt_len + width <= context, (
        f"stage `{stage.name}`: prompt + completion exceed the policy's context of {context} (TNX307/TNX515)")
    program = lower_rl_stage(stage.name, stage.kind, config, models, executor.mesh,
                             stop_ids=tuple(tokenizer.stop_ids), pad_id=tokenizer.pad_id,
                             fingerprint=executor.fingerprints[stage.name])
    models_hold_frozen(program.rl.modules, program.split)
    return program


def held_out(executor: Executor, stage: Stage, program: RLProgram, rewards: StageRewards,
             agent: StageAgent | None = None) -> Callable[[TrainState], dict[str, float]] | None:
    """`eval_every` + `eval_data`: the policy completes the held-out prompts (one sample each,
    at the stage's temperature, a fixed seed); the score is the mean of the stage's reward.
    With an environment, each prompt is one episode (tools and all), scored on its answer."""
    config = rl_config(stage.config)
    if not config.eval_every or config.eval_data is None:
        return None
    eval_data = config.eval_data
    rows = executor.resources.rows(eval_data, "prompt")
    tokenizer = executor.tokenizer_for(config.policy)
    seed = derived_seed(executor.stage_seed(stage), "eval")
    executor.log(f"  eval data {config.eval_data}: {len(rows)} prompts every {config.eval_every} steps")

    def metric(prompts: Any, completions: Any, lengths: Any, columns: Any) -> np.ndarray:
        return rewards(prompts, completions, lengths, columns)[0]

    def episode_scores(chosen: list[Any], episodes: Any) -> np.ndarray:
        columns = {c: [row.get(c) for row in chosen] for c in chosen[0]}
        scores, _ = rewards([row["prompt"] for row in chosen], episodes.final_texts,
                            episodes.own_lengths, columns)
        return scores + episodes.rewards  # a python environment's step rewards (else zeros)

    def evaluate(state: TrainState) -> dict[str, float]:
        policy = program.merged_modules(state).policy
        if agent is not None:
            return {"reward": agent.evaluate(policy, rows, episode_scores,
                                             max_prompt_len=int(config.max_prompt_len),
                                             batch_size=program.prompts_per_step, seed=seed)}
        result = evaluate_model(stage.name, policy, tokenizer, rows, metric,
                                max_new_tokens=int(config.max_new_tokens), temperature=float(config.temperature),
                                batch_size=program.prompts_per_step, seed=seed,
                                row_name=row_names(executor, eval_data))
        return {"reward": result.score}

    return evaluate


def run_rl_stage(executor: Executor, stage: Stage, status: StageStatus, signals: StopSignals) -> StageResult:
    """An RL stage between the shared head and tail (`begin_stage`, `finish_stage`)."""
    config = rl_config(stage.config)
    seed = executor.stage_seed(stage)
    models = executor.stage_models(stage, seed)  # clones; inputs nobody reads later are released
    if not config.uses_reference():  # no KL term: no reference pass, so no reference held either
        models.models.pop("reference", None)
    program = lower(executor, stage, models)
    head = begin_stage(executor, stage, status, program, models)
    tokenizer = executor.tokenizer_for(config.policy)
    rows = executor.resources.rows(config.data, "prompt")
    agent = stage_agent(executor, stage, program, tokenizer, seed)
    row_name = row_names(executor, config.data)
    tools = None if agent is None else agent.tools
    if tools:  # a row's own `tools` names only the environment's (TNX527 peeks; all rows here)
        check_rows(rows, tools, row_name)
    data = tokenize_rows(rows, "prompt", tokenizer, int(config.max_prompt_len), source=config.data,
                         tools=tools)
    executor.log(f"  data {config.data}: {data.summary()}")
    stream = BatchStream(data, prompts_per_step(config, program.rl), seed, start_cursor=head.cursor)
    progress = StageProgress(executor.log, stage.name, config.steps, head.start, headline="reward")
    rewards = stage_rewards(executor, stage)
    loop = RLLoop(stage.name, config, program, stream, head.checkpoints, head.sink, progress, executor.log,
                  signals, head.fingerprint, on_dispatch=executor.on_dispatch,
                  evaluate=held_out(executor, stage, program, rewards, agent),
                  rows=rows, tokenizer=tokenizer, rewards=rewards, agent=agent,
                  row_name=row_name)
    try:
        state, result = drive(loop, head, progress)
    finally:
        if agent is not None:
            agent.close()
    rewards_seen = [h["reward"] for h in result.history if "reward" in h]
    return finish_stage(executor, stage, program, models, head, state, result,
                        {"final_reward": rewards_seen[-1] if rewards_seen else float("nan")})
