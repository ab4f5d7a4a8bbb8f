"""Bounded fuzzing: random edits of the examples never make the front end raise.

Every mutant goes through the lint entry point (`tunix_dsl.api.parse`, the
whole parse + check + rules) and must come back as a `Pipeline` whose
problems are diagnostics. Mutants that still parse must also format
idempotently. The edit count is fixed and seeded, so the test is
deterministic and takes a few seconds.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from tunix_dsl.api import parse
from tunix_dsl.diagnostics import Diagnostic, TnxError
from tunix_dsl.formatter import format_source

ROOT = Path(__file__).resolve().parents[1]
SEEDS = sorted((ROOT / "examples").rglob("*.tnx"))
MUTANTS = 1000
TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\w+|\S')
ALPHABET = list('{}[]()=,.:#"\\\n -+*/%_@$') + ["a", "Z", "0", "9", "é", "\t", "\x00"]
WORDS = ["stage", "model", "pipeline", "export", "to", "as", "true", "1e-4", "10_000", ".5",
         "-1", "base.model", '"x"', "sft", "dpo", "lora()", "[", "{", "}", "=", "1__0", '"\\q"']


def mutate(text: str, rng: random.Random) -> str:
    """One to three random character or token edits."""
    for _ in range(rng.randint(1, 3)):
        tokens = [m.span() for m in TOKEN.finditer(text)] or [(0, 0)]
        start, end = rng.choice(tokens)
        edit = rng.randrange(7)
        if edit == 0:  # delete a character
            i = rng.randrange(max(1, len(text)))
            text = text[:i] + text[i + 1:]
        elif edit == 1:  # insert a character
            i = rng.randrange(len(text) + 1)
            text = text[:i] + rng.choice(ALPHABET) + text[i:]
        elif edit == 2:  # delete a token
            text = text[:start] + text[end:]
        elif edit == 3:  # duplicate a token
            text = text[:end] + " " + text[start:end] + text[end:]
        elif edit == 4:  # replace a token by a word of the language
            text = text[:start] + rng.choice(WORDS) + text[end:]
        elif edit == 5:  # swap with another token
            other_start, other_end = rng.choice(tokens)
            if other_start > end:
                text = (text[:start] + text[other_start:other_end] + text[end:other_start]
                        + text[start:end] + text[other_end:])
        else:  # truncate
            text = text[:rng.randrange(len(text) + 1)]
    return text


def test_mutated_examples_give_diagnostics_never_exceptions() -> None:
    rng = random.Random(20240605)
    texts = [p.read_text() for p in SEEDS]
    assert texts, "no examples to fuzz"
    outcomes = {"clean": 0, "diagnosed": 0}
    for n in range(MUTANTS):
        source = mutate(texts[n % len(texts)], rng)
        try:
            pipeline = parse(source)
        except Exception as err:  # noqa: BLE001 - the point of the test
            raise AssertionError(f"parse raised {err!r} on:\n{source}") from err
        assert all(isinstance(d, Diagnostic) for d in pipeline.diagnostics)
        outcomes["diagnosed" if pipeline.diagnostics else "clean"] += 1
        try:
            formatted = format_source(source, "fuzz.tnx")
        except TnxError:
            continue
        assert format_source(formatted, "fuzz.tnx") == formatted, source
    assert outcomes["diagnosed"] > MUTANTS // 4, outcomes  # the edits really break things
