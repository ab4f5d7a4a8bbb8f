"""examples/agent_calculator.tnx: with the calculator the model answers right, without it not.

Shaping first, on a hand-built turn: `call_reward` credits each call that ran, nothing else.
Then the example itself, its GRPO stage shortened to 4 steps: after SFT on tool-use and
answer-from-memory demonstrations the pico model calls the tool and copies its result, so
the `with_tools` eval (one episode per held-out question) scores the final answers right
while `without_tools` (the same questions in one turn) scores none. Checked by hand on
pipeline seeds 0, 1, 2 (docs/agents.md).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.runtime.durable_helpers import metric_rows
from tunix_dsl.api import load
from tunix_dsl.runtime.agent_env import ToolRunner, ToolsEnv
from tunix_dsl.runtime.cli_commands import main as tnx
from tunix_dsl.runtime.distributed import unsupported
from tunix_dsl.runtime.tool_calls import render_tool_call

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_call_reward_credits_each_call_that_runs() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    env = ToolsEnv(ToolRunner({"add": add}, timeout=5.0), max_tool_calls=4, call_reward=0.5)
    try:
        env.start([{}] * 4)
        good, bad_args = render_tool_call("add", {"a": 2, "b": 3}), render_tool_call("add", {"c": 1})
        replies = env.step([0, 1, 2, 3], [good + good, bad_args + good, "<tool_call>{oops</tool_call>", "5"])
    finally:
        env.runner.close()
    assert [r.calls_ok for r in replies] == [2, 1, 0, 0]
    assert [r.reward for r in replies] == [1.0, 0.5, 0.0, 0.0]
    assert replies[3].observation is None  # an answer: the episode ends, no credit for calls


def test_an_eval_with_tools_is_refused_with_several_processes(tmp_path: Path) -> None:
    """Tool answers and timeouts need not agree between hosts: a multi-process run refuses an
    eval with an environment before anything runs, naming it."""
    shutil.copy(EXAMPLES / "agent_tools.py", tmp_path / "agent_tools.py")
    (tmp_path / "job.tnx").write_text("""
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars)
dataset questions = synthetic("calculator_tools", split = "test", count = 8)
reward correct = exact_match(field = "answer")
tool calc = python("agent_tools.py:calculate")
environment calculator = tools([calc], reward = correct)
eval with_tools {
  models = [tiny]
  data = questions
  metric = correct
  environment = calculator
  tool_format = "hermes"
  max_turns = 2
  max_new_tokens = 24
  max_observation_tokens = 16
}
""")
    pipeline = load(str(tmp_path / "job.tnx"))
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    assert "eval `with_tools`: an `environment`" in (unsupported(pipeline) or "")


def test_calculator_answers_right_with_the_tool_and_not_without(tmp_path: Path) -> None:
    for name in ("agent_calculator.tnx", "agent_tools.py"):
        shutil.copy(EXAMPLES / name, tmp_path / name)
    args = [str(tmp_path / "agent_calculator.tnx"), "--run-dir", str(tmp_path / "run"),
            "--set", "practice_steps=4"]
    assert tnx("run", args) == 0
    evals = json.loads((tmp_path / "run" / "evals.json").read_text())
    scores = {block: {r["model"]: r["score"] for r in results} for block, results in evals.items()}
    # seeds 0, 1, 2 by hand (docs/agents.md): with the tool 0.84-0.91, without it 0.0
    for model in ("imitate.model", "practice.model"):
        assert scores["with_tools"][model] > 0.6, scores
        assert scores["without_tools"][model] < 0.1, scores
    with_tools = evals["with_tools"][0]["examples"][0]
    assert "<tool_call>" in with_tools["completion"], with_tools  # the episode, call and all
    rows = metric_rows(tmp_path / "run", "practice")
    assert len(rows) == 4 and all(0 <= row["agent/tool_success"] <= 1 for row in rows)
    assert rows[-1]["reward/correct"] > 0.3 and rows[-1]["reward/tool_calls"] > 0
