"""The host step of RL stages: weighted rewards, the overlong penalty in tokens, checked outputs."""

from __future__ import annotations

import numpy as np
import pytest

from tunix_dsl.runtime.rewards import RewardError
from tunix_dsl.runtime.rl_rewards import StageRewards, overlong_penalty
from tunix_dsl.schemas.training import OverlongPenalty


def test_overlong_penalty_ramps_over_the_last_buffer_tokens() -> None:
    # L = 8, buffer 4: free up to 4 tokens, then −penalty·(len − 4)/4, −penalty at 8
    lengths = np.array([1, 4, 5, 6, 8])
    np.testing.assert_allclose(overlong_penalty(lengths, 8, 4, 2.0), [0, 0, -0.5, -1.0, -2.0])


def const(value: float):
    return lambda prompts, completions, lengths, columns: np.full(len(completions), value, np.float32)


def test_rewards_are_weighted_and_summed_with_the_overlong_penalty() -> None:
    rewards = StageRewards("s", [("a", const(1.0), 0.5), ("b", const(2.0), 2.0)], max_new_tokens=8,
                           overlong=OverlongPenalty(buffer=4, penalty=1.0))
    # lengths in tokens: the completions' characters do not matter ("é" is 2 bytes)
    total, parts = rewards(["p", "p"], ["éééééééé", "x"], np.array([8, 1]), {}, [10, 11])
    np.testing.assert_allclose(total, [0.5 + 4.0 - 1.0, 0.5 + 4.0])
    assert set(parts) == {"a", "b", "overlong"}


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda p, c, n, cols: [1.0], r"stage `s`: reward `r` returned 1 scores for 2 completions"),
        (lambda p, c, n, cols: [0.0, float("inf")], r"reward `r` returned inf for dataset row 7"),
        (lambda p, c, n, cols: 1 / 0, r"reward `r` raised ZeroDivisionError"),
        (lambda p, c, n, cols: ["a", "b"], r"reward `r` must return a list of numbers"),
    ],
)
def test_bad_reward_output_names_stage_reward_and_row(fn, message: str) -> None:
    rewards = StageRewards("s", [("r", fn, 1.0)], max_new_tokens=4)
    with pytest.raises(RewardError, match=message):
        rewards(["p", "q"], ["1", "2"], np.array([1, 1]), {}, [6, 7])
