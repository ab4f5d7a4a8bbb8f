"""DAPO dynamic sampling: keep only groups whose rewards differ, refill from further prompts.

A group whose G completions all got the same reward has zero advantage
everywhere: it adds no gradient, only dilutes the batch. With
`dynamic_sampling = true` the loop draws further rollout batches (each from the
next prompts of the data stream, with its own PRNG key) until B groups with
differing rewards are in hand or `max_draws` batches were drawn; past the cap,
all-equal groups (in draw order) fill what is missing, so every update sees the
same batch shape.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def varied_groups(rewards: np.ndarray, group: int) -> np.ndarray:
    """[N / G] bool: groups whose rewards are not all equal."""
    grouped = np.asarray(rewards).reshape(-1, group)
    return grouped.max(axis=1) != grouped.min(axis=1)


def select_groups(draws: Sequence[np.ndarray], group: int, wanted: int) -> list[tuple[int, int]]:
    """(draw, group) pairs making up one batch of `wanted` groups from the reward arrays of
    the draws so far: varied groups first (in draw order), then all-equal ones to fill."""
    varied: list[tuple[int, int]] = []
    equal: list[tuple[int, int]] = []
    for d, rewards in enumerate(draws):
        for g, keep in enumerate(varied_groups(rewards, group)):
            (varied if keep else equal).append((d, g))
    return (varied + equal)[:wanted]


def enough(draws: Sequence[np.ndarray], group: int, wanted: int) -> bool:
    return sum(int(varied_groups(r, group).sum()) for r in draws) >= wanted


def gather_rows(arrays: Sequence[dict[str, np.ndarray]], chosen: Sequence[tuple[int, int]],
                group: int) -> dict[str, np.ndarray]:
    """The rows of the chosen groups, stacked in order (each group's G rows kept together)."""
    out = {}
    for name in arrays[0]:
        out[name] = np.concatenate([arrays[d][name][g * group:(g + 1) * group] for d, g in chosen])
    return out
