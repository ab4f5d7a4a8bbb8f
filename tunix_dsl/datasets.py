"""Dataset sources: the synthetic-task catalog and jsonl reading (jax-free).

Two sources feed every stage (DESIGN.md §4):

- ``synthetic(task, ...)``: built-in, deterministic generators (``SYNTHETIC_TASKS``)
  for examples, tests and benchmarks. Each task declares its columns and
  parameters so the checker can type a dataset without generating it.
- ``jsonl(path, mapping)``: one JSON object per line; ``mapping`` renames file keys
  to canonical column names. A malformed row raises :class:`DataError` whose text
  is ``path:line: reason``.

Rows are plain ``dict[str, str]``. Completions are text only: the runtime
(``tunix_dsl.runtime.data``) appends the tokenizer's end-of-sequence id, so no
task embeds an end marker in its text.

Which columns a stage consumes is declared here too (``CONSUMERS``), so the
checker and the runtime agree on one table.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

Row = dict[str, Any]

# Columns with a fixed meaning. Text columns must hold strings in a jsonl file.
CANONICAL_COLUMNS: tuple[str, ...] = ("text", "prompt", "completion", "chosen", "rejected", "answer")


class DataError(Exception):
    """A dataset that cannot be read; ``str()`` is ``path:line: message``.

    ``line`` is 1-based, or None when the problem is the file as a whole.
    """

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path = str(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


class SyntheticTaskError(ValueError):
    """Unknown synthetic task, unknown parameter, or a parameter of the wrong type/range."""


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


CONSUMERS: dict[str, ConsumerInfo] = {
    info.name: info
    for info in (
        ConsumerInfo("lm", (("text",), ("prompt", "completion")),
                     "next-token loss on the whole sequence (pretrain)"),
        ConsumerInfo("prompt_completion", (("prompt", "completion"),),
                     "loss on the completion only (sft, distill)"),
        ConsumerInfo("preference", (("prompt", "chosen", "rejected"),),
                     "prompt with a chosen and a rejected completion (dpo, orpo)"),
        ConsumerInfo("prompt", (("prompt",),),
                     "prompts to generate from (grpo, ppo, eval)"),
    )
}

# The preferred columns per consumer, for code that wants a plain table.
CONSUMER_COLUMNS: dict[str, tuple[str, ...]] = {n: c.required for n, c in CONSUMERS.items()}


# ---------------------------------------------------------------------------
# Synthetic tasks.
# ---------------------------------------------------------------------------


class ParamInfo(NamedTuple):
    """A synthetic task's parameter: also unpacks as ``(type, default, doc)``."""

    type: type
    default: Any
    doc: str


@dataclass(frozen=True)
class TaskInfo:
    name: str
    columns: tuple[str, ...]
    params: dict[str, ParamInfo]
    doc: str
    generate: Callable[..., list[Row]]
    # Why a full set of parameter values is out of range, or None.
    check: Callable[[dict[str, Any]], str | None] = lambda values: None


SYNTHETIC_TASKS: dict[str, TaskInfo] = {}

# Every task takes these; declared once so the catalog is uniform.
_COMMON_PARAMS: dict[str, ParamInfo] = {
    "count": ParamInfo(int, 1000, "number of rows"),
    "seed": ParamInfo(int, 0, "random seed; the same seed gives the same rows"),
}


def synthetic_task(
    name: str, columns: tuple[str, ...], params: dict[str, ParamInfo],
    check: Callable[[dict[str, Any]], str | None] | None = None,
) -> Callable[[Callable[..., list[Row]]], Callable[..., list[Row]]]:
    """Register a generator ``fn(rng: random.Random, count: int, **params) -> rows``.

    ``check(values)`` returns why the parameter values are out of range, or None;
    it runs before generation and lets the checker validate without generating.
    """

    def register(fn: Callable[..., list[Row]]) -> Callable[..., list[Row]]:
        if name in SYNTHETIC_TASKS:
            raise ValueError(f"synthetic task {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        SYNTHETIC_TASKS[name] = TaskInfo(name, columns, {**params, **_COMMON_PARAMS}, doc, fn,
                                         check or (lambda values: None))
        return fn

    return register


