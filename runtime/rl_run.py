"""Running one RL stage (grpo, ppo) inside the executor: the RL twin of `Executor.run_stage`.

The durability is the supervised stage's own, not a copy of it: the same
`Executor.begin_stage` (free space, earlier work of another configuration moved
aside, the newest good checkpoint restored with its data cursor) and
`Executor.finish_stage` (the output saved as an HF directory with LoRA merged and
the adapter beside it, kept in memory only when read later, marked finished with
its files, superseded work dropped), and the same loop core
(`runtime/training.py` `DurableLoop`: checkpoint triggers, signals, finite checks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tunix_dsl.compiler.rl_program import RLProgram, lower_rl_stage, prompts_per_step
from tunix_dsl.runtime.data import BatchStream, tokenize_rows
from tunix_dsl.runtime.evaluation import evaluate_model
from tunix_dsl.runtime.preemption import StopSignals
from tunix_dsl.runtime.progress import StageProgress
from tunix_dsl.runtime.rewards import RowName, build_reward, dataset_row_names
from tunix_dsl.runtime.rl_loop import RLLoop
from tunix_dsl.runtime.rl_rewards import StageRewards
from tunix_dsl.runtime.run_dir import StageStatus, derived_seed


def stage_rewards(executor: Any, stage: Any) -> StageRewards:
    config = stage.config
    weights = config.reward_weights or [1.0] * len(config.rewards)
    rewards = [(name, build_reward(executor.pipeline.rewards[name].spec, executor.base_dir, name), float(w))
               for name, w in zip(config.rewards, weights, strict=True)]
    return StageRewards(stage.name, rewards, int(config.max_new_tokens), getattr(config, "overlong", None))


def row_names(executor: Any, dataset: str) -> RowName:
    return dataset_row_names(executor.pipeline.datasets[dataset].spec, executor.base_dir, dataset)


def lower(executor: Any, stage: Any, models: Any) -> RLProgram:
    from tunix_dsl.runtime.executor import RunError

    config = stage.config
    tokenizer = executor.tokenizer_for(config.policy)
    context = executor.config_for(config.policy).max_seq_len
    if config.max_prompt_len + config.max_new_tokens > context:
        raise RunError(f"stage `{stage.name}`: max_prompt_len {config.max_prompt_len} + max_new_tokens "
                       f"{config.max_new_tokens} exceed the policy's context of {context} tokens")
    return lower_rl_stage(stage.name, stage.kind, config, models, executor.mesh,
                          stop_ids=tuple(tokenizer.stop_ids), pad_id=tokenizer.pad_id,
                          fingerprint=executor.fingerprints[stage.name])


def held_out(executor: Any, stage: Any, program: RLProgram, rewards: StageRewards
             ) -> Callable[[Any], dict[str, float]] | None:
    """`eval_every` + `eval_data`: the policy completes the held-out prompts (one sample each,
    at the stage's temperature, a fixed seed); the score is the mean of the stage's reward."""
    config = stage.config
    if not config.eval_every or config.eval_data is None:
        return None
    rows = executor.resources.rows(config.eval_data, "prompt")
    tokenizer = executor.tokenizer_for(config.policy)
    seed = derived_seed(executor.stage_seed(stage), "eval")
    executor.log(f"  eval data {config.eval_data}: {len(rows)} prompts every {config.eval_every} steps")

    def metric(prompts: Any, completions: Any, lengths: Any, columns: Any) -> np.ndarray:
        return rewards(prompts, completions, lengths, columns)[0]

    def evaluate(state: Any) -> dict[str, float]:
        policy = program.merged_modules(state).policy
        result = evaluate_model(stage.name, policy, tokenizer, rows, metric,
                                max_new_tokens=int(config.max_new_tokens), temperature=float(config.temperature),
                                batch_size=program.prompts_per_step, seed=seed,
                                row_name=row_names(executor, config.eval_data))
        return {"reward": result.score}

    return evaluate


def run_rl_stage(executor: Any, stage: Any, status: StageStatus, signals: StopSignals) -> Any:
    """An RL stage between the executor's shared head and tail (`begin_stage`, `finish_stage`)."""
    config = stage.config
    seed = executor.stage_seed(stage)
    models = executor.stage_models(stage, seed)  # clones; inputs nobody reads later are released
    if config.beta == 0:  # no KL term: no reference pass, so no reference held either
        models.models.pop("reference", None)
    program = lower(executor, stage, models)
    head = executor.begin_stage(stage, status, program, models)
    tokenizer = executor.tokenizer_for(config.policy)
    rows = executor.resources.rows(config.data, "prompt")
    data = tokenize_rows(rows, "prompt", tokenizer, int(config.max_prompt_len), source=config.data)
    executor.log(f"  data {config.data}: {data.summary()}")
    stream = BatchStream(data, prompts_per_step(config, program.rl), seed, start_cursor=head.cursor)
    progress = StageProgress(executor.log, stage.name, config.steps, head.start, headline="reward")
    rewards = stage_rewards(executor, stage)
    loop = RLLoop(stage.name, config, program, stream, head.checkpoints, head.sink, progress, executor.log,
                  signals, head.fingerprint, on_dispatch=executor.on_dispatch,
                  evaluate=held_out(executor, stage, program, rewards),
                  rows=rows, tokenizer=tokenizer, rewards=rewards, row_name=row_names(executor, config.data))
    state, result = executor.drive(loop, head, progress)
    rewards_seen = [h["reward"] for h in result.history if "reward" in h]
    return executor.finish_stage(stage, program, models, head, state, result,
                                 {"final_reward": rewards_seen[-1] if rewards_seen else float("nan")})
