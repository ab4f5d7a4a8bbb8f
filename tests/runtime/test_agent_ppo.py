"""A ppo stage with an environment: multi-turn episodes train policy and critic, the loss stays
finite, and a run preempted mid-stage resumes to the uninterrupted run's weights bit for bit."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.durable_helpers import metric_rows, output_tensors
from tunix_dsl.api import load
from tunix_dsl.runtime.executor import Executor
from tunix_dsl.runtime.preemption import Preempted

PIPELINE = """\
pipeline agent_ppo { seed = 0 }

tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 16, seed = 1)
reward correct = exact_match(field = "answer")
environment guess = python("env.py:Guess")

stage solve: ppo {
  policy = tiny
  data = sums
  rewards = [correct]
  environment = guess
  max_turns = 3
  max_prompt_len = 8
  max_new_tokens = 4
  max_observation_tokens = 24
  batch_size = 4
  steps = 4
  checkpoint_every = 2
  iterations = 2
  optimizer = adamw(lr = 1e-3)
}

export solve.model to "out" as "hf"
"""

# An opening observation, a step reward per turn, and an answer check that ends the episode
# early: episodes differ in turns, so observations sit between model turns.
ENV = '''
class Guess:
    def reset(self, row):
        self.answer = row["answer"]
        return "go"

    def step(self, action):
        done = action.strip() == self.answer or sum(map(ord, action)) % 3 == 0
        return "no", 0.5, done
'''


def run(work: Path, **kwargs: object) -> Path:
    pipeline = load(work / "p.tnx")
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    Executor(pipeline, work / "run", **kwargs).run()  # type: ignore[arg-type]
    return work / "run"


def test_ppo_with_an_environment_trains_and_resumes_bit_identically(tmp_path: Path) -> None:
    for name in ("whole", "resumed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "p.tnx").write_text(PIPELINE)
        (tmp_path / name / "env.py").write_text(ENV)
    whole = run(tmp_path / "whole")
    rows = metric_rows(whole, "solve")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        assert math.isfinite(row["loss"]) and math.isfinite(row["value_loss"])
        assert row["agent/episode_tokens"] > row["agent/model_tokens"] > 0  # observations in between
        assert abs(row["reward/environment"] - 0.5 * row["agent/turns"]) < 1e-6
    assert max(r["agent/turns"] for r in rows) > 1

    def preempt_at_step_3(_stage: str, done: int) -> None:
        if done == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop saves and stops

    with pytest.raises(Preempted):
        run(tmp_path / "resumed", on_dispatch=preempt_at_step_3)
    lines: list[str] = []
    resumed = run(tmp_path / "resumed", log=lines.append)
    assert any("resuming at step 3 from" in line for line in lines), lines
    timing = ("rollout_tokens_per_s",)
    assert [{k: v for k, v in r.items() if k not in timing} for r in metric_rows(resumed, "solve")[-2:]] \
        == [{k: v for k, v in r.items() if k not in timing} for r in rows[-2:]]
    left, right = output_tensors(whole, "solve"), output_tensors(resumed, "solve")
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)
