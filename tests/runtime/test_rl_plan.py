"""`tnx plan` for RL stages: one row per program, without allocating weights."""

from __future__ import annotations

from pathlib import Path

from tunix_dsl.api import load
from tunix_dsl.runtime.planning import plan_pipeline

PIPELINE = """
pipeline p {{ seed = 0 }}
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 20, seed = 1)
reward correct = exact_match(field = "answer")
stage solve: {kind} {{
  policy = tiny
  data = sums
  rewards = [correct]
  batch_size = 8
  max_prompt_len = 8
  max_new_tokens = 4
  steps = 3
  {fields}
}}
"""


def plans(tmp_path: Path, kind: str, fields: str):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "p.tnx").write_text(PIPELINE.format(kind=kind, fields=fields))
    pipeline = load(tmp_path / "p.tnx")
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    return plan_pipeline(pipeline)


def test_grpo_plans_rollout_score_and_update(tmp_path: Path) -> None:
    rows = plans(tmp_path, "grpo", "generations = 4\n beta = 0.1")
    assert [p.kind for p in rows] == ["grpo/rollout", "grpo/score", "grpo/update"]
    rollout, score, update = rows
    assert rollout.tokens_per_step == 8 * 4 and score.tokens_per_step == 8 * 12
    assert all(p.flops_per_step > 0 and p.argument_bytes > 0 for p in rows)
    # the update holds the optimizer state (donated): the most argument bytes
    assert update.argument_bytes > rollout.argument_bytes


def test_grpo_without_kl_and_mu_1_has_no_score_program(tmp_path: Path) -> None:
    rows = plans(tmp_path, "grpo", "generations = 4\n beta = 0")
    assert [p.kind for p in rows] == ["grpo/rollout", "grpo/update"]


def test_ppo_counts_its_critic_and_not_an_unused_reference(tmp_path: Path) -> None:
    policy = plans(tmp_path / "g", "grpo", "generations = 2\n beta = 0")[0].total_params
    rows = plans(tmp_path / "p", "ppo", "beta = 0")
    assert [p.kind for p in rows] == ["ppo/rollout", "ppo/score", "ppo/update"]
    # policy + a critic trunk copied from it + the value head (d_model + 1); no reference
    assert rows[0].trainable_params == rows[0].total_params
    assert 2 * policy < rows[0].total_params < 2 * policy + 1000
