"""Mutation fuzzer for the front end: `tnx lint` (parse + check + rules + render) and `tnx fmt`.

    nice python bench/fuzz.py --inputs 200000 --workers 2 --out bench/fuzz_crashes

Seeds are every `.tnx` under examples/ (broken ones included) and tests/golden/.
Each input is a seed after one to four random edits: character and token
deletions, insertions, duplications, swaps, splices from another seed, huge
numbers, deep nesting and long operator chains near the nesting limit, unicode,
a byte-order mark, and CRLF / CR-only line breaks. `check` states what must
hold for every input:

- lint never raises, never reports an internal error (TNX000), and its
  diagnostics render as text, JSON and SARIF;
- fmt refuses only what the parser refuses; otherwise its output formats to
  itself, keeps every comment, and checks to the same diagnostics (codes and
  messages) and the same resolved configuration as the input;
- fmt gives the same text for LF, CRLF and CR-only line breaks, and `tnx fmt
  FILE` writes what `tnx fmt -` prints.

A failing input is saved to the output folder (`<hash>.tnx` and the reason in
`<hash>.txt`); the run ends with the counts. tests/test_fuzz.py runs the same
`check` on a few thousand inputs in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import io
import multiprocessing
import os
import random
import re
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOKEN = re.compile(r'"(?:[^"\\\r\n]|\\.)*"|#[^\r\n]*|\w+|\S')
NUMBER = re.compile(r"\b\d[\w.]*")
ALPHABET = list('{}[]()=,.:#"\\\n -+*/%_@$') + [
    "a", "Z", "0", "9", "\t", "\r", "\x00", "é", "\u00a0", "\u2028", "\ufeff", "𝔵", "🙂"]
WORDS = ["stage", "model", "pipeline", "export", "param", "eval", "to", "as", "true", "1e-4",
         "10_000", ".5", "-1", "base.model", '"x"', "sft", "SFT", "dpo", "lora()", "[", "{", "}",
         "=", ":", "1__0", '"\\q"', "max(1)", "min(2, 3)", "round(2.5)", "hf(\"nope\")", "0",
         "1e308", "-0.0", "2 // 0", "% 0"]
HUGE = ["1" + "0" * 400, "9" * 5000, "1e999", "1.7976931348623157e308", "1e308 * 10",
        "2 * 1e308", "1" + "0" * 300 + " * 1.5", "-" + "9" * 320, "123456789012345678901234567890"]
OPENERS = ["(", "[", "-", "+", "round(", "max(1, ", "{ a = "]
CLOSERS = {"(": ")", "[": "]", "-": "", "+": "", "round(": ")", "max(1, ": ")", "{ a = ": " }"}
FILE = "fuzz.tnx"


def seed_texts() -> list[str]:
    """The fuzzer's starting points: examples (good and broken) and the golden inputs."""
    paths = sorted((ROOT / "examples").rglob("*.tnx")) + sorted((ROOT / "tests" / "golden").rglob("*.tnx"))
    return [p.read_text(encoding="utf-8") for p in paths]


# --------------------------------------------------------------------------- mutations


def _tokens(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in TOKEN.finditer(text)] or [(0, 0)]


def _nest(text: str, rng: random.Random, start: int, end: int) -> str:
    """Wrap a token in 90 to 110 levels of one kind of nesting (the limit is 100)."""
    opener = rng.choice(OPENERS)
    depth = rng.randint(90, 110)
    return text[:start] + opener * depth + text[start:end] + CLOSERS[opener] * depth + text[end:]


