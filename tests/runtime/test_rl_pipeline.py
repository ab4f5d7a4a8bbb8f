"""GRPO stages end to end: reward rises, runs are reproducible and resume bit-identically,
and a broken reward stops the stage naming the reward and the row."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.durable_helpers import (
    assert_bit_identical,
    fresh_workdir,
    interrupt,
    metric_rows,
    subprocess_env,
)
from tunix_dsl.runtime.cli_commands import main as tnx

STAGES = ("base", "solve")


def run(work: Path, *extra: str) -> int:
    return tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run"), *extra])


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = fresh_workdir(tmp_path_factory.mktemp("rl_reference"), "rl_small.tnx")
    assert run(work) == 0
    return work / "run"


def rewards(run_dir: Path) -> list[float]:
    return [r["reward"] for r in metric_rows(run_dir, "solve")]


def test_grpo_raises_the_mean_reward(reference: Path) -> None:
    values = rewards(reference)
    fifth = max(1, len(values) // 5)
    assert np.mean(values[-fifth:]) > np.mean(values[:fifth]) + 0.2, values


def test_grpo_metrics_every_step(reference: Path) -> None:
    rows = metric_rows(reference, "solve")
    assert [r["step"] for r in rows] == list(range(1, 16))
    expected = {"reward", "reward_std", "reward/correct", "reward/two_digits", "completion_length",
                "completion_length_max", "clip_fraction", "approx_kl_old", "kl_ref", "entropy",
                "advantage_mean", "advantage_std", "rollout_tokens_per_s", "loss", "grad_norm"}
    assert expected <= set(rows[0])
    # μ = 1: the update's ratio is exactly 1 and nothing is clipped (old = sg(logp))
    assert all(r["ratio"] == 1.0 and r["clip_fraction"] == 0.0 for r in rows)
    assert all(r["kl_ref"] >= 0 for r in rows)  # k3 is non-negative
    assert rows[0]["kl_ref"] < 1e-6  # the first update: the policy still equals its reference
    log = (reference / "run.log").read_text()
    assert "solve step 15/15 reward=" in log


def test_two_runs_give_identical_rewards_and_outputs(reference: Path, tmp_path: Path) -> None:
    work = fresh_workdir(tmp_path, "rl_small.tnx")
    assert run(work) == 0
    assert rewards(work / "run") == rewards(reference)
    assert_bit_identical(reference, work / "run", STAGES)


def test_sigkill_mid_grpo_then_rerun_is_bit_identical(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = fresh_workdir(tmp_path, "rl_small.tnx")
    killed = interrupt(work, "solve", 9)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    # The step-5 checkpoint is written asynchronously: committed or not by the kill.
    committed = (work / "run" / "stages" / "solve" / "checkpoints" / "5").is_dir()
    assert run(work) == 0
    out = capsys.readouterr().out
    assert "stage base (pretrain): cached" in out
    assert ("resuming at step 5 from" in out) == committed
    assert rewards(work / "run") == rewards(reference)
    assert_bit_identical(reference, work / "run", STAGES)


def test_sigterm_mid_grpo_saves_and_the_rerun_resumes_bit_identically(
    reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    work = fresh_workdir(tmp_path, "rl_small.tnx")
    cmd = [sys.executable, "-m", "tunix_dsl", "run", str(work / "p.tnx"), "--run-dir", str(work / "run")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=subprocess_env())
    assert proc.stdout is not None
    for line in proc.stdout:
        if "solve step 4/" in line:
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err[-2000:]  # interrupted, resumable
    stopped = next(line for line in rest.splitlines() if line.startswith("stopped by SIGTERM"))
    step = int(stopped.split(" at step ")[1].split("/")[0])
    assert 4 <= step < 15
    assert run(work) == 0
    assert f"resuming at step {step} from" in capsys.readouterr().out
    assert rewards(work / "run") == rewards(reference)
    assert_bit_identical(reference, work / "run", STAGES)


def test_a_finished_rl_stage_is_cached(reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shutil.copytree(reference, tmp_path / "run")
    shutil.copy(reference.parent / "p.tnx", tmp_path / "p.tnx")
    assert run(tmp_path) == 0
    out = capsys.readouterr().out
    assert "stage solve (grpo): cached" in out and "stage base (pretrain): cached" in out


BROKEN = """
pipeline broken_reward {{ seed = 0 }}
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 20, seed = 1)
reward bad = python("r.py:{fn}")
stage solve: grpo {{
  policy = tiny
  data = sums
  rewards = [bad]
  generations = 2
  batch_size = 4
  max_prompt_len = 8
  max_new_tokens = 2
  steps = {steps}
  optimizer = adamw(lr = {lr})
  on_nonfinite = "{on_nonfinite}"
  beta = {beta}
}}
"""

REWARDS = """
def raises(prompts, completions, **columns):
    raise ZeroDivisionError("boom")

