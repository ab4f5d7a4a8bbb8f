"""DAPO dynamic sampling: all-equal groups are dropped and the batch refilled from more prompts;
held-out scoring by reward; a LoRA policy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.runtime.durable_helpers import metric_rows
from tunix_dsl.runtime.cli_commands import main as tnx
from tunix_dsl.runtime.rl_dynamic import gather_rows, select_groups, varied_groups


def test_select_groups_keeps_varied_groups_first_then_fills_with_equal_ones() -> None:
    first = np.array([1, 1, 0, 1, 2, 2], np.float32)  # groups of 2: equal, varied, equal
    second = np.array([0, 0, 3, 1, 5, 5], np.float32)  # equal, varied, equal
    np.testing.assert_array_equal(varied_groups(first, 2), [False, True, False])
    assert select_groups([first], 2, 3) == [(0, 1), (0, 0), (0, 2)]  # cap reached: fill
    assert select_groups([first, second], 2, 2) == [(0, 1), (1, 1)]
    rows = gather_rows([{"r": first}, {"r": second}], [(0, 1), (1, 1)], 2)
    np.testing.assert_array_equal(rows["r"], [0, 1, 3, 1])


PIPELINE = """
pipeline dyn { seed = 0 }
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 100, seed = 1)
reward mixed = python("r.py:mixed")
stage solve: grpo {
  policy           = tiny
  data             = sums
  rewards          = [mixed]
  generations      = 4
  batch_size       = 16
  max_prompt_len   = 8
  max_new_tokens   = 4
  beta             = 0
  dynamic_sampling = true
  max_draws        = 4
  steps            = 4
  eval_every       = 2
  eval_data        = held_out
  lora             = lora(rank = 2, alpha = 4)
}
dataset held_out = synthetic("addition", digits = 1, count = 6, seed = 2)
"""

# One-digit sums: always 0 (an all-equal group). Two-digit sums: depends on the sampled text.
REWARD = """
def mixed(prompts, completions, answer, **columns):
    return [float(len(set(c)) % 2) if len(a) == 2 else 0.0 for c, a in zip(completions, answer)]
"""


def test_dynamic_sampling_drops_all_equal_groups(tmp_path: Path) -> None:
    (tmp_path / "p.tnx").write_text(PIPELINE)
    (tmp_path / "r.py").write_text(REWARD)
    assert tnx("run", [str(tmp_path / "p.tnx"), "--run-dir", str(tmp_path / "run")]) == 0
    rows = metric_rows(tmp_path / "run", "solve")
    assert len(rows) == 4
    for row in rows:
        assert row["dynamic/varied_groups"] + row["dynamic/equal_groups"] == 4
        if row["dynamic/draws"] < 4:  # stopped early: enough varied groups, none equal kept
            assert row["dynamic/equal_groups"] == 0 and row["advantage_std"] > 0
    assert any(row["dynamic/draws"] > 1 for row in rows)  # ~half the prompts give equal groups
    # eval_every: the held-out prompts scored by the stage's reward at steps 2 and 4
    evals = [json.loads(line) for line in (tmp_path / "run" / "stages" / "solve" / "eval.jsonl").open()]
    assert [e["step"] for e in evals] == [2, 4] and all(0.0 <= e["reward"] <= 1.0 for e in evals)
    output = tmp_path / "run" / "stages" / "solve" / "output"  # LoRA: merged model + adapter
    assert (output / "model.safetensors").is_file() and (output / "adapter").is_dir()