def mutate(text: str, rng: random.Random, seeds: list[str]) -> str:
    """One to four random edits of `text`."""
    for _ in range(rng.randint(1, 4)):
        tokens = _tokens(text)
        start, end = rng.choice(tokens)
        edit = rng.randrange(16)
        if edit == 0:  # delete a character
            i = rng.randrange(max(1, len(text)))
            text = text[:i] + text[i + 1:]
        elif edit == 1:  # insert a character
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(ALPHABET) + text[i:]
        elif edit == 2:  # delete a token
            text = text[:start] + text[end:]
        elif edit == 3:  # duplicate a token
            text = text[:end] + rng.choice(["", " ", "\n"]) + text[start:end] + text[end:]
        elif edit == 4:  # replace a token by a word of the language
            text = text[:start] + rng.choice(WORDS) + text[end:]
        elif edit == 5:  # swap two tokens
            other_start, other_end = rng.choice(tokens)
            if other_start > end:
                text = (text[:start] + text[other_start:other_end] + text[end:other_start]
                        + text[start:end] + text[other_end:])
        elif edit == 6:  # truncate
            text = text[:rng.randrange(len(text) + 1)]
        elif edit == 7:  # splice in a piece of another seed
            other = rng.choice(seeds)
            a = rng.randrange(len(other) + 1)
            b = min(len(other), a + rng.randrange(1, 200))
            i = rng.randrange(len(text) + 1)
            text = text[:i] + other[a:b] + text[i:]
        elif edit == 8:  # a huge number in place of a number (or of any token)
            numbers = [m.span() for m in NUMBER.finditer(text)] or [(start, end)]
            a, b = rng.choice(numbers)
            text = text[:a] + rng.choice(HUGE) + text[b:]
        elif edit == 9:  # deep nesting around a token
            text = _nest(text, rng, start, end)
        elif edit == 10:  # a long flat chain of operators (never "too deep")
            op = rng.choice(["+", "-", "*", "/", "//", "%"])
            text = text[:end] + f" {op} 1" * rng.randint(200, 3000) + text[end:]
        elif edit == 11:  # line breaks: CRLF, CR only, or mixed
            text = rng.choice([lambda t: t.replace("\n", "\r\n"), lambda t: t.replace("\n", "\r"),
                               lambda t: t.replace("\n", rng.choice(["\r", "\r\n", "\n"]), 3)])(text)
        elif edit == 12:  # a byte-order mark in front (or in the middle)
            i = 0 if rng.random() < 0.7 else rng.randrange(len(text) + 1)
            text = text[:i] + "\ufeff" + text[i:]
        elif edit == 13:  # duplicate or move a whole line
            lines = text.split("\n")
            line = rng.choice(lines)
            lines.insert(rng.randrange(len(lines) + 1), line)
            if rng.random() < 0.5:
                lines.remove(line)
            text = "\n".join(lines)
        elif edit == 14:  # a comment in an odd place
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(["# c", "#", "# é \"x\"", "#}"]) + \
                rng.choice(["\n", "\r", "\r\n", ""]) + text[i:]
        else:  # unicode in a name or string
            text = text[:start] + text[start:end] + rng.choice(["é", "ß", "İ", "\u200b", "名"]) \
                + text[end:]
    return text


ATOM = re.compile(r'"(?:[^"\\\r\n]|\\.)*"|#[^\r\n]*|(?<![\w.])(?:\d[\w.]*|\.\d\w*|true|false)\b')
VALUES = ["0", "-1", "1e-4", "2.5", "10_000", '"x"', '""', "true", "false", "[]", "[1, 2]", "{}",
          "{ data = -1 }", '"pico"', '"float16"', '"cosine"', "scale", "tiny", "sums", "1 / 0",
          "max(1, 2)", "round(2.5)", "lora(rank = 4)", "adamw(lr = 1e-3)", *HUGE]


def mutate_values(text: str, rng: random.Random) -> str:
    """One to four edits that mostly keep the file parseable, so the checker and the
    formatter (not only the parser) see them: other values, nesting and long chains
    around values, duplicated or dropped lines, comments, line breaks."""
    for _ in range(rng.randint(1, 4)):
        atoms = [m.span() for m in ATOM.finditer(text) if not m.group().startswith("#")]
        start, end = rng.choice(atoms) if atoms else (len(text), len(text))
        lines = text.split("\n")
        edit = rng.randrange(8)
        if edit == 0:  # another value
            text = text[:start] + rng.choice(VALUES) + text[end:]
        elif edit == 1:  # nesting around a value, up to a little past the limit
            opener = rng.choice(OPENERS)
            depth = rng.choice([rng.randint(1, 5), rng.randint(95, 105)])
            text = (text[:start] + opener * depth + text[start:end] + CLOSERS[opener] * depth
                    + text[end:])
        elif edit == 2:  # a chain of operators after a value
            op = rng.choice(["+", "-", "*", "/", "//", "%"])
            operand = rng.choice(["1", "2", "0.5", "0", "scale", '"s"'])
            text = text[:end] + f" {op} {operand}" * rng.choice([1, 3, 500, 3000]) + text[end:]
        elif edit == 3:  # duplicate a line
            i = rng.randrange(len(lines))
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
            text = "\n".join(lines)
        elif edit == 4:  # drop a line
            del lines[rng.randrange(len(lines))]
            text = "\n".join(lines)
        elif edit == 5:  # a comment at the end of a line or on its own line
            i = rng.randrange(len(lines))
            lines[i] += rng.choice(["  # note", " #", "  # é \"x\" }"])
            text = "\n".join(lines)
        elif edit == 6:  # swap two values
            other_start, other_end = rng.choice(atoms) if atoms else (start, end)
            if other_start > end:
                text = (text[:start] + text[other_start:other_end] + text[end:other_start]
                        + text[start:end] + text[other_end:])
        else:  # line breaks and a byte-order mark
            text = rng.choice(["", "\ufeff"]) + text.replace("\n", rng.choice(["\r\n", "\r"]))
    return text


