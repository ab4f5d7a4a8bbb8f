"""Synthetic catalog, jsonl reading and consumer columns (tunix_dsl.data.datasets)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunix_dsl.data.datasets import (
    CANONICAL_COLUMNS,
    CONSUMER_COLUMNS,
    CONSUMERS,
    SYNTHETIC_TASKS,
    DataError,
    SyntheticTaskError,
    check_synthetic_params,
    mapped_columns,
    peek_jsonl_columns,
    read_jsonl,
    synthetic_rows,
)
from tunix_dsl.data.messages import is_conversation

# --- synthetic tasks --------------------------------------------------------


@pytest.mark.parametrize("task", sorted(SYNTHETIC_TASKS))
def test_synthetic_same_seed_same_rows_other_seed_differs(task: str) -> None:
    a = synthetic_rows(task, count=50, seed=7)
    assert a == synthetic_rows(task, count=50, seed=7)
    assert a != synthetic_rows(task, count=50, seed=8)
    assert len(a) == 50


@pytest.mark.parametrize("task", sorted(SYNTHETIC_TASKS))
def test_rows_have_exactly_the_catalog_columns(task: str) -> None:
    info = SYNTHETIC_TASKS[task]
    rows = synthetic_rows(task, count=20)
    assert all(set(row) == set(info.columns) for row in rows)
    # text, or a conversation (tool-use transcripts): what a jsonl row may hold
    assert all(isinstance(v, str) or is_conversation(v) for row in rows for v in row.values())
    assert set(info.columns) <= set(CANONICAL_COLUMNS)


def test_generation_does_not_touch_global_random_state() -> None:
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    synthetic_rows("addition_preferences", count=100, seed=1)
    assert random.random() == expected


def test_catalog_params_unpack_as_type_default_doc() -> None:
    kind, default, doc = SYNTHETIC_TASKS["addition"].params["digits"]
    assert (kind, default) == (int, 2) and doc
    assert set(SYNTHETIC_TASKS["addition"].params) == {"digits", "split", "count", "seed"}
    assert SYNTHETIC_TASKS["addition"].columns[:3] == ("prompt", "completion", "answer")
    assert SYNTHETIC_TASKS["addition_preferences"].columns == (
        "prompt", "chosen", "rejected", "answer")
    assert all(info.doc for info in SYNTHETIC_TASKS.values())


def test_addition_rows_are_correct_sums() -> None:
    rows = synthetic_rows("addition", digits=3, count=2000, seed=4)
    for row in rows:
        a, b = row["prompt"].removesuffix("=").split("+")
        assert row["prompt"] == f"{a}+{b}="
        assert len(a) <= 3 and len(b) <= 3
        assert row["completion"] == row["answer"] == str(int(a) + int(b))
        assert row["text"] == row["prompt"] + row["completion"]
    # Operands cover the range, not just one digit count.
    assert {len(r["prompt"].split("+")[0]) for r in rows} == {1, 2, 3}


def test_addition_preferences_reject_a_plausible_wrong_sum() -> None:
    rows = synthetic_rows("addition_preferences", digits=2, count=2000, seed=5)
    for row in rows:
        a, b = row["prompt"].removesuffix("=").split("+")
        right = int(a) + int(b)
        assert row["chosen"] == row["answer"] == str(right)
        wrong = row["rejected"]
        assert wrong.isdigit() and wrong != row["chosen"]
        assert wrong == str(int(wrong)), "no leading zeros"
        assert abs(len(wrong) - len(row["chosen"])) <= 1
    assert len({r["rejected"] for r in rows}) > 50


def test_addition_splits_share_no_sum() -> None:
    def prompts(task: str, split: str, seed: int) -> set[str]:
        return {r["prompt"] for r in synthetic_rows(task, count=3000, seed=seed, split=split)}

    test = prompts("addition", "test", 2)
    train = prompts("addition", "train", 1) | prompts("addition_preferences", "train", 3)
    unsplit = prompts("addition", "all", 1)
    assert test and train and not test & train
    # Without the split, a draw of the same size shares most test sums: the split is what holds out.
    assert len(test & unsplit) > len(test) // 4
    # One digit: 100 pairs, partitioned (about a tenth for test) whatever the seeds.
    one = {split: {r["prompt"] for seed in (1, 2) for r in synthetic_rows(
        "addition", digits=1, count=2000, seed=seed, split=split)} for split in ("train", "test")}
    assert not one["train"] & one["test"] and len(one["train"] | one["test"]) == 100
    assert 4 <= len(one["test"]) <= 20


def test_copy_and_reverse() -> None:
    for row in synthetic_rows("copy", count=30, min_length=2, max_length=4, alphabet="xy"):
        s = row["prompt"].removeprefix("copy ").removesuffix("=")
        assert row["completion"] == s and 2 <= len(s) <= 4 and set(s) <= {"x", "y"}
    for row in synthetic_rows("reverse", count=30):
        s = row["prompt"].removeprefix("reverse ").removesuffix("=")
        assert row["completion"] == s[::-1] == row["answer"]


def test_twenty_thousand_rows() -> None:
    assert len(synthetic_rows("addition", count=20_000, seed=1)) == 20_000
    assert len(synthetic_rows("addition_preferences", count=20_000, seed=1)) == 20_000


@pytest.mark.parametrize(("task", "params", "message"), [
    ("sums", {}, "unknown synthetic task 'sums'; known tasks: addition, "
                 "addition_preferences, calculator_tools, copy, reverse"),
    ("addition", {"digit": 2}, "synthetic('addition') has no parameter 'digit'; "
                               "parameters: count, digits, seed, split"),
    ("addition", {"digits": "2"}, "synthetic('addition'): digits must be int, got '2'"),
    ("addition", {"count": True}, "synthetic('addition'): count must be int, got True"),
    ("addition", {"digits": 0}, "synthetic('addition'): digits must be in [1, 18], got 0"),
    ("addition", {"count": 0}, "synthetic('addition'): count must be in [1, 100000000], got 0"),
    ("addition", {"split": "dev"},
     "synthetic('addition'): split must be one of 'all', 'train', 'test', got 'dev'"),
    ("copy", {"min_length": 5, "max_length": 4},
     "synthetic('copy'): max_length must be in [5, 10000], got 4"),
    ("copy", {"alphabet": ""}, "synthetic('copy'): alphabet must not be empty"),
])
def test_bad_synthetic_params(task: str, params: dict, message: str) -> None:
    for call in (lambda: synthetic_rows(task, **params),
                 lambda: check_synthetic_params(task, params)):
        with pytest.raises(SyntheticTaskError) as err:
            call()
        assert str(err.value) == message


def test_check_synthetic_params_fills_defaults() -> None:
    assert check_synthetic_params("addition", {"count": 5}) == {
        "digits": 2, "split": "all", "count": 5, "seed": 0}


# --- consumers ----------------------------------------------------------------


def test_consumer_columns() -> None:
    assert CONSUMER_COLUMNS == {
        "lm": ("text",),
        "prompt_completion": ("prompt", "completion"),
        "preference": ("prompt", "chosen", "rejected"),
        "prompt": ("prompt",),
    }
    lm = CONSUMERS["lm"]
    assert lm.missing({"text"}) == () and lm.missing({"prompt", "completion"}) == ()
    assert lm.missing({"prompt"}) == ("text",)
    assert CONSUMERS["preference"].missing({"prompt", "chosen", "answer"}) == ("rejected",)
    for task in ("addition", "copy", "reverse"):
        for consumer in ("lm", "prompt_completion", "prompt"):
            assert CONSUMERS[consumer].missing(SYNTHETIC_TASKS[task].columns) == ()
    assert CONSUMERS["preference"].missing(SYNTHETIC_TASKS["addition"].columns) == (
        "chosen", "rejected")
    assert CONSUMERS["preference"].missing(SYNTHETIC_TASKS["addition_preferences"].columns) == ()


def test_module_is_jax_free() -> None:
    code = ("import sys, tunix_dsl.data.datasets; "
            "print(any(m in sys.modules for m in ('jax', 'flax', 'optax', 'orbax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- jsonl --------------------------------------------------------------------


def _write(tmp_path: Path, lines: list[str], name: str = "data.jsonl") -> str:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_read_jsonl_mapping_passthrough_and_blank_lines(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        json.dumps({"q": "1+1=", "good": "2", "bad": "3", "id": 7}),
        "",
        "   ",
        json.dumps({"q": "2+2=", "good": "4", "bad": "5", "id": 8, "prompt": "ignored"}),
    ])
    rows = read_jsonl(path, {"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert rows == [
        {"prompt": "1+1=", "chosen": "2", "rejected": "3", "id": 7},
        {"prompt": "2+2=", "chosen": "4", "rejected": "5", "id": 8},
    ]
    assert read_jsonl(path, required=["q"])[0] == {"q": "1+1=", "good": "2", "bad": "3", "id": 7}


@pytest.mark.parametrize(("lines", "mapping", "required", "message"), [
    (['{"prompt": "a"}', '{"prompt": "b"', '{}'], None, (),
     "{path}:2: invalid JSON: Expecting ',' delimiter (column 15)"),
    (['{"prompt": "a"}', '', '["prompt", "b"]'], None, (),
     "{path}:3: expected a JSON object, got array"),
    (['{"prompt": "a", "good": "x"}', '{"prompt": "b"}'], {"chosen": "good"}, (),
     "{path}:2: missing key 'good' (column 'chosen', mapping {chosen = \"good\"})"),
    (['{"prompt": "a"}'], None, ("prompt", "completion"),
     "{path}:1: missing key 'completion'"),
    (['{"prompt": "a", "completion": 46}'], None, (),
     "{path}:1: key 'completion' must be a string, got number 46"),
    (['{"q": ["a"]}'], {"prompt": "q"}, (),
     "{path}:1: key 'q' must be a string or a conversation (message 0 must be an object "
     "with role and content, got string)"),
    (['{"q": 3}'], {"prompt": "q"}, (), "{path}:1: key 'q' must be a string, got number 3"),
    (['', ''], None, (), "{path}: file has no rows"),
    (['{}'], {"question": "q"}, (), "{path}: mapping names unknown column 'question'; "
     "columns are text, prompt, completion, chosen, rejected, answer, messages"),
])
def test_read_jsonl_errors_name_file_and_line(
    tmp_path: Path, lines: list[str], mapping: dict | None, required: tuple, message: str
) -> None:
    path = _write(tmp_path, lines)
    with pytest.raises(DataError) as err:
        read_jsonl(path, mapping, required)
    assert str(err.value) == message.replace("{path}", path)


def test_read_jsonl_checks_what_the_consumer_reads(tmp_path: Path) -> None:
    path = _write(tmp_path, ['{"q": "a", "completion": "b"}', '{"q": "a"}'])
    rows = read_jsonl(path, {"prompt": "q"}, consumer="prompt")
    assert rows == [{"prompt": "a", "completion": "b"}, {"prompt": "a"}]
    with pytest.raises(DataError) as err:
        read_jsonl(path, {"prompt": "q"}, consumer="prompt_completion")
    assert str(err.value) == (
        f"{path}:2: missing key 'completion' (prompt_completion data needs prompt, completion)")
    with pytest.raises(DataError) as err:
        read_jsonl(path, {"text": "body"}, consumer="lm")
    assert str(err.value) == f"{path}: 2 bad rows:\n" + "\n".join(  # every bad row at once
        f"{path}:{n}: missing key 'body' (column 'text', mapping {{text = \"body\"}})"
        for n in (1, 2))
    assert [e.line for e in err.value.problems] == [1, 2]
    # lm reads text or, failing that, prompt + completion.
    assert len(read_jsonl(_write(tmp_path, ['{"text": "x"}'], "t.jsonl"), consumer="lm")) == 1
    with pytest.raises(DataError, match=r":1: missing key 'text' \(lm data needs text\)"):
        read_jsonl(path, consumer="lm")


def test_read_jsonl_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as err:
        read_jsonl(missing)
    assert str(err.value) == f"{missing}: file not found"
    assert (err.value.path, err.value.line) == (str(missing), None)


def test_peek_jsonl_columns(tmp_path: Path) -> None:
    path = _write(tmp_path, [
        '{"q": "a", "good": "b", "x": 1}',
        '{"q": "a", "good": "b"}',
        'not json, but past the peeked rows',
    ])
    assert peek_jsonl_columns(path, n=2) == {"q", "good"}
    err = peek_jsonl_columns(path, n=5)
    assert isinstance(err, DataError) and str(err) == (
        f"{path}:3: invalid JSON: Expecting value (column 1)")
    assert isinstance(peek_jsonl_columns(tmp_path / "none.jsonl"), DataError)
    assert str(peek_jsonl_columns(_write(tmp_path, [""]))).endswith("file has no rows")
    assert mapped_columns({"q", "good", "id"}, {"prompt": "q", "chosen": "good", "rejected": "r"}) \
        == {"prompt", "chosen", "id"}


def test_read_jsonl_reports_every_bad_row_up_to_a_cap(tmp_path: Path) -> None:
    lines = ['{"prompt": "ok", "completion": "fine"}', "{not json", '{"prompt": "a"}',
             '{"prompt": "a", "completion": 4}', '{"prompt": "", "completion": "b"}', "[1]"]
    lines += ['{"prompt": 1, "completion": "x"}'] * 30
    path = _write(tmp_path, lines)
    with pytest.raises(DataError) as err:
        read_jsonl(path, consumer="prompt_completion")
    problems = err.value.problems
    assert len(problems) == 20 and [e.line for e in problems[:5]] == [2, 3, 4, 5, 6]
    reasons = [e.message for e in problems[:5]]
    assert reasons[0].startswith("invalid JSON")
    assert reasons[1].startswith("missing key 'completion'")
    assert reasons[2] == "key 'completion' must be a string, got number 4"
    assert reasons[3] == "key 'prompt' is empty (prompt_completion data reads its text)"
    assert reasons[4] == "expected a JSON object, got array"
    text = str(err.value)
    assert text.startswith(f"{path}: 35 bad rows:\n{path}:2: invalid JSON")
    assert text.endswith("\n... and 15 more")
