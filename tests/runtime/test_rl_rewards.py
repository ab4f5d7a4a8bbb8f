"""The host step of RL stages: weighted rewards, the overlong penalty in tokens, checked outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tunix_dsl.runtime.rewards import RewardError, dataset_row_names, score_rows
from tunix_dsl.runtime.rl_rewards import StageRewards, overlong_penalty
from tunix_dsl.schemas.datasets import JsonlSource, ParquetSource, SyntheticSource
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
    total, parts = rewards(["p", "p"], ["éééééééé", "x"], np.array([8, 1]), {})
    np.testing.assert_allclose(total, [0.5 + 4.0 - 1.0, 0.5 + 4.0])
    assert set(parts) == {"a", "b", "overlong"}


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        (lambda p, c, n, cols: [1.0], r"stage `s`: reward `r` returned 1 scores for 2 completions"),
        (lambda p, c, n, cols: [0.0, float("inf")][: len(c)],
         r"reward `r` returned inf for prompt 'q', completion '2'; rewards must be finite numbers; "
         r"at row 8 of `d` \(synthetic\)$"),
        (lambda p, c, n, cols: 1 / 0, r"reward `r` raised ZeroDivisionError: division by zero; at row 7 of `d`"),
        (lambda p, c, n, cols: 1 / 0 if "2" in c else [0.0] * len(c),  # fails on the second alone
         r"reward `r` raised ZeroDivisionError: division by zero; at row 8 of `d`"),
        (lambda p, c, n, cols: ["a", "b"], r"reward `r` must return a list of numbers"),
    ],
)
def test_bad_reward_output_names_stage_reward_and_row(fn, message: str) -> None:
    rewards = StageRewards("s", [("r", fn, 1.0)], max_new_tokens=4)
    name = dataset_row_names(SyntheticSource(task="addition"), Path("."), "d")
    row_ids = [6, 7]  # the batch's completions come from dataset rows 6 and 7 (0-based)
    with pytest.raises(RewardError, match=message):
        score_rows(rewards, ["p", "q"], ["1", "2"], np.array([1, 1]), {}, lambda i: name(row_ids[i]))


def test_rows_are_named_by_file_and_line_or_row(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text('{"prompt": "a"}\n\n{"prompt": "b"}\n  \n{"prompt": "c"}\n')
    name = dataset_row_names(JsonlSource(path="d.jsonl"), tmp_path, "d")
    assert name(2) == f"row 3 of `d` ({tmp_path / 'd.jsonl'}:5)"  # blank lines hold no row
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "p").mkdir()
    for part, prompts in enumerate((["a", "b"], ["c", "d", "e"])):
        pq.write_table(pa.table({"prompt": prompts}), tmp_path / "p" / f"part-{part}.parquet")
    name = dataset_row_names(ParquetSource(path="p"), tmp_path, "p")
    assert name(3) == f"row 4 of `p` ({tmp_path / 'p' / 'part-1.parquet'} row 2)"