def nan_on_third(prompts, completions, answer, **columns):
    return [float("nan") if i == 2 else 0.0 for i in range(len(completions))]
"""


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ("raises", r"stage `solve`: reward `bad` \(r.py:raises\) raised ZeroDivisionError: boom; "
                   r"at row \d+ of `sums` \(synthetic\)"),
        ("nan_on_third", r"stage `solve`: reward `bad` \(r.py:nan_on_third\) returned a NaN or infinite "
                         r"score \(nan\) for completion .*; at row \d+ of `sums` \(synthetic\)"),
    ],
)
def test_a_broken_reward_stops_the_stage_naming_reward_and_row(
    tmp_path: Path, capsys: pytest.CaptureFixture, fn: str, message: str
) -> None:
    (tmp_path / "p.tnx").write_text(BROKEN.format(fn=fn, steps=1, lr=1e-3, on_nonfinite="stop", beta=0.04))
    (tmp_path / "r.py").write_text(REWARDS)
    assert run(tmp_path) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err


HELD_OUT = """
pipeline held_out_reward {{ seed = 0 }}
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset sums = synthetic("addition", digits = 1, count = 20, seed = 1)
dataset held = jsonl("held.jsonl")
reward flaky = python("r.py:{fn}")
stage solve: grpo {{
  policy = tiny
  data = sums
  rewards = [flaky]
  generations = 2
  batch_size = 4
  max_prompt_len = 8
  max_new_tokens = 2
  steps = 1
  eval_every = 1
  eval_data = held
}}
"""

# Only the held-out rows have a `boom` column: training scores 0, scoring the held-out set fails.
HELD_OUT_REWARDS = """
def nan_on_boom(prompts, completions, **columns):
    return [float("nan") if b == "yes" else 0.0 for b in columns.get("boom", [""] * len(completions))]

def raises_on_boom(prompts, completions, **columns):
    if "yes" in columns.get("boom", []):
        raise ValueError("cannot score this one")
    return [0.0] * len(completions)
"""

# the third row is on line 4 (line 2 is blank); the eval batches order rows by prompt length
HELD_ROWS = ('{"prompt": "1+1=", "boom": "no"}\n\n{"prompt": "22+22=", "boom": "no"}\n'
             '{"prompt": "3+3=", "boom": "yes"}\n')


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ("nan_on_boom", r"reward `flaky` \(r.py:nan_on_boom\) returned a NaN or infinite score \(nan\) for "
                        r"completion .*; at row 3 of `held` \(.*held.jsonl:4\)"),
        ("raises_on_boom", r"reward `flaky` \(r.py:raises_on_boom\) raised ValueError: cannot score this one; "
                           r"at row 3 of `held` \(.*held.jsonl:4\)"),
    ],
)
def test_a_held_out_reward_error_names_the_file_and_line_of_the_row(
    tmp_path: Path, capsys: pytest.CaptureFixture, fn: str, message: str
) -> None:
    (tmp_path / "p.tnx").write_text(HELD_OUT.format(fn=fn))
    (tmp_path / "r.py").write_text(HELD_OUT_REWARDS)
    (tmp_path / "held.jsonl").write_text(HELD_ROWS)
    assert run(tmp_path) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(message, err), err


REWARD_OK = "def ok(prompts, completions, **columns):\n    return [float(len(c) % 2) for c in completions]\n"


def test_a_diverging_update_stops_the_stage_or_is_skipped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "r.py").write_text(REWARD_OK)
    (tmp_path / "p.tnx").write_text(BROKEN.format(fn="ok", steps=3, lr=1e30, on_nonfinite="stop", beta=0.04))
    assert run(tmp_path) == 1
    err = capsys.readouterr().err
    assert re.search(r"stage `solve`: (loss|grad_norm) = (nan|inf|-inf) at step \d+; stopped", err), err
    # no KL term here: equal rewards then give an exactly zero gradient, so the steps after the
    # skipped one update (a KL between the score and update programs' forwards of an unmoved
    # policy is zero only up to rounding, which a learning rate of 1e30 turns into an overflow)
    (tmp_path / "p.tnx").write_text(BROKEN.format(fn="ok", steps=3, lr=1e30, on_nonfinite="skip", beta=0))
    assert run(tmp_path, "--force", "solve") == 0
    assert re.search(r"warning: stage `solve`: step \d+ skipped \(", capsys.readouterr().out)
