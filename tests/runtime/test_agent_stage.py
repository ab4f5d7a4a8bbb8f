"""A grpo stage with an environment runs end to end: episodes, rewards, agent metrics."""

from __future__ import annotations

from pathlib import Path

from tests.runtime.durable_helpers import metric_rows
from tunix_dsl.api import load
from tunix_dsl.runtime.cli_commands import main as tnx

PIPELINE = """\
pipeline agents { seed = 0 }

tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 16, seed = 1)
reward correct = exact_match(field = "answer")
tool calc = python("env.py:calculate")
environment math = tools([calc], reward = correct)
environment guess = python("env.py:Guess")

stage tools_stage: grpo {
  policy = tiny
  data = sums
  environment = math
  tool_format = "hermes"
  max_turns = 2
  max_prompt_len = 8
  max_new_tokens = 6
  max_observation_tokens = 24
  generations = 2
  batch_size = 4
  steps = 2
}

stage env_stage: grpo {
  policy = tools_stage.model
  data = sums
  environment = guess
  max_turns = 2
  max_prompt_len = 8
  max_new_tokens = 6
  max_observation_tokens = 24
  generations = 2
  batch_size = 4
  steps = 2
}

export env_stage.model to "out" as "hf"
"""

ENV = '''
def calculate(expression: str) -> str:
    """Evaluate an expression."""
    return str(eval(expression))


class Guess:
    def reset(self, row):
        self.answer = row["answer"]
        return "go"

    def step(self, action):
        return "again", 0.25, action.strip() == self.answer
'''


def test_grpo_with_environments_runs_and_logs_agent_metrics(tmp_path: Path) -> None:
    (tmp_path / "p.tnx").write_text(PIPELINE)
    (tmp_path / "env.py").write_text(ENV)
    assert [d.code for d in load(tmp_path / "p.tnx").diagnostics] == []
    assert tnx("run", [str(tmp_path / "p.tnx"), "--run-dir", str(tmp_path / "run")]) == 0
    tools_rows = metric_rows(tmp_path / "run", "tools_stage")
    assert [r["step"] for r in tools_rows] == [1, 2]
    for row in tools_rows:
        assert 1 <= row["agent/turns"] <= 2
        assert 0 < row["agent/model_tokens"] <= 2 * 6
        assert "reward/correct" in row  # the environment's reward scores the final answer
    env_rows = metric_rows(tmp_path / "run", "env_stage")
    for row in env_rows:
        # the opening observation ("go") and step rewards of 0.25 per turn taken
        assert row["agent/episode_tokens"] > row["agent/model_tokens"]
        assert abs(row["reward/environment"] - 0.25 * row["agent/turns"]) < 1e-6
        assert abs(row["reward"] - row["reward/environment"]) < 1e-6
