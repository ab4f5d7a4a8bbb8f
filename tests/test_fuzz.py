"""Bounded fuzzing: random edits of the examples never make lint or fmt misbehave.

The mutations and the oracle are `bench/fuzz.py`'s (that script runs the same
check on 200,000+ inputs); here a fixed, seeded sample runs in a few seconds.
For every mutant: lint never raises and never reports an internal error; fmt
refuses exactly what the parser refuses, is idempotent, keeps every comment,
keeps the diagnostics and the resolved configuration, and gives the same text
for LF, CRLF and CR line breaks, from a file or from stdin.
"""

from __future__ import annotations

import functools
import random

import pytest

import tunix_dsl.grammar.formatter
import tunix_dsl.grammar.parser
from bench.fuzz import check, inputs, mutate, seed_texts

MUTANTS = 600
DEEP_EVERY = 100  # also both line-break variants and the `tnx fmt` CLI, in process


@pytest.fixture
def shared_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """One parse per distinct text, as bench/fuzz.py does (the AST is immutable)."""
    shared = functools.lru_cache(maxsize=8)(tunix_dsl.grammar.parser.parse_module)
    monkeypatch.setattr(tunix_dsl.grammar.parser, "parse_module", shared)
    monkeypatch.setattr(tunix_dsl.grammar.formatter, "parse_module", shared)


@pytest.mark.usefixtures("shared_parses")
def test_mutants_of_the_examples_pass_every_lint_and_fmt_property() -> None:
    failures = []
    for n, text in inputs(MUTANTS, seed=20240605):
        problem = check(text, deep=n % DEEP_EVERY == 0, rotate=("CR", "CRLF")[n % 2])
        if problem is not None:
            failures.append(f"input #{n}: {problem}\n{text!r}")
    assert not failures, f"{len(failures)} failing mutants; first:\n{failures[0]}"


def test_the_mutations_really_break_things() -> None:
    """The sample is worth running: most mutants differ and many get diagnostics."""
    from tunix_dsl.api import parse

    seeds = seed_texts()
    assert len(seeds) >= 20
    rng = random.Random(7)
    mutants = [mutate(seeds[i % len(seeds)], rng, seeds) for i in range(200)]
    assert sum(m not in seeds for m in mutants) > 180
    diagnosed = sum(bool(parse(m).errors) for m in mutants)
    assert diagnosed > 100, diagnosed


EDGES = {
    "long flat chain": "param p = " + "+".join(["1"] * 5000) + "\n",  # one level, any length
    "param chain in reverse": "".join(f"param p{i} = p{i + 1} + 1\n" for i in range(1000))
    + "param p1000 = 1\n",
    "unary at the limit": "param p = " + "-" * 100 + "1\n",
    "calls at the limit": "param p = " + "round(" * 100 + "1" + ")" * 100 + "\n",
    "parentheses": "param p = " + "(" * 3000 + "1" + ")" * 3000 + "\n",  # no level
    "CR line breaks": "# a\rparam p = 1 # b\rparam q = [1, # c\r2]\r",
    "byte-order mark": "\ufeffparam p = 1  # bom\r\n",
}


@pytest.mark.parametrize("name", EDGES)
def test_edge_inputs_pass_every_property(name: str) -> None:
    assert check(EDGES[name], deep=True) is None
