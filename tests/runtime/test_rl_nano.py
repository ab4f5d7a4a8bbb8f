"""GRPO and PPO raise the exact-match reward of a briefly pretrained `nano` model on synthetic
addition: the mean reward of the last fifth of the RL steps beats the first fifth's.

One pipeline (`rl_nano.tnx`) pretrains the base once and runs both RL stages from it. Measured
by hand (`tnx run tests/runtime/rl_nano.tnx --set seed=N`), first → last fifth:

    seed   GRPO            PPO
    0      0.382 → 0.635   0.348 → 0.578
    1      0.283 → 0.433   0.279 → 0.465
    2      0.287 → 0.500   0.229 → 0.408

A step's mean reward over 128 (GRPO) or 64 (PPO) sampled answers moves by about ±0.06, so the
difference of two 8-step means by about ±0.03: the margin of 0.1 is three of those, and the
smallest rise measured (0.15) clears it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.runtime.durable_helpers import fresh_workdir, metric_rows
from tunix_dsl.runtime.cli_commands import main as tnx

STEPS = 40
MARGIN = 0.1


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = fresh_workdir(tmp_path_factory.mktemp("rl_nano"), "rl_nano.tnx")
    assert tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run")]) == 0
    return work / "run"


@pytest.mark.parametrize("stage", ["solve_grpo", "solve_ppo"])
def test_exact_match_reward_rises_from_a_pretrained_nano_model(run_dir: Path, stage: str) -> None:
    rows = metric_rows(run_dir, stage)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    # exact match is the only reward: the mean reward is the fraction of sampled sums that are right
    rewards = [r["reward/correct"] for r in rows]
    assert rewards == [r["reward"] for r in rows]
    fifth = STEPS // 5
    first, last = float(np.mean(rewards[:fifth])), float(np.mean(rewards[-fifth:]))
    assert last > first + MARGIN, (first, last, rewards)
