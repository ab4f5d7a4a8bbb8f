"""Dataset sources: the synthetic-task catalog and jsonl reading (jax-free).

Two sources feed every stage (DESIGN.md §4):

- ``synthetic(task, ...)``: built-in, deterministic generators (``SYNTHETIC_TASKS``,
  defined in ``tunix_dsl.data.synthetic_tasks`` and re-exported here) for examples,
  tests and benchmarks. Each task declares its columns and parameters so the
  checker can type a dataset without generating it.
- ``jsonl(path, mapping)``: one JSON object per line; ``mapping`` renames file keys
  to canonical column names. A malformed row raises :class:`DataError` whose text
  is ``path:line: reason``.

Rows are plain dicts whose canonical columns hold strings. Completions are text only: the runtime
(``tunix_dsl.runtime.data``) appends the tokenizer's end-of-sequence id, so no
task embeds an end marker in its text.

Which columns a stage consumes is declared here too (``CONSUMERS``), so the
checker and the runtime agree on one table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunix_dsl.data.messages import row_problem, value_problem

# The synthetic catalog lives in its own module; its public names are re-exported here.
from tunix_dsl.data.synthetic_tasks import (
    SYNTHETIC_TASKS,
    ParamInfo,
    Row,
    SyntheticTaskError,
    TaskInfo,
    check_synthetic_params,
    synthetic_rows,
    synthetic_task,
)

__all__ = [
    "CANONICAL_COLUMNS", "CONSUMERS", "CONSUMER_COLUMNS", "SYNTHETIC_TASKS", "ConsumerInfo",
    "DataError", "MAX_REPORTED_ROWS", "collect_rows", "row_checker", "ParamInfo", "Row", "SyntheticTaskError", "TaskInfo", "check_mapping",
    "check_synthetic_params", "jsonl_row_lines", "mapped_columns", "peek_jsonl_columns", "read_jsonl",
    "synthetic_rows", "synthetic_task",
]

# Columns with a fixed meaning. Text columns must hold strings in a jsonl file.
# `messages` holds a conversation, and prompt/chosen/rejected may (tunix_dsl/data/messages.py).
CANONICAL_COLUMNS: tuple[str, ...] = ("text", "prompt", "completion", "chosen", "rejected", "answer",
                                      "messages")
MAX_REPORTED_ROWS = 20  # bad jsonl rows named one by one; the rest are counted


class DataError(Exception):
    """A dataset that cannot be read; ``str()`` is ``path:line: message``.

    ``line`` is 1-based, or None when the problem is the file as a whole.
    """

    def __init__(self, path: str | Path, line: int | None, message: str, *, unit: str = "line"):
        self.path = str(path)
        self.line = line
        self.message = message
        # jsonl names a line (`path:7`); parquet a row, counted from 1 over the files (`path: row 7`)
        where = self.path if line is None else (
            f"{self.path}:{line}" if unit == "line" else f"{self.path}: {unit} {line}")
        super().__init__(f"{where}: {message}")
        self.problems: tuple[DataError, ...] = (self,)  # every bad row, up to the report cap
        self.total = 1  # bad rows in all, `problems` and the ones past the cap

    @classmethod
    def rows(cls, path: str | Path, problems: list[DataError], total: int) -> DataError:
        """One error for `total` bad rows, naming the first `problems` one per line."""
        if total == 1:
            return problems[0]
        more = f"\n... and {total - len(problems)} more" if total > len(problems) else ""
        err = cls(path, None, f"{total} bad rows:\n" + "\n".join(map(str, problems)) + more)
        err.problems, err.total = tuple(problems), total
        return err


# ---------------------------------------------------------------------------
# Consumers: what each kind of stage reads from a dataset.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsumerInfo:
    """How a stage kind reads rows.

    ``accepted`` lists column sets, any one of which suffices, preferred first
    (``lm`` trains on ``text`` or, failing that, on ``prompt + completion``).
    """

    name: str
    accepted: tuple[tuple[str, ...], ...]
    doc: str
    # "module:attr" of the layout's `tunix_dsl.runtime.data.ConsumerRules` (plugin layouts;
    # the built-in ones live in `runtime.data.CONSUMER_RULES`), imported only at run time
    rules: str = ""
    # What a batch holds, for `tnx plan`'s abstract batch: each prefix names one set of
    # token arrays (tokens, targets, loss_mask, attention_mask, positions) `[B, T]`;
    # `row_arrays` are per-row values `[B]` as (name, dtype).
    sequence_prefixes: tuple[str, ...] = ("",)
    row_arrays: tuple[tuple[str, str], ...] = ()
    # Columns whose tokens, plus eos, must fit beside bos and one prompt token: a row whose
    # completion cannot fit is dropped (runtime/data.py `fit_prompt`; lint's TNX313).
    kept_whole: tuple[str, ...] = ()

    @property
    def required(self) -> tuple[str, ...]:
        """The preferred column set (what a message should ask for)."""
        return self.accepted[0]

    def missing(self, available: Iterable[str]) -> tuple[str, ...]:
        """Columns missing for this consumer, () when ``available`` suffices.

        When no accepted set is complete, reports the set with fewest missing
        columns (ties: the preferred one), so a message names the nearest fix.
        """
        have = set(available)
        gaps = [tuple(c for c in cols if c not in have) for cols in self.accepted]
        if any(not gap for gap in gaps):
            return ()
        return min(gaps, key=len)

    def read_columns(self, available: Iterable[str]) -> tuple[str, ...]:
        """The columns this consumer reads from a row with ``available`` columns."""
        have = set(available)
        return next((cols for cols in self.accepted if set(cols) <= have), ())


CONSUMERS: dict[str, ConsumerInfo] = {
    info.name: info
    for info in (
        ConsumerInfo("lm", (("text",), ("prompt", "completion")),
                     "next-token loss on the whole sequence (pretrain)"),
        ConsumerInfo("prompt_completion", (("prompt", "completion"), ("messages",)),
                     "loss on the completion only, or on every assistant turn of `messages` "
                     "(sft, distill)", kept_whole=("completion",)),
        ConsumerInfo("preference", (("prompt", "chosen", "rejected"), ("chosen", "rejected")),
                     "prompt with a chosen and a rejected completion, or chosen/rejected "
                     "conversations (dpo, orpo)", sequence_prefixes=("chosen_", "rejected_"),
                     kept_whole=("chosen", "rejected")),
        ConsumerInfo("prompt", (("prompt",),),
                     "prompts to generate from (grpo, ppo, eval)"),
    )
}

BUILTIN_CONSUMERS: frozenset[str] = frozenset(CONSUMERS)  # plugin kinds may add layouts

# The preferred columns per consumer, for code that wants a plain table.
CONSUMER_COLUMNS: dict[str, tuple[str, ...]] = {n: c.required for n, c in CONSUMERS.items()}


# ---------------------------------------------------------------------------
# jsonl.
# ---------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string",
             list: "array", dict: "object", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _mapping_text(mapping: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{col} = {json.dumps(key)}" for col, key in mapping.items()) + "}"


def check_mapping(mapping: Mapping[str, str]) -> str | None:
    """Why ``mapping`` (canonical column -> file key) is invalid, or None."""
    for column, key in mapping.items():
        if column not in CANONICAL_COLUMNS:
            return (f"mapping names unknown column {column!r}; "
                    f"columns are {', '.join(CANONICAL_COLUMNS)}")
        if not isinstance(key, str) or not key:
            return f"mapping for column {column!r} must be a non-empty key name, got {key!r}"
    return None


def mapped_columns(file_keys: Iterable[str], mapping: Mapping[str, str]) -> set[str]:
    """Columns a row has after renaming: mapped columns whose key exists, plus other keys."""
    keys = set(file_keys)
    sources = set(mapping.values())
    return {c for c, k in mapping.items() if k in keys} | (keys - sources)


def _parse_line(path: str, lineno: int, line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as e:
        raise DataError(path, lineno, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(path, lineno, f"expected a JSON object, got {_json_type(obj)}")
    return obj


def _open_lines(path: str) -> Iterable[tuple[int, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    yield lineno, line
    except FileNotFoundError:
        raise DataError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, None, "is a directory, expected a .jsonl file") from None
    except UnicodeDecodeError as e:
        raise DataError(path, None, f"not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise DataError(path, None, f"cannot read: {e.strerror}") from None


def read_jsonl(
    path: str | Path, mapping: Mapping[str, str] | None = None, required: Iterable[str] = (),
    *, consumer: str | None = None, max_problems: int = MAX_REPORTED_ROWS,
) -> list[Row]:
    """Read a jsonl file into rows with canonical column names.

    ``mapping`` maps canonical column -> key in the file (``{"chosen": "good"}``);
    unmapped keys pass through unchanged. Every mapped column and every column in
    ``required`` must be present in every row, every row must have the columns
    ``consumer`` (a key of :data:`CONSUMERS`) reads, and canonical columns must
    hold strings, non-empty where ``consumer`` reads them. Blank lines are skipped.
    Problems raise one :class:`DataError` naming ``path:line`` of every bad row
    (the first ``max_problems``, then how many more).
    """
    path = str(path)
    check = row_checker(path, mapping, required, consumer)
    return collect_rows(path, _parsed_lines(path), check, max_problems)


def jsonl_row_lines(path: str | Path) -> list[int]:
    """The line number of each row ``read_jsonl`` returns, in order (blank lines hold none)."""
    return [lineno for lineno, _ in _open_lines(str(path))]


def _parsed_lines(path: str) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    for lineno, line in _open_lines(path):
        try:
            yield lineno, _parse_line(path, lineno, line)
        except DataError as err:  # this line's problem; the next lines are still read
            yield lineno, err


RowCheck = Callable[[int, Mapping[str, Any]], Row]


def row_checker(path: str, mapping: Mapping[str, str] | None, required: Iterable[str] = (),
                consumer: str | None = None, unit: str = "line") -> RowCheck:
    """The check every row of a file passes (jsonl and parquet alike): ``check(n, obj)`` renames
    the keys of row ``n`` to canonical columns or raises :class:`DataError` naming it."""
    mapping = dict(mapping or {})
    problem = check_mapping(mapping)
    if problem:
        raise DataError(path, None, problem)
    sources = {key: col for col, key in mapping.items()}
    needed = list(dict.fromkeys([*mapping, *required]))
    reader = CONSUMERS[consumer] if consumer is not None else None

    def missing_key(n: int, column: str, why: str = "",
                    obj: Mapping[str, Any] | None = None) -> DataError:
        key = mapping.get(column, column)
        via = f"column {column!r}, mapping {_mapping_text(mapping)}" if column in mapping else ""
        notes = "; ".join(x for x in (via, why) if x)
        what = f"key {key!r} is null" if key in (obj or {}) else f"missing key {key!r}"
        return DataError(path, n, what + (f" ({notes})" if notes else ""), unit=unit)

    def checked(n: int, obj: Mapping[str, Any]) -> Row:
        row = {sources.get(k, k): v for k, v in obj.items() if k not in mapping or k in sources}
        # A null (parquet's empty cell) is an absent value, unless the mapping names the column.
        row = {k: v for k, v in row.items() if v is not None or k in needed}
        for column in needed:
            if mapping.get(column, column) not in obj:
                raise missing_key(n, column)
        gap = reader.missing(row) if reader is not None else ()
        if reader is not None and gap:
            raise missing_key(n, gap[0], f"{reader.name} data needs "
                              f"{', '.join(reader.required)}", obj)
        problem = _bad_value(row, mapping)
        if problem:
            raise DataError(path, n, problem, unit=unit)
        if reader is not None:
            columns = reader.read_columns(row)
            for column in columns:
                if not row[column]:
                    raise DataError(path, n, f"key {mapping.get(column, column)!r} is empty "
                                    f"({reader.name} data reads its text)", unit=unit)
            problem = row_problem(row, reader.name, columns)
            if problem:
                raise DataError(path, n, problem, unit=unit)
        return row

    return checked


def collect_rows(path: str, objects: Iterable[tuple[int, Mapping[str, Any] | DataError]],
                 check: RowCheck,
                 max_problems: int = MAX_REPORTED_ROWS) -> list[Row]:
    """Checked rows of ``objects`` ((row number, object or the row's own DataError) pairs);
    every bad row is reported at
    once (up to ``max_problems``, then a count), not one per run."""
    rows: list[Row] = []
    problems: list[DataError] = []
    bad = 0
    for n, obj in objects:
        try:
            if isinstance(obj, DataError):
                raise obj
            rows.append(check(n, obj))
        except DataError as err:
            if err.line is None:  # the file as a whole
                raise
            bad += 1
            if len(problems) < max_problems:
                problems.append(err)
    if bad:
        raise DataError.rows(path, problems, bad)
    if not rows:
        raise DataError(path, None, "file has no rows")
    return rows


def _bad_value(row: Mapping[str, Any], mapping: Mapping[str, str]) -> str | None:
    """Why a row (canonical column names) holds a value of the wrong shape, or None."""
    for column in CANONICAL_COLUMNS:
        if column in row:
            problem = value_problem(column, row[column])
            if problem:
                return f"key {mapping.get(column, column)!r} {problem}"
    return None


# The shortest sequence any consumer can build: bos + one prompt token + one more token
# (runtime/data.py `tokenize_rows` refuses a shorter `max_len`).
MIN_SEQUENCE_TOKENS = 3

def tokens_needed(consumer: str, token_counts: Mapping[str, int]) -> int:
    """Tokens a row needs so that `consumer` keeps it: bos, one prompt token, and the longest
    column that is never cut (with its eos); ``token_counts`` maps column → token count."""
    whole = [token_counts[c] + 1 for c in CONSUMERS[consumer].kept_whole if c in token_counts]
    return max(MIN_SEQUENCE_TOKENS, 2 + max(whole, default=0))


def peek_jsonl_rows(path: str | Path, mapping: Mapping[str, str],
                    n: int) -> tuple[list[Row], bool] | None:
    """(the first ``n`` rows with canonical column names, whether that is the whole file), or
    None when they cannot be read (``peek_jsonl_columns`` reports why). Never raises."""
    sources = {key: col for col, key in mapping.items()}
    rows: list[Row] = []
    try:
        for lineno, line in _open_lines(str(path)):
            if len(rows) == n:
                return rows, False
            obj = _parse_line(str(path), lineno, line)
            rows.append({sources.get(k, k): v for k, v in obj.items()
                         if k not in mapping or k in sources})
    except DataError:
        return None
    return rows, True


def peek_jsonl_columns(path: str | Path, n: int = 5,
                       mapping: Mapping[str, str] | None = None) -> set[str] | DataError:
    """Keys present in every one of the first ``n`` rows, or the DataError (never raises).

    The checker uses this to type a ``jsonl`` dataset without reading it all;
    apply :func:`mapped_columns` to get canonical column names. With ``mapping``
    (canonical column → file key) the peeked rows are also held to the rule the
    reader applies to every row: the columns a stage reads are strings.
    """
    path = str(path)
    common: set[str] | None = None
    sources = {key: col for col, key in (mapping or {}).items()}
    try:
        for seen, (lineno, line) in enumerate(_open_lines(path)):
            if seen >= n:
                break
            obj = _parse_line(path, lineno, line)
            keys = set(obj)
            common = keys if common is None else common & keys
            if mapping is not None:
                row = {sources.get(k, k): v for k, v in obj.items()
                       if k not in mapping or k in sources}
                problem = _bad_value(row, mapping)
                if problem:
                    return DataError(path, lineno, problem)
    except DataError as e:
        return e
    if common is None:
        return DataError(path, None, "file has no rows")
    return common
