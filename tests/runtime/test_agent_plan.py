"""`tnx plan` for agent stages: the rollout row is the episode's programs (KV cache at the
episode's width), the score and update programs see the episode's width, and an async
rollout's copy of the train state is counted with the update."""

from __future__ import annotations

from pathlib import Path

from tunix_dsl.api import load
from tunix_dsl.compiler.plan import StagePlan
from tunix_dsl.runtime.planning import plan_pipeline

PIPELINE = """
pipeline p {{ seed = 0 }}
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 20, seed = 1)
reward correct = exact_match(field = "answer")
tool calc = python("env.py:calculate")
environment math = tools([calc], reward = correct)
stage solve: grpo {{
  policy = tiny
  data = sums
  environment = math
  tool_format = "hermes"
  max_turns = 3
  max_observation_tokens = 24
  generations = 2
  batch_size = 8
  max_prompt_len = 8
  max_new_tokens = 4
  beta = 0
  steps = 3
  {fields}
}}
"""
ENV = 'def calculate(expression: str) -> str:\n    """Evaluate."""\n    return expression\n'


def plans(tmp_path: Path, fields: str = "") -> list[StagePlan]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "p.tnx").write_text(PIPELINE.format(fields=fields))
    (tmp_path / "env.py").write_text(ENV)
    pipeline = load(tmp_path / "p.tnx")
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    return plan_pipeline(pipeline)


def test_agent_stage_is_planned_with_the_episode_width_and_async_counts_its_state_copy(
        tmp_path: Path) -> None:
    sync = {p.kind: p for p in plans(tmp_path / "sync")}
    episode = 3 * 4 + 2 * 24  # max_turns × max_new_tokens + (max_turns − 1) × observation
    assert sync["grpo/update"].tokens_per_step == 8 * (8 + episode)
    # the episode's programs: 3 turns of 4 tokens and up to 24 observation tokens after each
    rollout = sync["grpo/rollout"]
    assert rollout.tokens_per_step == 8 * 3 * (4 + 24)
    # the KV cache has room for the whole episode: 8 rows × (prompt 8 + episode) slots;
    # pico: 2 kv heads of 16 dims, float32 keys and values, in its 1 layer; valid mask; index
    cache = 2 * 1 * 8 * 2 * (8 + episode) * 16 * 4 + 8 * (8 + episode) + 4
    assert f"KV cache 8 rows × {8 + episode} slots ({cache:,} bytes)" in rollout.note
    assert rollout.argument_bytes > cache and rollout.flops_per_step > 0
    assert sync["grpo/update"].note == ""

    update = sync["grpo/update"]
    held = {p.kind: p for p in plans(tmp_path / "async", 'rollout = "async"')}["grpo/update"]
    copy = 3 * 4 * update.trainable_params  # float32 weights and adamw's two moments
    copy += 3 * 4  # three int32 step counters (the train state's and the optimizer's)
    assert f"({copy:,} bytes)" in held.note
    # the async update also reads the behaviour log-probs: [rows, episode] float32
    assert held.argument_bytes - update.argument_bytes == copy + 8 * episode * 4
