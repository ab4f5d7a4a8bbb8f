"""Running one RL stage (grpo, ppo) inside the executor: the RL twin of `Executor.run_stage`.

Same durability contract as a supervised stage: stale checkpoints dropped by
fingerprint, the newest good checkpoint restored (state and data cursor), the
output saved as an HF directory (LoRA merged, the adapter beside it) and marked
finished with the fingerprint last.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from flax import nnx

from tunix_dsl.compiler.rl_program import RLProgram, lower_rl_stage, prompts_per_step
from tunix_dsl.runtime.checkpoint import StageCheckpoints, state_nbytes
from tunix_dsl.runtime.data import BatchStream, tokenize_rows
from tunix_dsl.runtime.evaluation import evaluate_model
from tunix_dsl.runtime.metrics import MetricsSink
from tunix_dsl.runtime.preemption import StopSignals
from tunix_dsl.runtime.progress import StageProgress
from tunix_dsl.runtime.rewards import build_reward
from tunix_dsl.runtime.rl_loop import RLLoop
from tunix_dsl.runtime.rl_rewards import StageRewards
from tunix_dsl.runtime.run_dir import StageStatus, derived_seed
from tunix_dsl.schemas.stages import STAGE_KINDS


def stage_rewards(executor: Any, stage: Any) -> StageRewards:
    config = stage.config
    weights = config.reward_weights or [1.0] * len(config.rewards)
    rewards = [(name, build_reward(executor.pipeline.rewards[name].spec, executor.base_dir, name), float(w))
               for name, w in zip(config.rewards, weights, strict=True)]
    return StageRewards(stage.name, rewards, int(config.max_new_tokens), getattr(config, "overlong", None))


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
        return rewards(prompts, completions, lengths, columns, np.arange(len(completions)))[0]

    def evaluate(state: Any) -> dict[str, float]:
        policy = program.merged_modules(state).policy
        result = evaluate_model(stage.name, policy, tokenizer, rows, metric,
                                max_new_tokens=int(config.max_new_tokens), temperature=float(config.temperature),
                                batch_size=program.prompts_per_step, seed=seed)
        return {"reward": result.score}

    return evaluate


def run_rl_stage(executor: Any, stage: Any, status: StageStatus, signals: StopSignals) -> Any:
    from tunix_dsl.runtime.executor import ADAPTER_DIR, StageResult, save_params

    config = stage.config
    seed = executor.stage_seed(stage)
    directory = executor.layout.stage(stage.name)
    fingerprint = executor.fingerprints[stage.name]
    directory.unmark()
    shutil.rmtree(directory.output, ignore_errors=True)
    executor._drop_stale_checkpoints(directory, fingerprint, discard_all=status.forced)
    models = executor.stage_models(stage, seed)
    if config.beta == 0:  # no KL term: no reference pass, so no reference held either
        models.models.pop("reference", None)
    program = lower(executor, stage, models)
    abstract = jax.eval_shape(program.init_state)
    trained = STAGE_KINDS[stage.kind].trained
    output_bytes = state_nbytes(nnx.state(models.models[trained], nnx.Param))
    executor.layout.check_free_space(
        stage.name, state_nbytes(abstract) * (config.keep_checkpoints + 1) + output_bytes)
    checkpoints = StageCheckpoints(directory.checkpoints, keep=config.keep_checkpoints, log=executor.log)
    restored = checkpoints.restore_latest(abstract, program.state_shardings, fingerprint)
    start = restored.step if restored else 0
    if restored:
        executor.log(f"  resuming at step {start} from {directory.checkpoints / str(start)}")
    state = restored.state if restored else program.init_state()

    tokenizer = executor.tokenizer_for(config.policy)
    rows = executor.resources.rows(config.data, "prompt")
    data = tokenize_rows(rows, "prompt", tokenizer, int(config.max_prompt_len), source=config.data)
    executor.log(f"  data {config.data}: {data.summary()}")
    stream = BatchStream(data, prompts_per_step(config, program.rl), seed,
                         start_cursor=restored.meta["cursor"] if restored else 0)
    sink = MetricsSink(directory.metrics, directory.events, resume_step=start)
    progress = StageProgress(executor.log, stage.name, config.steps, start, headline="reward")
    rewards = stage_rewards(executor, stage)
    loop = RLLoop(stage.name, config, program, stream, rows, tokenizer, rewards,
                  checkpoints, sink, progress, executor.log, signals, fingerprint,
                  on_dispatch=executor.on_dispatch, evaluate=held_out(executor, stage, program, rewards))
    try:
        state, result = loop.run(state, start)
    finally:
        progress.close()
        sink.close()
        checkpoints.close()

    model = getattr(program.merged_modules(state), trained)
    if models.lora:
        from tunix_dsl.models.lora import LoRAParam, merge_lora

        save_params(nnx.state(model, LoRAParam), directory.output / ADAPTER_DIR)
        model = merge_lora(model)
    executor.outputs[stage.name] = model
    executor.save_model(model, tokenizer, directory.output)
    losses = [h["loss"] for h in result.history if "loss" in h]
    rewards = [h["reward"] for h in result.history if "reward" in h]
    final = losses[-1] if losses else float("nan")
    directory.mark_finished({
        "fingerprint": fingerprint, "stage": stage.name, "kind": stage.kind, "steps": config.steps,
        "final_loss": final, "final_reward": rewards[-1] if rewards else float("nan"),
        "wall_s": result.wall_s, "tokens_per_s": result.tokens_per_s,
    })
    return StageResult(stage.name, stage.kind, config.steps, losses[0] if losses else float("nan"), final,
                       result.wall_s, result.tokens_per_s, f"resumed at {start}" if start else "ran",
                       result.history)