def _check_param(task: str, key: str, value: Any, info: ParamInfo) -> Any:
    # bool is an int subclass; a flag is never a count.
    if info.type is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, info.type) or (info.type is not bool and isinstance(value, bool)):
        raise SyntheticTaskError(
            f"synthetic({task!r}): {key} must be {info.type.__name__}, got {value!r}"
        )
    return value


def check_synthetic_params(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """All parameter values of ``synthetic(task, **params)`` with defaults filled in.

    Raises :class:`SyntheticTaskError` for an unknown task or parameter, a wrong
    type or an out-of-range value. Cheap: nothing is generated.
    """
    info = SYNTHETIC_TASKS.get(task)
    if info is None:
        known = ", ".join(sorted(SYNTHETIC_TASKS))
        raise SyntheticTaskError(f"unknown synthetic task {task!r}; known tasks: {known}")
    unknown = sorted(set(params) - set(info.params))
    if unknown:
        raise SyntheticTaskError(
            f"synthetic({task!r}) has no parameter {unknown[0]!r}; "
            f"parameters: {', '.join(sorted(info.params))}"
        )
    values = {k: _check_param(task, k, params.get(k, p.default), p) for k, p in info.params.items()}
    problem = _out_of_range("count", values["count"], 1, 10**8) or info.check(values)
    if problem:
        raise SyntheticTaskError(f"synthetic({task!r}): {problem}")
    return values


def synthetic_rows(task: str, **params: Any) -> list[Row]:
    """Generate the rows of ``synthetic(task, **params)``; defaults fill the rest."""
    values = check_synthetic_params(task, params)
    rng = random.Random(values.pop("seed"))
    return SYNTHETIC_TASKS[task].generate(rng, **values)


def _out_of_range(key: str, value: int, lo: int, hi: int) -> str | None:
    return None if lo <= value <= hi else f"{key} must be in [{lo}, {hi}], got {value}"


def _check_digits(values: dict[str, Any]) -> str | None:
    return _out_of_range("digits", values["digits"], 1, 18)


_DIGITS = ParamInfo(int, 2, "maximum number of digits of each operand (1..18)")


def _addition_operands(rng: random.Random, digits: int) -> tuple[int, int]:
    high = 10**digits - 1
    return rng.randint(0, high), rng.randint(0, high)


@synthetic_task(
    "addition", ("prompt", "completion", "answer", "text"), {"digits": _DIGITS}, _check_digits
)
def _addition(rng: random.Random, count: int, digits: int) -> list[Row]:
    """Sums of two random integers: prompt "12+34=", completion and answer "46"."""
    rows = []
    for _ in range(count):
        a, b = _addition_operands(rng, digits)
        prompt, total = f"{a}+{b}=", str(a + b)
        rows.append({"prompt": prompt, "completion": total, "answer": total, "text": prompt + total})
    return rows


def _wrong_sums(a: int, b: int) -> list[str]:
    """Plausible mistakes for a + b, none equal to the right answer."""
    right = a + b
    text = str(right)
    candidates = {str(right + 1), str(max(right - 1, 0)), str(right + 10), str(abs(right - 10))}
    # One digit off by one.
    for i, ch in enumerate(text):
        d = int(ch)
        for nd in (d - 1, d + 1):
            if 0 <= nd <= 9 and not (i == 0 and nd == 0 and len(text) > 1):
                candidates.add(text[:i] + str(nd) + text[i + 1:])
    # Two adjacent digits swapped (only differs when they differ; no leading zero).
    for i in range(len(text) - 1):
        swapped = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        if not swapped.startswith("0"):
            candidates.add(swapped)
    # The carry forgotten: digit-wise sum mod 10.
    width = max(len(str(a)), len(str(b)))
    da, db = str(a).zfill(width), str(b).zfill(width)
    no_carry = "".join(str((int(x) + int(y)) % 10) for x, y in zip(da, db, strict=True))
    if len(str(int(no_carry))) >= len(text) - 1:  # "50+53=3" is too far off to tempt
        candidates.add(str(int(no_carry)))
    candidates.discard(text)
    return sorted(candidates, key=lambda s: (len(s), s))


@synthetic_task(
    "addition_preferences", ("prompt", "chosen", "rejected", "answer"), {"digits": _DIGITS},
    _check_digits,
)
def _addition_preferences(rng: random.Random, count: int, digits: int) -> list[Row]:
    """Addition with a chosen (right) and a rejected (plausibly wrong) sum."""
    rows = []
    for _ in range(count):
        a, b = _addition_operands(rng, digits)
        total = str(a + b)
        rows.append({
            "prompt": f"{a}+{b}=",
            "chosen": total,
            "rejected": rng.choice(_wrong_sums(a, b)),
            "answer": total,
        })
    return rows


_STRING_PARAMS: dict[str, ParamInfo] = {
    "min_length": ParamInfo(int, 3, "shortest string"),
    "max_length": ParamInfo(int, 8, "longest string"),
    "alphabet": ParamInfo(str, "abcdefghijklmnopqrstuvwxyz", "characters to draw from"),
}


def _check_strings(values: dict[str, Any]) -> str | None:
    if not values["alphabet"]:
        return "alphabet must not be empty"
    return (_out_of_range("min_length", values["min_length"], 1, 10_000)
            or _out_of_range("max_length", values["max_length"], values["min_length"], 10_000))


def _string_task(
    task: str, rng: random.Random, count: int, min_length: int, max_length: int,
    alphabet: str, transform: Callable[[str], str],
) -> list[Row]:
    rows = []
    for _ in range(count):
        s = "".join(rng.choices(alphabet, k=rng.randint(min_length, max_length)))
        prompt, out = f"{task} {s}=", transform(s)
        rows.append({"prompt": prompt, "completion": out, "answer": out, "text": prompt + out})
    return rows


@synthetic_task("copy", ("prompt", "completion", "answer", "text"), _STRING_PARAMS, _check_strings)
def _copy(rng: random.Random, count: int, **params: Any) -> list[Row]:
    """Repeat a random string: prompt "copy abc=", completion "abc"."""
    return _string_task("copy", rng, count, transform=lambda s: s, **params)


@synthetic_task(
    "reverse", ("prompt", "completion", "answer", "text"), _STRING_PARAMS, _check_strings
)
def _reverse(rng: random.Random, count: int, **params: Any) -> list[Row]:
    """Reverse a random string: prompt "reverse abc=", completion "cba"."""
    return _string_task("reverse", rng, count, transform=lambda s: s[::-1], **params)


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
    path: str | Path, mapping: Mapping[str, str] | None = None, required: Iterable[str] = ()
) -> list[Row]:
    """Read a jsonl file into rows with canonical column names.

    ``mapping`` maps canonical column -> key in the file (``{"chosen": "good"}``);
    unmapped keys pass through unchanged. Every mapped column and every column in
    ``required`` must be present in every row, and canonical columns must hold
    strings. Blank lines are skipped. Any problem raises :class:`DataError`
    naming ``path:line``.
    """
    path = str(path)
    mapping = dict(mapping or {})
    problem = check_mapping(mapping)
    if problem:
        raise DataError(path, None, problem)
    sources = {key: col for col, key in mapping.items()}
    needed = list(dict.fromkeys([*mapping, *required]))
    rows: list[Row] = []
    for lineno, line in _open_lines(path):
        obj = _parse_line(path, lineno, line)
        row = {sources.get(k, k): v for k, v in obj.items() if k not in mapping or k in sources}
        for column in needed:
            key = mapping.get(column, column)
            if key not in obj:
                via = f" (column {column!r}, mapping {_mapping_text(mapping)})" if mapping else ""
                raise DataError(path, lineno, f"missing key {key!r}{via}")
            row[column] = obj[key]
        for column in CANONICAL_COLUMNS:
            if column in row and not isinstance(row[column], str):
                key = mapping.get(column, column)
                raise DataError(path, lineno, f"key {key!r} must be a string, "
                                f"got {_json_type(row[column])} {json.dumps(row[column])[:40]}")
        rows.append(row)
    if not rows:
        raise DataError(path, None, "file has no rows")
    return rows


def peek_jsonl_columns(path: str | Path, n: int = 5) -> set[str] | DataError:
    """Keys present in every one of the first ``n`` rows, or the DataError (never raises).

    The checker uses this to type a ``jsonl`` dataset without reading it all;
    apply :func:`mapped_columns` to get canonical column names.
    """
    path = str(path)
    common: set[str] | None = None
    try:
        for seen, (lineno, line) in enumerate(_open_lines(path)):
            if seen >= n:
                break
            keys = set(_parse_line(path, lineno, line))
            common = keys if common is None else common & keys
    except DataError as e:
        return e
    if common is None:
        return DataError(path, None, "file has no rows")
    return common
