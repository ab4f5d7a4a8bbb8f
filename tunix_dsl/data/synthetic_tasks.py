"""The synthetic-task catalog: small deterministic datasets built in (jax-free).

``SYNTHETIC_TASKS`` maps a task name to its :class:`TaskInfo`: columns,
parameters (type, default, doc), a range check and the generator. The checker
types ``synthetic(task, ...)`` from the catalog alone; the runtime generates rows
with :func:`synthetic_rows`. Every generator draws from its own
``random.Random(seed)``, never from global state, so the same parameters always
give the same rows. Completions are text only: the runtime appends eos.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

Row = dict[str, Any]
# (parameter name, why its value is out of range): the checker points at that parameter.
RangeProblem = tuple[str, str]


class SyntheticTaskError(ValueError):
    """Unknown synthetic task, unknown parameter, or a parameter of the wrong type/range."""


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
    # (parameter, why) when a full set of parameter values is out of range, else None.
    check: Callable[[dict[str, Any]], RangeProblem | None] = lambda values: None
    # The fewest characters each column can have for these values (a bound over all rows).
    shortest: Callable[[dict[str, Any]], dict[str, int]] = lambda values: {}


SYNTHETIC_TASKS: dict[str, TaskInfo] = {}

# Every task takes these; declared once so the catalog is uniform.
_COMMON_PARAMS: dict[str, ParamInfo] = {
    "count": ParamInfo(int, 1000, "number of rows"),
    "seed": ParamInfo(int, 0, "random seed; the same seed gives the same rows"),
}


def synthetic_task(
    name: str, columns: tuple[str, ...], params: dict[str, ParamInfo],
    check: Callable[[dict[str, Any]], RangeProblem | None] | None = None,
    shortest: Callable[[dict[str, Any]], dict[str, int]] | None = None,
) -> Callable[[Callable[..., list[Row]]], Callable[..., list[Row]]]:
    """Register a generator ``fn(rng: random.Random, count: int, **params) -> rows``.

    ``check(values)`` returns (parameter, why) when the values are out of range, or None;
    it runs before generation and lets the checker validate without generating.
    """

    def register(fn: Callable[..., list[Row]]) -> Callable[..., list[Row]]:
        if name in SYNTHETIC_TASKS:
            raise ValueError(f"synthetic task {name!r} registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
        SYNTHETIC_TASKS[name] = TaskInfo(name, columns, {**params, **_COMMON_PARAMS}, doc, fn,
                                         check or (lambda values: None),
                                         shortest or (lambda values: {}))
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
    problem = range_problem(task, values)
    if problem:
        raise SyntheticTaskError(f"synthetic({task!r}): {problem[1]}")
    return values


def range_problem(task: str, values: dict[str, Any]) -> RangeProblem | None:
    """(parameter, why) if type-correct values (defaults filled in) are out of range.

    The one range check of a task: the checker reports it at lint time (so a
    pipeline that lints clean builds its data), generation repeats it.
    """
    return _out_of_range("count", values["count"], 1, 10**8) or SYNTHETIC_TASKS[task].check(values)


def default_values(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the task's defaults filled in (no checking)."""
    return {k: params.get(k, p.default) for k, p in SYNTHETIC_TASKS[task].params.items()}


def synthetic_rows(task: str, **params: Any) -> list[Row]:
    """Generate the rows of ``synthetic(task, **params)``; defaults fill the rest."""
    values = check_synthetic_params(task, params)
    rng = random.Random(values.pop("seed"))
    return SYNTHETIC_TASKS[task].generate(rng, **values)


def _out_of_range(key: str, value: int, lo: int, hi: int) -> RangeProblem | None:
    return None if lo <= value <= hi else (key, f"{key} must be in [{lo}, {hi}], got {value}")


def _check_addition(values: dict[str, Any]) -> RangeProblem | None:
    if values["split"] not in _SPLITS:
        return "split", f"split must be one of {', '.join(map(repr, _SPLITS))}, got {values['split']!r}"
    return _out_of_range("digits", values["digits"], 1, 18)


# "test" holds one operand pair in ten, "train" the other nine, "all" both: a test
# draw then never shares a sum with training data, whatever the seeds and counts.
_SPLITS = ("all", "train", "test")
_ADDITION_PARAMS: dict[str, ParamInfo] = {
    "digits": ParamInfo(int, 2, "maximum number of digits of each operand (1..18)"),
    "split": ParamInfo(
        str, "all",
        '"all"; "test": only operand pairs of a fixed tenth of all pairs; "train": only the rest',
    ),
}


def _in_test_split(a: int, b: int) -> bool:
    # crc32, not hash(): the partition must not change with PYTHONHASHSEED.
    return zlib.crc32(f"{a}+{b}".encode()) % 10 == 0


def _addition_operands(rng: random.Random, digits: int, split: str) -> tuple[int, int]:
    high = 10**digits - 1
    while True:  # rejection: a draw is kept with probability 1/10 ("test") or 9/10 ("train")
        a, b = rng.randint(0, high), rng.randint(0, high)
        if split == "all" or _in_test_split(a, b) == (split == "test"):
            return a, b


def _shortest_sum(values: dict[str, Any]) -> dict[str, int]:
    return {"prompt": 4, "completion": 1, "answer": 1, "text": 5, "chosen": 1, "rejected": 1}


@synthetic_task(
    "addition", ("prompt", "completion", "answer", "text"), _ADDITION_PARAMS, _check_addition,
    _shortest_sum,
)
def _addition(rng: random.Random, count: int, digits: int, split: str) -> list[Row]:
    """Sums of two random integers: prompt "12+34=", completion and answer "46"."""
    rows = []
    for _ in range(count):
        a, b = _addition_operands(rng, digits, split)
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
    "addition_preferences", ("prompt", "chosen", "rejected", "answer"), _ADDITION_PARAMS,
    _check_addition, _shortest_sum,
)
def _addition_preferences(rng: random.Random, count: int, digits: int, split: str) -> list[Row]:
    """Addition with a chosen (right) and a rejected (plausibly wrong) sum."""
    rows = []
    for _ in range(count):
        a, b = _addition_operands(rng, digits, split)
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


def _check_strings(values: dict[str, Any]) -> RangeProblem | None:
    if not values["alphabet"]:
        return "alphabet", "alphabet must not be empty"
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


def _shortest_string(values: dict[str, Any]) -> dict[str, int]:
    n = values["min_length"]
    return {"prompt": n + 6, "completion": n, "answer": n, "text": 2 * n + 6}


@synthetic_task("copy", ("prompt", "completion", "answer", "text"), _STRING_PARAMS, _check_strings,
                _shortest_string)
def _copy(rng: random.Random, count: int, **params: Any) -> list[Row]:
    """Repeat a random string: prompt "copy abc=", completion "abc"."""
    return _string_task("copy", rng, count, transform=lambda s: s, **params)


@synthetic_task(
    "reverse", ("prompt", "completion", "answer", "text"), _STRING_PARAMS, _check_strings,
    _shortest_string,
)
def _reverse(rng: random.Random, count: int, **params: Any) -> list[Row]:
    """Reverse a random string: prompt "reverse abc=", completion "cba"."""
    return _string_task("reverse", rng, count, transform=lambda s: s[::-1], **params)


# Tasks defined in their own modules register on import, after the registry above exists.
from tunix_dsl.data import synthetic_agents  # noqa: E402, F401
