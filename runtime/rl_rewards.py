"""The host step of an RL stage: completions → text → one float reward per completion.

`StageRewards` calls every reward of the stage on the decoded completions with
the dataset columns of their rows, checks what came back (a list of finite
numbers, one per completion) and combines them: r = Σ_i w_i·r_i, plus DAPO's
overlong penalty counted in tokens. Anything wrong stops the stage with a
`RewardError` naming the stage and the reward, and the completion it is about:
the caller (`rewards.score_rows`) turns that into the dataset row's file and line.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunix_dsl.runtime.rewards import RewardError, RewardFn
from tunix_dsl.schemas.training import OverlongPenalty


def overlong_penalty(lengths: np.ndarray, max_new_tokens: int, buffer: int, penalty: float) -> np.ndarray:
    """DAPO soft overlong punishment in tokens: 0 up to L − B, then a linear ramp to −penalty at L.

    `lengths` are generated tokens per completion (the stop token included).
    """
    start = max_new_tokens - buffer
    over = np.clip(np.asarray(lengths, np.float32) - start, 0.0, float(buffer))
    return (-penalty * over / buffer).astype(np.float32)


@dataclass
class StageRewards:
    """The rewards of one RL stage, with their weights."""

    stage: str
    rewards: list[tuple[str, RewardFn, float]]  # (name, scoring function, weight)
    max_new_tokens: int
    overlong: OverlongPenalty | None = None

    def __call__(
        self, prompts: Sequence[str], completions: Sequence[str], lengths: np.ndarray,
        columns: Mapping[str, Sequence[Any]],
    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(total reward [N] float32, each component by name)."""
        parts: dict[str, np.ndarray] = {}
        total = np.zeros(len(completions), np.float32)
        for name, fn, weight in self.rewards:
            scores = self._checked(name, fn, prompts, completions, lengths, columns)
            parts[name] = scores
            total += np.float32(weight) * scores
        if self.overlong is not None:
            penalty = overlong_penalty(lengths, self.max_new_tokens, self.overlong.buffer, self.overlong.penalty)
            parts["overlong"] = penalty
            total += penalty
        return total, parts

    def _checked(self, name: str, fn: RewardFn, prompts: Sequence[str], completions: Sequence[str],
                 lengths: np.ndarray, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        where = f"stage `{self.stage}`: reward `{name}`"
        try:
            out = fn(prompts, completions, lengths, columns)
        except RewardError as err:
            raise RewardError(f"stage `{self.stage}`: {err}", completion=err.completion) from err
        except Exception as err:  # a built-in failing on the data: name it, no traceback
            raise RewardError(f"{where} raised {type(err).__name__}: {err}") from err
        try:
            values = [float(v) for v in out]
        except (TypeError, ValueError) as err:
            raise RewardError(f"{where} must return a list of numbers, one per completion: {err}") from err
        if len(values) != len(completions):
            raise RewardError(f"{where} returned {len(values)} scores for {len(completions)} completions; "
                              "return one score per completion")
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise RewardError(
                    f"{where} returned {value} for prompt {prompts[i]!r}, completion "
                    f"{completions[i]!r}; rewards must be finite numbers", completion=i)
        return np.asarray(values, np.float32)
