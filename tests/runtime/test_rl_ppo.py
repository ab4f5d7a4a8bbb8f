"""PPO end to end: a critic copied from the policy, GAE, the reward rises."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.runtime.durable_helpers import fresh_workdir, metric_rows
from tunix_dsl.runtime.cli_commands import main as tnx


def test_ppo_raises_the_mean_reward_and_logs_its_critic(tmp_path: Path) -> None:
    work = fresh_workdir(tmp_path, "rl_ppo.tnx")
    assert tnx("run", [str(work / "p.tnx"), "--run-dir", str(work / "run")]) == 0
    rows = metric_rows(work / "run", "solve")
    assert [r["step"] for r in rows] == list(range(1, 16))
    rewards = [r["reward"] for r in rows]
    assert np.mean(rewards[-3:]) > np.mean(rewards[:3]) + 0.2, rewards
    assert {"value_loss", "explained_variance", "value_clip_fraction", "kl_ref", "entropy",
            "clip_fraction", "advantage_mean", "advantage_std"} <= set(rows[0])
    assert all(np.isfinite(r["value_loss"]) for r in rows)
    # the critic learns: its value loss falls from the first steps (zero-initialised head)
    assert np.mean([r["value_loss"] for r in rows[-3:]]) < np.mean([r["value_loss"] for r in rows[:3]])
    # β > 0 with the policy's start as reference: the first update's KL is 0 and grows
    assert rows[0]["kl_ref"] < 1e-6 < rows[-1]["kl_ref"]
    assert (work / "run" / "stages" / "solve" / "output" / "model.safetensors").is_file()