def inputs(count: int, seed: int) -> Iterator[tuple[int, str]]:
    """`count` mutants, deterministic for a given seed (input n is the same on any worker count).

    Even inputs get free edits (mostly syntax errors), odd ones value edits (mostly
    parseable), so every phase sees about half of them.
    """
    seeds = seed_texts()
    for n in range(count):
        rng = random.Random(f"{seed}:{n}")
        seed_text = seeds[n % len(seeds)]
        yield n, (mutate(seed_text, rng, seeds) if n % 2 == 0 else mutate_values(seed_text, rng))


# --------------------------------------------------------------------------- the oracle


def resolved(pipeline: Any) -> dict[str, Any]:
    """What a checked pipeline means, without positions: compared before and after `fmt`."""
    def dump(value: Any) -> Any:
        return value.model_dump() if hasattr(value, "model_dump") else value

    return {
        "name": pipeline.name, "params": pipeline.params, "settings": dump(pipeline.settings),
        **{kind: {n: dump(d.spec) for n, d in getattr(pipeline, kind).items()}
           for kind in ("tokenizers", "models", "datasets", "rewards")},
        "stages": [(s.name, s.kind, dump(s.config)) for s in pipeline.stages],
        "evals": [(e.name, dump(e.config)) for e in pipeline.evals],
        "exports": [dump(e.config) for e in pipeline.exports],
    }


def _said(pipeline: Any) -> list[tuple[str, str]]:
    return sorted((d.code, d.message) for d in pipeline.diagnostics)


def _cli_fmt(data: bytes) -> tuple[str, str]:
    """(what `tnx fmt -` prints, what `tnx fmt FILE` leaves in the file) for these bytes."""
    from tunix_dsl.cli import main

    stdout, stdin = io.StringIO(), io.TextIOWrapper(io.BytesIO(data), encoding="utf-8")
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()):
        saved, sys.stdin = sys.stdin, stdin
        try:
            main(["fmt", "-"])
        finally:
            sys.stdin = saved
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / FILE
            path.write_bytes(data)
            main(["fmt", str(path)])
            written = path.read_bytes().decode("utf-8")
    return stdout.getvalue(), written


def _share_parses() -> None:
    """Parse each distinct text once per input (the oracle parses the same text up to five
    times: lint, fmt, fmt again, lint again, the other line breaks, which clean to the same
    text). The AST is immutable, so sharing it changes nothing but the time; the first
    parse of every text is a real one."""
    import tunix_dsl.grammar.formatter
    import tunix_dsl.grammar.parser

    if hasattr(tunix_dsl.grammar.parser.parse_module, "cache_info"):
        return
    shared = functools.lru_cache(maxsize=8)(tunix_dsl.grammar.parser.parse_module)
    tunix_dsl.grammar.parser.parse_module = shared  # api.parse imports it from here at each call
    tunix_dsl.grammar.formatter.parse_module = shared


