"""Rewards: from a validated `reward NAME = ...` declaration to a scoring function.

Every reward is called as `reward(prompts, completions, lengths, columns)` and
returns a float32 array of one score per completion. `lengths` counts the
completion's tokens (the DAPO-style length penalty is in tokens, never
characters); `columns` holds the dataset's columns for the same rows.

User rewards, `python("file.py:fn")`, are loaded only at run time (never by
`tnx lint`) and called as `fn(prompts, completions, **columns) -> list[float]`.

`score_rows` calls a reward on a batch of dataset rows and makes a failure name
the row as a person finds it (`dataset_row_names`: the file and line or row
number), in training, held-out scoring and eval blocks alike.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from tunix_dsl.data.datasets import jsonl_row_lines
from tunix_dsl.models.info import resolve_path
from tunix_dsl.runtime.user_code import import_user_file
from tunix_dsl.schemas.datasets import JsonlSource, ParquetSource
from tunix_dsl.schemas.sources import (
    ExactMatchReward,
    LengthPenaltyReward,
    PythonReward,
    RegexReward,
    RewardSchema,
)

RewardFn = Callable[[Sequence[str], Sequence[str], np.ndarray, Mapping[str, Sequence[Any]]], np.ndarray]


class RewardError(Exception):
    """A reward that cannot be loaded or returned something unusable; names the reward and the fix.

    `completion`: the index of the offending completion in the call, when one is to blame
    (the RL loop maps it to its dataset row)."""

    def __init__(self, message: str, completion: int | None = None):
        super().__init__(message)
        self.completion = completion


# The built-in rewards' run-time halves: each schema names its builder in `implementation`
# (`tunix_dsl.schemas.sources`), exactly as a plugin reward does.


def exact_match(spec: ExactMatchReward, _base: Path, name: str) -> RewardFn:
    def score(prompts, completions, lengths, columns) -> np.ndarray:
        expected = columns[spec.field]
        norm = (lambda s: s.strip()) if spec.strip else (lambda s: s)
        return np.asarray([float(norm(c) == norm(str(e))) for c, e in zip(completions, expected, strict=True)],
                          np.float32)

    return score


def regex(spec: RegexReward, _base: Path, name: str) -> RewardFn:
    pattern = re.compile(spec.pattern)

    def score(prompts, completions, lengths, columns) -> np.ndarray:
        return np.asarray([spec.score if pattern.search(c) else 0.0 for c in completions], np.float32)

    return score


def length_penalty(spec: LengthPenaltyReward, _base: Path, name: str) -> RewardFn:
    def score(prompts, completions, lengths, columns) -> np.ndarray:
        over = np.maximum(np.asarray(lengths, np.float32) - spec.target, 0.0)
        return (-spec.weight * over).astype(np.float32)

    return score


def python_function(spec: PythonReward, base: Path, name: str) -> RewardFn:
    module, path = import_user_file(spec.file, base, f"reward `{name}`", f"tnx_reward_{name}", RewardError)
    fn = getattr(module, spec.function, None)
    if not callable(fn):
        raise RewardError(f"reward `{name}`: {path} has no function `{spec.function}`")
    wanted = tuple(spec.columns_used)

    def score(prompts, completions, lengths, columns) -> np.ndarray:
        passed = {c: list(columns[c]) for c in wanted} if wanted else {k: list(v) for k, v in columns.items()}
        try:
            out = fn(list(prompts), list(completions), **passed)
        except Exception as err:
            raise RewardError(
                f"reward `{name}` ({spec.target}) raised {type(err).__name__}: {err}"
            ) from err
        try:
            values = [float(v) for v in out]
        except (TypeError, ValueError) as err:
            raise RewardError(f"reward `{name}` ({spec.target}) must return a list of numbers: {err}") from err
        if len(values) != len(completions):
            raise RewardError(
                f"reward `{name}` ({spec.target}) returned {len(values)} scores for "
                f"{len(completions)} completions"
            )
        bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
        if bad is not None:
            raise RewardError(f"reward `{name}` ({spec.target}) returned a NaN or infinite score "
                              f"({values[bad]}) for completion {completions[bad]!r}", completion=bad)
        return np.asarray(values, np.float32)

    return score


def build_reward(spec: RewardSchema, base_dir: Path, name: str) -> RewardFn:
    """The scoring function of a reward declaration: its schema's `implementation`
    (`build(spec, base_dir, name) -> RewardFn`), loaded here, at run time; built-in and
    plugin rewards alike."""
    from tunix_dsl.schemas.kinds import LoweringError
    from tunix_dsl.schemas.plugins import load_implementation

    try:
        builder = load_implementation("tunix_dsl.rewards", type(spec))
    except LoweringError as err:
        raise RewardError(f"reward `{name}`: {err}") from None
    if not callable(builder):
        raise RewardError(f"reward `{name}`: the implementation of "
                          f"`{type(spec).call_name}` is not a function")
    return builder(spec, Path(base_dir), name)


# --------------------------------------------------------------------------- naming the row

T = TypeVar("T")
RowName = Callable[[int], str]  # dataset row index (0-based) -> where a person finds the row


def dataset_row_names(spec: Any, base_dir: Path, dataset: str) -> RowName:
    """Names of a dataset declaration's rows (as `runtime.resources.dataset_rows` returns
    them): "row 7 of `sums` (data/sums.jsonl:9)", "… (data/part-1.parquet row 3)", or
    "… (synthetic)". The file is read again only when a name is asked for (an error)."""

    @cache
    def origins() -> list[str]:
        if isinstance(spec, JsonlSource):
            path = resolve_path(spec.path, base_dir)
            return [f"{path}:{line}" for line in jsonl_row_lines(path)]
        if isinstance(spec, ParquetSource):
            from tunix_dsl.data.parquet import file_row_counts

            counts = file_row_counts(resolve_path(spec.path, base_dir), spec.split)
            return [f"{file} row {n}" for file, count in counts for n in range(1, count + 1)]
        return []

    def name(row: int) -> str:
        found = origins()
        where = found[row] if row < len(found) else type(spec).__name__.removesuffix("Source").lower()
        return f"row {row + 1} of `{dataset}` ({where})"

    return name


def score_rows(metric: Callable[[Sequence[str], Sequence[str], np.ndarray, Mapping[str, Sequence[Any]]], T],
               prompts: Sequence[str], completions: Sequence[str], lengths: np.ndarray,
               columns: Mapping[str, Sequence[Any]], row_name: RowName) -> T:
    """`metric(prompts, completions, lengths, columns)` on a batch whose completion i is the
    row `row_name(i)`. A `RewardError` about one completion gets that row's name; one about
    none (a reward that raised on the whole batch) is traced to the first completion that
    fails when scored alone — the reward is called again one completion at a time, only
    on this error path."""
    try:
        return metric(prompts, completions, lengths, columns)
    except RewardError as err:
        culprit = err.completion if err.completion is not None else _first_failing(
            metric, prompts, completions, lengths, columns)
        if culprit is None:
            raise
        raise RewardError(f"{err}; at {row_name(culprit)}", completion=culprit) from err


def _first_failing(metric: Callable[..., Any], prompts: Sequence[str], completions: Sequence[str],
                   lengths: np.ndarray, columns: Mapping[str, Sequence[Any]]) -> int | None:
    for i in range(len(completions)):
        try:
            metric([prompts[i]], [completions[i]], np.asarray(lengths)[i : i + 1],
                   {name: [values[i]] for name, values in columns.items()})
        except RewardError:
            return i
    return None
