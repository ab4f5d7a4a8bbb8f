"""The language server's pieces in process: the tolerant scan, positions, quick fixes."""

from __future__ import annotations

from pathlib import Path

import pytest
from lsprotocol import types as lsp

from tunix_dsl.api import parse
from tunix_dsl.lsp.complete import complete
from tunix_dsl.lsp.diagnostics import quick_fix
from tunix_dsl.lsp.hover import hover_text
from tunix_dsl.lsp.navigate import definition, references
from tunix_dsl.lsp.positions import LineIndex
from tunix_dsl.lsp.scan import scan

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = (ROOT / "examples" / "quickstart.tnx").read_text(encoding="utf-8")


def context(marked: str):
    cursor = marked.index("|")
    return scan(marked.replace("|", "", 1), cursor).context


@pytest.mark.parametrize(("marked", "frame", "expect", "field", "member", "prefix"), [
    ("stage a: grpo {\n  policy = tiny\n  be|\n}", "block", "operator", "policy", None, "be"),
    ("stage a: grpo {\n  model = |\n  data = sums\n}", "block", "operand", "model", None, ""),
    ("stage a: grpo {\n  model = tune.mo|\n}", "block", "operand", "model", ("tune",), "mo"),
    ("stage a: grpo {\n  model = tune.|\n  data = sums\n}", "block", "operand", "model",
     ("tune",), ""),
    ("stage a: sft {\n  optimizer = adamw(lr = 1, schedule = |)\n}", "call", "operand",
     "schedule", None, ""),
    ("model x = transformer(\"nano\", tokenizer = |)", "call", "operand", "tokenizer", None, ""),
    ("pipeline p {\n  mesh = { d| }\n}", "map", "entry", None, None, "d"),
    ("stage a: grpo {\n  rewards = [a, |]\n}", "list", "operand", "rewards", None, ""),
    ("export tune.|", "module", "operand", "source", ("tune",), ""),
])
def test_context_at_the_cursor(marked, frame, expect, field, member, prefix) -> None:
    ctx = context(marked)
    assert (ctx.frame.type, ctx.expect, ctx.field, ctx.member_of, ctx.prefix) == \
        (frame, expect, field, member, prefix)


def test_module_headers_and_strings() -> None:
    assert context("stage a: gr|").header == ("stage", "a", ":")
    assert context("model x = tr|").header == ("model", "x")
    ctx = context('stage a: grpo {\n  loss = "gs|\n  data = sums\n}')
    assert ctx.string is not None and ctx.string.text == '"gs' and ctx.field == "loss"
    assert context("# a comm|ent").in_comment


def test_outline_of_a_real_example() -> None:
    outline = scan(QUICKSTART)
    assert [(d.keyword, d.name, d.kind) for d in outline.decls if d.keyword == "stage"] == [
        ("stage", "base", "pretrain"), ("stage", "tune", "sft"), ("stage", "prefer", "dpo"),
        ("stage", "solve", "grpo"), ("stage", "shrink", "distill")]
    base = outline.decl("base")
    assert [f.name for f in base.fields] == ["model", "data", "steps", "batch_size", "max_seq_len",
                                           "optimizer"]
    assert QUICKSTART[base.end - 1] == "}"
    export = outline.decls[-1]
    assert export.keyword == "export" and QUICKSTART[export.start:export.end].endswith('"hf"')


def test_definition_and_references_survive_a_syntax_error() -> None:
    broken = QUICKSTART.replace('precision = "float32"', "precision = (")
    assert not parse(broken).ok
    outline = scan(broken)
    use = broken.index("= tiny") + 3
    assert definition(outline, use) == (broken.index("tiny  ="), broken.index("tiny  =") + 4)
    # stage base's `model = tiny` and the eval block's model list
    assert len(references(outline, use, include_declaration=False)) == 2


def test_positions_count_utf16_units_for_the_client() -> None:
    text = "# 😀é\nparam x = 1\n"
    index = LineIndex(text)
    offset = text.index("é")
    assert index.position(offset) == lsp.Position(0, 4)  # `#`, space, 😀 (2 units)
    assert index.offset(lsp.Position(0, 4)) == offset
    assert LineIndex(text, "utf-32").position(offset) == lsp.Position(0, 3)
    assert LineIndex(text, "utf-8").position(offset) == lsp.Position(0, 6)
    assert index.offset(lsp.Position(99, 0)) == len(text)


@pytest.mark.parametrize(("source", "old", "new", "title"), [
    ("invalid_choice.tnx", None, None, None),
    ("adapter_without_lora.tnx", "tune.adapter", "tune.model", "Replace `tune.adapter`"),
    ("undefined_reference.tnx", "sum", "sums", "Replace `sum`"),
])
def test_quick_fixes_from_help(source: str, old, new, title) -> None:
    text = (ROOT / "examples" / "broken" / source).read_text(encoding="utf-8")
    pipeline = parse(text, source)
    fixes = [quick_fix(d, text, scan(text)) for d in pipeline.diagnostics]
    fixes = [f for f in fixes if f is not None]
    if source == "invalid_choice.tnx":  # `"gspo"` → `"grpo"`: the quotes stay
        (fix,) = fixes
        assert text[fix[1]:fix[2]].startswith('"') and fix[3] == '"grpo"'
        fixed = text[:fix[1]] + fix[3] + text[fix[2]:]
    else:
        (fix,) = fixes
        assert fix[0].startswith(title) and text[fix[1]:fix[2]] == old and fix[3] == new
        fixed = text[:fix[1]] + new + text[fix[2]:]
    codes = {d.code for d in pipeline.diagnostics}
    assert not codes & {d.code for d in parse(fixed, source).diagnostics}


def test_typing_a_file_from_scratch_never_breaks_completion_or_hover() -> None:
    """Every 7th prefix of a real example, as if typed: completion and hover at its end."""
    pipeline = parse(QUICKSTART)
    answered = 0
    for end in range(0, len(QUICKSTART), 7):
        text = QUICKSTART[:end]
        index = LineIndex(text)
        answered += bool(complete(text, end, index))
        hover_text(text, scan(text), max(0, end - 1), pipeline)
    assert answered > 50


def test_secondary_labels_become_related_information() -> None:
    from tunix_dsl.lsp.diagnostics import to_lsp

    path = ROOT / "examples" / "broken" / "duplicate_name.tnx"
    text = path.read_text(encoding="utf-8")
    pipeline = parse(text, str(path))
    (diag,) = to_lsp(pipeline.diagnostics, str(path), path.as_uri(), text, LineIndex(text),
                     scan(text))
    assert diag.code == "TNX103" and diag.range.start == lsp.Position(4, 6)
    assert "model `tiny` redefined here" in diag.message and "help: names are shared" in diag.message
    (related,) = diag.related_information
    assert related.location.uri == path.as_uri() and related.location.range.start == lsp.Position(2, 6)
    assert related.message == "first defined here as model"


def test_list_fields_complete_to_lists_outside_the_brackets() -> None:
    text = ('reward ok = exact_match(field = "answer")\nreward short = length_penalty(target = 3)\n'
            "stage s: grpo {\n  rewards = \n}\n")
    at = text.index("rewards = ") + len("rewards = ")
    assert {i.label for i in complete(text, at, LineIndex(text))} == {"[ok]", "[short]"}
    inside = text[:at] + "[" + text[at:]
    assert {i.label for i in complete(inside, at + 1, LineIndex(inside))} == {"ok", "short"}
