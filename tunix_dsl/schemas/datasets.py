"""Schemas of the dataset sources: what `dataset NAME = f(...)` accepts (jax-free).

`DatasetSchema` is the base every source derives from, built-in or plugin; its
hooks let lint and the pre-flight check look at a source without reading its rows.
The built-in sources are `synthetic(...)`, `jsonl(...)` and `parquet(...)`; their
readers are in `tunix_dsl.data.sources`.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from pydantic import Field

from tunix_dsl.schemas.base import Problem, Schema


class DatasetSchema(Schema):
    """Base of every `dataset NAME = f(...)` source.

    Every dataset, built-in or plugin, sets `implementation = "module:rows"`, called
    as `rows(spec, base_dir, consumer=None, required=()) -> list[dict]` (jax-free code:
    `tnx plan` reads rows for its checks; `tunix_dsl.data.sources` holds the built-in
    ones). The methods below feed lint and the pre-flight check without reading rows.
    """

    implementation: ClassVar[str] = ""

    def known_columns(self, base_dir: Path) -> frozenset[str] | None:
        """Columns every row has, or None when they cannot be known before reading."""
        return None

    def row_lengths(self, base_dir: Path, limit: int) -> list[dict[str, int]] | None:
        """UTF-8 byte lengths of the string columns of rows lint may measure cheaply (the
        sequence-length check TNX313): every row, the first `limit` (when all of those are
        dropped the length is wrong for this data), or one bound no row is below; None when
        that is not known without reading the data."""
        return None

    def files(self) -> dict[str, str]:
        """Field → path (as written, relative to the `.tnx` file) of each file the source
        reads: the pre-flight check (TNX370/TNX371) finds them missing and reads their rows
        through `implementation` before anything trains."""
        return {}


class SyntheticSource(DatasetSchema):
    """A built-in deterministic task (`tunix_dsl.data.datasets.SYNTHETIC_TASKS`).

    Keyword arguments other than `count` and `seed` are the task's own
    parameters (e.g. `digits` for addition); `tnx explain synthetic` lists them.
    """

    call_name = "synthetic"
    implementation = "tunix_dsl.data.sources:synthetic"
    positional = ("task",)
    extras_field = "params"
    task: str = Field(description="task name, e.g. \"addition\"")
    count: int = Field(1000, gt=0, description="number of rows")
    seed: int = Field(0, ge=0, description="generator seed; same seed, same rows")
    params: dict[str, int | float | str | bool] = Field(
        default_factory=dict, description="the task's own parameters"
    )

    def known_columns(self, base_dir: Path) -> frozenset[str] | None:
        from tunix_dsl.data.datasets import SYNTHETIC_TASKS

        task = SYNTHETIC_TASKS.get(self.task)
        return frozenset(task.columns) if task else None

    def row_lengths(self, base_dir: Path, limit: int) -> list[dict[str, int]] | None:
        # exact over the rows of a small dataset (a task's bound may not be reached); the
        # task's own bound over all possible rows for a larger one
        return _synthetic_lengths(self.task, self.count, self.seed,
                                  tuple(sorted(self.params.items())), limit)

    def problems(self) -> list[Problem]:
        from tunix_dsl.data.datasets import SYNTHETIC_TASKS

        found = super().problems()
        task = SYNTHETIC_TASKS.get(self.task)
        if task is None:
            close = difflib.get_close_matches(self.task, list(SYNTHETIC_TASKS), n=1)
            found.append(Problem(
                "task", f"unknown synthetic task \"{self.task}\"", "TNX203", "unknown task",
                f"did you mean `\"{close[0]}\"`?" if close else
                "tasks: " + ", ".join(SYNTHETIC_TASKS)))
            return found
        for key, value in self.params.items():
            info = task.params.get(key)
            if info is None:
                known = [k for k in task.params if k not in ("count", "seed")]
                close = difflib.get_close_matches(key, known, n=1)
                found.append(Problem(
                    f"params.{key}", f"unknown parameter `{key}` for synthetic task "
                    f"\"{self.task}\"", "TNX101", "unknown parameter",
                    f"did you mean `{close[0]}`?" if close else
                    "parameters: " + (", ".join(known) or "none")))
            elif not _fits(value, info.type):
                found.append(Problem(
                    f"params.{key}", f"`{key}` expects {_TYPE_NAMES.get(info.type, 'a value')}, "
                    f"found `{value!r}`", "TNX201", "wrong type"))
        if not found:  # the generator's own range check, so that what lints clean builds
            from tunix_dsl.data.synthetic_tasks import default_values, range_problem

            values = {**default_values(self.task, self.params), "count": self.count,
                      "seed": self.seed}
            problem = range_problem(self.task, values)
            if problem is not None:
                key, why = problem
                path = key if key in ("count", "seed") else f"params.{key}.value"
                found.append(Problem(path, f"synthetic(\"{self.task}\"): {why}", "TNX202",
                                     "out of range", "`tnx explain synthetic` lists the ranges"))
        return found


@functools.lru_cache(maxsize=64)
def _synthetic_lengths(task: str, count: int, seed: int,
                       params: tuple[tuple[str, int | float | str | bool], ...],
                       limit: int) -> list[dict[str, int]] | None:
    from tunix_dsl.data.synthetic_tasks import SYNTHETIC_TASKS, default_values, synthetic_rows

    if task not in SYNTHETIC_TASKS:
        return None
    if count > limit:
        return [SYNTHETIC_TASKS[task].shortest(default_values(task, dict(params)))]
    return [string_lengths(row) for row in
            synthetic_rows(task, count=count, seed=seed, **dict(params))]


def string_lengths(row: Mapping[str, object]) -> dict[str, int]:
    """Column → UTF-8 byte length, for the string columns of a row (`row_lengths`)."""
    return {k: len(v.encode()) for k, v in row.items() if isinstance(v, str)}


class JsonlSource(DatasetSchema):
    """One JSON object per line. Each column field names the file key that holds it.

    `jsonl("qa.jsonl", prompt = "question", completion = "answer")`: the
    canonical column `prompt` is read from key `question`. Keys named like a
    canonical column (`prompt`, `text`, ...) need no mapping.
    """

    call_name = "jsonl"
    implementation = "tunix_dsl.data.sources:jsonl"
    positional = ("path",)
    path: str = Field(description="path of the .jsonl file", min_length=1)
    text: str | None = Field(None, description="file key holding the `text` column")
    prompt: str | None = Field(None, description="file key holding the `prompt` column")
    completion: str | None = Field(None, description="file key holding the `completion` column")
    chosen: str | None = Field(None, description="file key holding the `chosen` column")
    rejected: str | None = Field(None, description="file key holding the `rejected` column")
    answer: str | None = Field(None, description="file key holding the `answer` column")
    messages: str | None = Field(
        None, description="file key holding the `messages` column (a list of {role, content})")

    def mapping(self) -> dict[str, str]:
        """Canonical column → file key, for the columns given explicitly."""
        return {n: getattr(self, n) for n in _COLUMN_FIELDS if getattr(self, n) is not None}

    def known_columns(self, base_dir: Path) -> frozenset[str] | None:
        """The keys of the first rows (a few lines read), mapped to canonical columns."""
        from tunix_dsl.data.datasets import mapped_columns, peek_jsonl_columns
        from tunix_dsl.models.info import resolve_path

        keys = peek_jsonl_columns(resolve_path(self.path, base_dir))
        return frozenset(mapped_columns(keys, self.mapping())) if isinstance(keys, set) else None

    def row_lengths(self, base_dir: Path, limit: int) -> list[dict[str, int]] | None:
        from tunix_dsl.data.datasets import peek_jsonl_rows
        from tunix_dsl.models.info import resolve_path

        peeked = peek_jsonl_rows(resolve_path(self.path, base_dir), self.mapping(), limit)
        return None if not peeked or not peeked[0] else [string_lengths(r) for r in peeked[0]]

    def files(self) -> dict[str, str]:
        return {"path": self.path}


_COLUMN_FIELDS = ("text", "prompt", "completion", "chosen", "rejected", "answer", "messages")


class ParquetSource(DatasetSchema):
    """A parquet file, or a directory of parquet files (a Hugging Face dataset's shards).

    `parquet("data/", split = "train", prompt = "question")`: columns map as for `jsonl`;
    a directory is read file by file in path order, a record batch at a time.
    """

    call_name = "parquet"
    implementation = "tunix_dsl.data.sources:parquet"
    positional = ("path",)
    path: str = Field(description="a .parquet file, or a directory searched for them", min_length=1)
    split: str | None = Field(
        None, description="keep the directory's files of this split (\"train\" matches "
        "train-00000-of-00001.parquet and train/…)")
    text: str | None = Field(None, description="column holding the `text` column")
    prompt: str | None = Field(None, description="column holding the `prompt` column")
    completion: str | None = Field(None, description="column holding the `completion` column")
    chosen: str | None = Field(None, description="column holding the `chosen` column")
    rejected: str | None = Field(None, description="column holding the `rejected` column")
    answer: str | None = Field(None, description="column holding the `answer` column")
    messages: str | None = Field(
        None, description="column holding the `messages` column (a list of {role, content})")

    def mapping(self) -> dict[str, str]:
        """Canonical column → file column, for the columns given explicitly."""
        return {n: getattr(self, n) for n in _COLUMN_FIELDS if getattr(self, n) is not None}

    def known_columns(self, base_dir: Path) -> frozenset[str] | None:
        """The columns of the first file's footer (no rows read), mapped to canonical ones."""
        from tunix_dsl.data.datasets import DataError, mapped_columns
        from tunix_dsl.data.parquet import file_columns
        from tunix_dsl.models.info import resolve_path

        try:
            names = file_columns(resolve_path(self.path, base_dir), self.split)
        except DataError:
            return None
        return frozenset(mapped_columns(names, self.mapping()))

    def files(self) -> dict[str, str]:
        return {"path": self.path}


DatasetSource = SyntheticSource | JsonlSource | ParquetSource

_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "a bool"}


def _fits(value: object, expected: type) -> bool:
    if isinstance(value, bool) or expected is bool:
        return isinstance(value, bool) and expected is bool
    if expected is float:
        return isinstance(value, int | float)
    return isinstance(value, expected)
