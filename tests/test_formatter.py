"""Formatter: layout goldens, comment preservation, and hypothesis round-trip properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunix_dsl.api import parse
from tunix_dsl.grammar.ast import strip_spans
from tunix_dsl.grammar.diagnostics import TnxError
from tunix_dsl.grammar.formatter import format_source
from tunix_dsl.grammar.parser import MAX_NESTING, parse_module

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "fmt"
EXAMPLES = sorted((ROOT / "examples").glob("*.tnx"))


def structure(text: str):
    """The module modulo spans: declarations exactly, comments as a multiset of texts.

    Comments compare as a multiset because `fmt` may move a comment that sits
    inside an expression with no comment slot to its own line above the field.
    """
    module, diagnostics = parse_module(text, "t.tnx")
    assert module is not None, diagnostics
    return strip_spans(module.decls), sorted(c.text for c in module.comments)


def assert_round_trip(text: str) -> str:
    formatted = format_source(text, "t.tnx")
    assert format_source(formatted, "t.tnx") == formatted, "fmt is not idempotent"
    assert structure(formatted) == structure(text), "fmt changed the meaning"
    return formatted


# ----------------------------------------------------------------------------- goldens


@pytest.mark.parametrize("case", sorted(p.name.removesuffix(".in.tnx") for p in GOLDEN.glob("*.in.tnx")))
def test_golden_layout(case: str) -> None:
    source = (GOLDEN / f"{case}.in.tnx").read_text()
    expected = (GOLDEN / f"{case}.out.tnx").read_text()
    assert format_source(source, f"{case}.in.tnx") == expected
    assert_round_trip(source)


def test_goldens_exist() -> None:
    assert len(list(GOLDEN.glob("*.in.tnx"))) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip(path: Path) -> None:
    assert_round_trip(path.read_text())


def test_quickstart_is_in_canonical_layout() -> None:
    text = (ROOT / "examples" / "quickstart.tnx").read_text()
    assert format_source(text) == text, "run `tnx fmt examples/quickstart.tnx`"


def test_alignment_groups_and_operators() -> None:
    source = (
        "model a=f()\nmodel bbb=f()\n\nmodel cc=f()\ndataset d=g()\n"
        "stage s: sft {x=1+2*3 longer_name=(1+2)*3 y=-(a-b) z=a-(b-c) w=a-b-c}\n"
    )
    assert format_source(source) == (
        "model a   = f()\nmodel bbb = f()\n\nmodel cc = f()\ndataset d = g()\n"
        "stage s: sft {\n"
        "  x           = 1 + 2 * 3\n"
        "  longer_name = (1 + 2) * 3\n"
        "  y           = -(a - b)\n"
        "  z           = a - (b - c)\n"
        "  w           = a - b - c\n"
        "}\n"
    )


def test_long_collections_break_one_item_per_line() -> None:
    items = ", ".join(f'"target_number_{i}"' for i in range(8))
    out = format_source(f"stage s: sft {{ lora = lora(rank = 8, targets = [{items}]) }}\n")
    lines = out.splitlines()
    assert lines[1] == "  lora = lora("
    assert lines[2] == "    rank = 8,"
    assert lines[3] == "    targets = ["
    assert lines[4] == '      "target_number_0",'
    assert lines[-3:] == ["    ],", "  )", "}"]
    assert max(len(line) for line in lines) <= 100


def test_numbers_and_strings_are_kept_as_written() -> None:
    source = 'param a = 10_000\nparam b = 1e-4\nparam c = .5\nparam d = "\\u00e9\\t"\n'
    assert format_source(source) == (
        'param a = 10_000\nparam b = 1e-4\nparam c = .5\nparam d = "\\u00e9\\t"\n')


def test_syntax_errors_are_never_formatted() -> None:
    with pytest.raises(TnxError) as err:
        format_source("pipeline q { seed = }")
    assert err.value.diagnostics[0].code == "TNX001"


def test_empty_and_comment_only_files() -> None:
    assert format_source("") == ""
    assert format_source("\n\n# just this\n\n\n# and this\n") == "# just this\n\n# and this\n"


# ----------------------------------------------------------------------------- properties

NAMES = st.sampled_from(["a", "tiny", "model", "data", "steps", "tokenizer", "x_1", "beta"])
NUMBERS = st.sampled_from(["0", "1", "64", "10_000", "1e-4", ".5", "2.0", "3E+2"])
STRINGS = st.sampled_from(['"nano"', '""', '"a\\nb"', '"# not a comment"', '"\\u00e9"'])
# Whitespace between tokens: newlines are insignificant, so a comment may go anywhere.
GAP = st.sampled_from([" ", " ", "  ", "\n  ", "  # note\n  ", "\n\n", "\t"])


def tokens_to_text(draw, tokens: list[str]) -> str:
    return "".join(tok + draw(GAP) for tok in tokens)


@st.composite
def expressions(draw, depth: int = 0) -> list[str]:
    """An expression as a token list (joined later with random whitespace)."""
    leaves = ["number", "string", "bool", "ref"]
    kind = draw(st.sampled_from(leaves if depth >= 3 else leaves + [
        "list", "map", "call", "binop", "unary", "paren"]))
    if kind == "number":
        return [draw(NUMBERS)]
    if kind == "string":
        return [draw(STRINGS)]
    if kind == "bool":
        return [draw(st.sampled_from(["true", "false"]))]
    if kind == "ref":
        parts = draw(st.lists(NAMES, min_size=1, max_size=3))
        return [tok for i, p in enumerate(parts) for tok in ([p] if i == 0 else [".", p])]
    if kind == "binop":
        op = draw(st.sampled_from(["+", "-", "*", "/", "//", "%"]))
        return draw(expressions(depth + 1)) + [op] + draw(expressions(depth + 1))
    if kind == "unary":
        return ["-"] + draw(expressions(depth + 1))
    if kind == "paren":
        return ["("] + draw(expressions(depth + 1)) + [")"]
    items = draw(st.lists(st.just(None), max_size=4))
    body: list[str] = []
    for i, _ in enumerate(items):
        if i:
            body.append(",")
        if kind == "map" or (kind == "call" and draw(st.booleans())):
            body += [draw(NAMES), "="]
        body += draw(expressions(depth + 1))
    if items and draw(st.booleans()):
        body.append(",")
    opener, closer = {"list": (["["], "]"), "map": (["{"], "}"),
                      "call": ([draw(NAMES), "("], ")")}[kind]
    return opener + body + [closer]


@st.composite
def pipelines(draw) -> str:
    """A random, syntactically valid `.tnx` file with random layout and comments."""
    chunks = [draw(st.sampled_from(["", "# header\n", "\n"]))]
    for _ in range(draw(st.integers(1, 5))):
        shape = draw(st.sampled_from(["value", "param", "block", "stage", "export"]))
        if shape in ("value", "param"):
            keyword = draw(st.sampled_from(["model", "dataset", "tokenizer", "reward"])) \
                if shape == "value" else "param"
            tokens = [keyword, draw(NAMES), "="] + draw(expressions())
        elif shape == "export":
            tokens = ["export", draw(NAMES), ".", "model", "to", '"out/x"', "as", '"hf"']
        else:
            head = ["stage", draw(NAMES), ":", "sft"] if shape == "stage" else \
                [draw(st.sampled_from(["pipeline", "eval"])), draw(NAMES)]
            tokens = head + ["{"]
            for _ in range(draw(st.integers(0, 4))):
                tokens += [draw(NAMES), "="] + draw(expressions())
                if draw(st.booleans()):
                    tokens.append(",")
            tokens.append("}")
        chunks.append(tokens_to_text(draw, tokens))
        chunks.append(draw(st.sampled_from(["\n", "\n\n", "\n\n\n", "  # after\n"])))
    return "".join(chunks)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(pipelines())
def test_fmt_is_idempotent_and_preserves_meaning(source: str) -> None:
    assert_round_trip(source)


# ----------------------------------------------------------------------------- inputs that once broke fmt


@pytest.mark.parametrize(("opener", "closer"), [
    ("-", ""), ("round(", ")"), ("[", "]"), ("{ a = ", " }"), ("-(", ")"), ("f(x = ", ")"),
])
def test_nesting_up_to_the_parser_limit_formats(opener: str, closer: str) -> None:
    """fmt recurses once per level: every depth the parser accepts (100) formats, stably."""
    depth = MAX_NESTING if opener != "-(" else MAX_NESTING // 2  # `-(` is two levels
    text = "param p = " + opener * depth + "1" + closer * depth + "\n"
    formatted = assert_round_trip(text)
    assert parse_module(formatted, "t.tnx")[0] is not None


def test_nested_unary_minus_gets_parentheses_that_are_no_level() -> None:
    """`--1` formats as `-(-1)`: parentheses must not push it past the nesting limit."""
    formatted = assert_round_trip("param p = " + "-" * MAX_NESTING + "1\n")
    assert formatted.count("(") == MAX_NESTING - 1


def test_comments_deep_inside_nested_collections_are_kept() -> None:
    text = "param p = " + "[  # open\n" * 60 + "1" + "]" * 60 + "  # end\n"
    formatted = assert_round_trip(text)
    assert formatted.count("# open") == 60 and formatted.count("# end") == 1


def test_long_operator_chains_format_in_a_loop() -> None:
    text = "param p = " + " + ".join(["1"] * 5000) + " * 2 - (3 - 4)\n"
    formatted = format_source(text)
    assert format_source(formatted) == formatted
    assert parse(formatted).params == parse(text).params == {"p": 5002}
    assert formatted.startswith("param p = 1 + 1 + 1") and formatted.endswith(" + 1 * 2 - (3 - 4)\n")
    items = ", ".join(f"x{i}" for i in range(40))
    broken = assert_round_trip(f"param p = 1 + [{items}] + [{items}]  # c\n")
    assert broken.count("\n") > 40  # the lists broke one item per line, the chain held


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_breaks_do_not_change_the_output(newline: str) -> None:
    text = "# head\nparam  a=1 # one\nparam b = [1, # two\n2]\n\n\nstage s: sft { steps = a }\n"
    expected = format_source(text)
    assert format_source(text.replace("\n", newline)) == expected
    assert format_source("\ufeff" + text.replace("\n", newline)) == expected
    assert expected.count("#") == 3