def check(text: str, deep: bool = False, rotate: str = "CR",
          outcomes: Counter[str] | None = None) -> str | None:
    """What is wrong with how the front end treats `text` (None: nothing).

    Line breaks: `rotate` names the variant compared (`CR` or `CRLF`); `deep`
    compares both and also runs `tnx fmt -` and `tnx fmt FILE` in process.
    `outcomes` counts what became of the input (refused by the parser, checked
    with errors, clean).
    """
    outcomes = Counter() if outcomes is None else outcomes
    from tunix_dsl.api import parse
    from tunix_dsl.cli.render import render_json, render_sarif, render_text
    from tunix_dsl.grammar.diagnostics import Diagnostic, TnxError
    from tunix_dsl.grammar.formatter import format_source
    from tunix_dsl.grammar.parser import scan_comments
    from tunix_dsl.grammar.source import clean_source

    pipeline = parse(text, FILE)
    if not all(isinstance(d, Diagnostic) for d in pipeline.diagnostics):
        return "lint returned something that is not a Diagnostic"
    internal = [d for d in pipeline.diagnostics if d.code == "TNX000"]
    if internal:
        return f"internal error: {internal[0].message}"
    render_text(pipeline.diagnostics, pipeline.sources)
    render_json(pipeline.diagnostics)
    render_sarif(pipeline.diagnostics, pipeline.sources)
    try:
        formatted = format_source(text, FILE)
    except TnxError as err:  # only a file the parser refuses, and for the reasons lint gives
        if sorted(err.diagnostics, key=str) != sorted(pipeline.diagnostics, key=str):
            return "fmt refused a file with other diagnostics than lint's"
        outcomes["syntax error: lint reports it, fmt refuses"] += 1
        return None
    outcomes["parsed, checked with errors" if pipeline.errors else "parsed, clean"] += 1
    if format_source(formatted, FILE) != formatted:
        return "fmt is not idempotent"
    before = sorted(c.text for c in scan_comments(clean_source(text), FILE))
    after = sorted(c.text for c in scan_comments(formatted, FILE))
    if before != after:
        return "fmt lost or changed a comment"
    again = parse(formatted, FILE)
    if _said(again) != _said(pipeline):
        return f"fmt changed the diagnostics: {_said(pipeline)} -> {_said(again)}"
    if resolved(again) != resolved(pipeline):
        return "fmt changed the resolved configuration"
    lf = clean_source(text)
    variants = {"CRLF": lf.replace("\n", "\r\n"), "CR": lf.replace("\n", "\r")}
    for name in (list(variants) if deep else [rotate]):
        if format_source(variants[name], FILE) != formatted:
            return f"fmt output differs for {name} line breaks"
    if deep:
        for name, variant in (("LF", lf), *variants.items()):
            printed, written = _cli_fmt(variant.encode("utf-8"))
            if printed != formatted or written != formatted:
                return f"`tnx fmt -` and `tnx fmt FILE` differ from format_source ({name})"
    return None


# --------------------------------------------------------------------------- the runner


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Timeout


def _run_one(job: tuple[int, str, int, float]) -> tuple[int, str | None, str, Counter[str]]:
    n, text, cli_every, limit = job
    _share_parses()
    outcomes: Counter[str] = Counter()
    # CPU time, not wall time: on a shared machine a slow input and a busy neighbour
    # would look alike.
    signal.signal(signal.SIGVTALRM, _alarm)
    signal.setitimer(signal.ITIMER_VIRTUAL, limit)
    try:
        problem = check(text, deep=cli_every > 0 and n % cli_every == 0,
                        rotate=("CR", "CRLF")[n % 2], outcomes=outcomes)
    except _Timeout:
        problem = f"took more than {limit:g} s of CPU"
    except BaseException:  # noqa: BLE001 - a crash is what the fuzzer looks for
        problem = "raised:\n" + traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
    return n, problem, text if problem else "", outcomes


def _save(out: Path, n: int, problem: str, text: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    (out / f"{digest}.tnx").write_bytes(text.encode("utf-8", "surrogatepass"))
    (out / f"{digest}.txt").write_text(f"input #{n}\n{problem}\n", encoding="utf-8")
    return out / f"{digest}.tnx"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "fuzz_crashes",
                        help="where failing inputs are saved")
    parser.add_argument("--cli-every", type=int, default=50,
                        help="compare `tnx fmt -` with `tnx fmt FILE` on every Nth input (0: never)")
    parser.add_argument("--time-limit", type=float, default=5.0,
                        help="CPU seconds per input (the slowest inputs take about 1 s)")
    args = parser.parse_args(argv)
    jobs = ((n, text, args.cli_every, args.time_limit) for n, text in inputs(args.inputs, args.seed))
    failures: dict[str, int] = {}
    outcomes: Counter[str] = Counter()
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(args.workers) as pool:
        for done, (n, problem, text, seen) in enumerate(pool.imap_unordered(_run_one, jobs, 64), 1):
            outcomes.update(seen)
            if problem is not None:
                kind = problem.strip().splitlines()[-1][:120]
                failures[kind] = failures.get(kind, 0) + 1
                if failures[kind] <= 3:
                    path = _save(args.out, n, problem, text)
                    print(f"FAIL #{n}: {kind}  ({path})", flush=True)
            if done % 10_000 == 0:
                rate = done / (time.perf_counter() - started)
                print(f"{done:,} inputs, {sum(failures.values())} failing, {rate:,.0f}/s",
                      flush=True)
    elapsed = time.perf_counter() - started
    print(f"\n{args.inputs:,} inputs (seed {args.seed}) in {elapsed:,.0f} s with "
          f"{args.workers} worker(s): {sum(failures.values())} failing, "
          f"{len(failures)} distinct")
    for kind, count in sorted(failures.items(), key=lambda kv: -kv[1]):
        print(f"  {count:>6}  {kind}")
    for kind, count in outcomes.most_common():
        print(f"  {count:>7,}  {kind}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
