"""Parser: literal forms, precedence, contextual keywords, exact spans, syntax-error codes."""

from __future__ import annotations

import pytest

from tunix_dsl.grammar import ast
from tunix_dsl.grammar.parser import parse_module
from tunix_dsl.grammar.source import SourceError, clean_source, read_source
from tunix_dsl.grammar.spans import Span


def parse_ok(text: str) -> ast.Module:
    module, diagnostics = parse_module(text, "t.tnx")
    assert diagnostics == [], diagnostics
    assert module is not None
    return module


def value_of(expr_text: str) -> ast.Expr:
    decl = parse_ok(f"param x = {expr_text}\n").decls[0]
    assert isinstance(decl, ast.ParamDecl)
    return decl.value


def errors_of(text: str) -> list:
    module, diagnostics = parse_module(text, "t.tnx")
    assert module is None
    assert diagnostics, "a broken file must produce a diagnostic"
    return diagnostics


# ----------------------------------------------------------------------------- literals


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("42", 42), ("10_000", 10000), ("1e-4", 1e-4), ("1E+3", 1000.0),
    (".5", 0.5), ("2.", 2.0), ("2.50", 2.5), ("1_000.5", 1000.5), ("3e2", 300.0),
])
def test_numbers_keep_value_and_text(text: str, value: float) -> None:
    number = value_of(text)
    assert isinstance(number, ast.Number)
    assert number.value == value and type(number.value) is type(value)
    assert number.text == text


@pytest.mark.parametrize(("text", "value"), [
    ('"plain"', "plain"), ('""', ""), ('"a\\nb"', "a\nb"), ('"tab\\there"', "tab\there"),
    ('"say \\"hi\\""', 'say "hi"'), ('"back\\\\slash"', "back\\slash"), ('"\\u00e9t\\u00E9"', "été"),
    ('"# not a comment"', "# not a comment"),
])
def test_strings_decode_escapes(text: str, value: str) -> None:
    string = value_of(text)
    assert isinstance(string, ast.String) and string.value == value


def test_bools_lists_maps_calls_refs() -> None:
    assert value_of("true") == ast.Bool(True, value_of("true").span)
    assert value_of("false").value is False
    lst = value_of('[1, "a", [], [2,],]')
    assert isinstance(lst, ast.ListExpr) and len(lst.items) == 4
    assert lst.items[2].items == () and len(lst.items[3].items) == 1
    mapping = value_of("{ data = -1, fsdp = 2 }")
    assert [e.key for e in mapping.entries] == ["data", "fsdp"]
    assert isinstance(mapping.entries[0].value, ast.UnaryOp)
    assert value_of("{}").entries == ()
    call = value_of('synthetic("addition", digits = 2, count = 10)')
    assert call.func == "synthetic"
    assert [a.name for a in call.args] == [None, "digits", "count"]
    assert call.positional[0].value.value == "addition"
    assert value_of("bytes()").args == ()
    ref = value_of("tune.model")
    assert isinstance(ref, ast.Ref) and ref.parts == ("tune", "model") and ref.dotted == "tune.model"


def test_arithmetic_precedence_associativity_and_parens() -> None:
    def shape(e: ast.Expr):
        if isinstance(e, ast.BinOp):
            return (shape(e.left), e.op, shape(e.right))
        if isinstance(e, ast.UnaryOp):
            return (e.op, shape(e.operand))
        return e.text if isinstance(e, ast.Number) else e.dotted

    assert shape(value_of("1 + 2 * 3")) == ("1", "+", ("2", "*", "3"))
    assert shape(value_of("1 - 2 - 3")) == (("1", "-", "2"), "-", "3")
    assert shape(value_of("(1 + 2) * 3")) == (("1", "+", "2"), "*", "3")
    assert shape(value_of("1500 * scale // 2 % 7")) == \
        ((("1500", "*", "scale"), "//", "2"), "%", "7")
    assert shape(value_of("-a * -(b / 2)")) == (("-", "a"), "*", ("-", ("b", "/", "2")))
    assert shape(value_of("2 - -1")) == ("2", "-", ("-", "1"))


def test_keywords_are_names_where_a_declaration_cannot_start() -> None:
    module = parse_ok(
        "model model = transformer(preset = \"nano\", tokenizer = chars)\n"
        "stage s: sft { model = base.model, dataset = d  tokenizer = t\n reward = r eval = e }\n"
        "export s.model to \"out\" as \"hf\"\n"
    )
    value_decl, stage, export = module.decls
    assert value_decl.name == "model" and value_decl.value.args[1].name == "tokenizer"
    assert [f.name for f in stage.fields] == ["model", "dataset", "tokenizer", "reward", "eval"]
    assert export.source.parts == ("s", "model")
    # a keyword prefix does not make a keyword
    assert parse_ok("param modelx = 1\n").decls[0].name == "modelx"


def test_all_declarations_and_field_separators() -> None:
    module = parse_ok(
        "pipeline p { seed = 0, mesh = { data = 2 } }\n"
        "param lr = 1e-3\n"
        "tokenizer t = bytes()\ndataset d = jsonl(\"x.jsonl\")\nreward r = exact_match()\n"
        "stage a: pretrain {\n  model = m\n  steps = 10\n}\n"
        "eval e { models = [a.model] }\n"
        'export a.adapter to "out/a" as "safetensors"\n'
    )
    kinds = [type(d).__name__ for d in module.decls]
    assert kinds == ["PipelineDecl", "ParamDecl", "ValueDecl", "ValueDecl", "ValueDecl",
                     "StageDecl", "EvalDecl", "ExportDecl"]
    assert [d.keyword for d in module.decls[2:5]] == ["tokenizer", "dataset", "reward"]
    stage = module.decls[5]
    assert (stage.name, stage.kind) == ("a", "pretrain")
    export = module.decls[7]
    assert (export.destination.value, export.format.value) == ("out/a", "safetensors")
    assert parse_ok("").decls == () and parse_ok("# only a comment\n").decls == ()


def test_comments_are_collected_outside_strings() -> None:
    module = parse_ok('# top\nparam x = "#no"  # trailing\n# end')
    assert [c.text for c in module.comments] == ["# top", "# trailing", "# end"]
    assert module.comments[1].span == Span("t.tnx", 2, 18, 2, 28, 23, 33)


# ----------------------------------------------------------------------------- spans


def test_spans_are_exact() -> None:
    text = "stage tune: dpo {\n  beta  = 0.1\n  model = base.model\n}\n"
    stage = parse_ok(text).decls[0]
    assert stage.span == Span("t.tnx", 1, 1, 4, 2, 0, len(text) - 1)
    assert stage.name_span == Span("t.tnx", 1, 7, 1, 11, 6, 10)
    assert stage.kind_span == Span("t.tnx", 1, 13, 1, 16, 12, 15)
    beta, model = stage.fields
    assert beta.name_span == Span("t.tnx", 2, 3, 2, 7, 20, 24)
    assert beta.value.span == Span("t.tnx", 2, 11, 2, 14, 28, 31)
    assert beta.span == Span("t.tnx", 2, 3, 2, 14, 20, 31)
    assert model.value.span == Span("t.tnx", 3, 11, 3, 21, 42, 52)
    assert text[model.value.span.start:model.value.span.end] == "base.model"


def test_parenthesised_operand_span_covers_parens() -> None:
    expr = value_of("(1 + 2) * 3")
    assert expr.span.column == len("param x = ") + 1
    assert expr.span.end_column - expr.span.column == len("(1 + 2) * 3")


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(("text", "message", "column"), [
    ("pipeline q { seed: 0 }", "expected `=`, found `:`", 18),
    ("pipeline q { seed = }", "expected a value, found `}`", 21),
    ("stage a: sft { x = 1 y 2 }", "expected `=`, found `2`", 24),
    ("model x = 1 2", "expected a declaration, an operator or end of file, found `2`", 13),
    ("pipeline q {", "expected a name or `}`, found end of file", 13),
    ("export a to b as \"c\"", "expected a string, found `b`", 13),
])
def test_unexpected_token_names_what_was_expected(text: str, message: str, column: int) -> None:
    (diag,) = errors_of(text)
    assert (diag.code, diag.message, diag.span.line, diag.span.column) == \
        ("TNX001", message, 1, column)


def test_misspelt_declaration_keyword_gets_did_you_mean() -> None:
    (diag,) = errors_of("stagee a: sft {}")
    assert (diag.code, diag.message) == ("TNX001", "unknown declaration `stagee`")
    assert diag.help == "did you mean `stage`?"
    assert (diag.span.column, diag.span.end_column) == (1, 7)
    (diag,) = errors_of("modle x = 1")
    assert diag.help == "did you mean `model`?"


def test_keyword_in_the_wrong_form_shows_the_right_form() -> None:
    (diag,) = errors_of("model x { preset = 1 }")
    assert diag.message == "`model` is not declared this way"
    assert diag.help == "write `model NAME = source(...)`"
    (diag,) = errors_of('export a.model into "x" as "hf"')
    assert (diag.message, diag.span.column) == ("expected `to`, found `into`", 16)
    (diag,) = errors_of("stage a sft {}")
    assert diag.code == "TNX001"
    assert diag.help == "a `stage` declaration is written `stage NAME: KIND { field = value ... }`"


def test_unexpected_character_and_unterminated_string() -> None:
    (diag,) = errors_of("param x = 1\nparam y = @\n")
    assert (diag.code, diag.message, diag.span.line, diag.span.column) == \
        ("TNX002", "unexpected character `@`", 2, 11)
    (diag,) = errors_of('param x = "abc\nparam y = 1\n')
    assert (diag.code, diag.message) == ("TNX002", "unterminated string")
    assert (diag.span.line, diag.span.column, diag.span.end_column) == (1, 11, 15)


@pytest.mark.parametrize(("text", "bad"), [
    ("1__0", "invalid number `1__0`"), ("0x1F", "invalid number `0x1F`"),
    ("1_", "invalid number `1_`"), ("1.5.2", "invalid number `1.5.2`"),
    ('"\\q"', "invalid escape `\\q` in string"), ('"\\u12"', "invalid escape `\\u12` in string"),
])
def test_invalid_number_or_escape(text: str, bad: str) -> None:
    diags = errors_of(f"param x = {text}\n")
    assert [(d.code, d.message) for d in diags] == [("TNX003", bad)]
    assert diags[0].span.column >= len("param x = ") + 1


def test_several_bad_literals_are_all_reported() -> None:
    diags = errors_of('param x = [1__0, "\\q", 2]\n')
    assert [d.code for d in diags] == ["TNX003", "TNX003"]
    assert diags[1].span.column == len('param x = [1__0, "') + 1


def test_deep_nesting_is_a_diagnostic_at_the_level_past_the_limit() -> None:
    (diag,) = errors_of("param x = " + "[" * 5000 + "]" * 5000)
    # level 1 is the `[` at column 11; level 101 is the first one past the limit
    assert (diag.code, diag.span.line, diag.span.column) == ("TNX004", 1, 111)
    assert diag.message == "expression nested more than 100 levels deep"


def test_errors_in_several_declarations_are_all_reported() -> None:
    text = (
        "pipeline q {\n  seed: 0\n}\n"
        'model tiny = transformer(preset = "nano"\n'
        'model small = transformer(preset = "pico")\n'
        "stage a: sft {\nmodel = tiny\n  steps = 1__0\n}\n"
        "stage b: sft { x = }\n"
    )
    found = [(d.code, d.span.line, d.span.column, d.message) for d in errors_of(text)]
    assert found == [
        ("TNX001", 2, 7, "expected `=`, found `:`"),
        ("TNX001", 5, 1, "expected `,` or `)`, found `model`"),
        ("TNX003", 8, 11, "invalid number `1__0`"),
        ("TNX001", 10, 20, "expected a value, found `}`"),
    ]


def test_byte_order_mark_and_crlf_line_endings() -> None:
    module = parse_ok("\ufeffparam x = 1\r\nparam y = 2  # c\r\n")
    assert [d.name for d in module.decls] == ["x", "y"]
    assert module.decls[1].span.line == 2
    (comment,) = module.comments
    assert (comment.text, comment.span.column, comment.span.end_column) == ("# c", 14, 17)


# ----------------------------------------------------------------------------- one mistake, one error


@pytest.mark.parametrize(("text", "line", "column", "message"), [
    # keywords are not reserved: `stage tune sft {` parses like an export until `{`
    ("stage tune sft {\n  steps = 1\n}\n", 1, 11, "expected `:` after `tune`, found `sft`"),
    ("param p 1\nparam q = 2\n", 1, 8, "expected `=` after `p`, found `1`"),
    ("pipeline q seed = 1 }\n", 1, 11, "expected `{` after `q`, found `seed`"),
    ("stage a: sft steps = 1 }\n", 1, 13, "expected `{` after `sft`, found `steps`"),
    ("export a.model to out as \"hf\"\n", 1, 19, "expected a string, found `out`"),
])
def test_declaration_heads_are_checked_against_their_keyword(text, line, column, message):
    (diag,) = errors_of(text)
    assert (diag.code, diag.span.line, diag.span.column, diag.message) == \
        ("TNX001", line, column, message)


@pytest.mark.parametrize(("text", "line", "column"), [
    ("stage a: sft {\n  steps = 1\n\nstage b: sft {\n  steps = 2\n}\n", 4, 1),  # missing `}`
    ("stage a: sft {\n  steps = [1, 2\n}\nparam z = 1\n", 3, 1),  # missing `]`
    ("model m = f(a = 1\nmodel n = g()\nparam z = 1\n", 2, 1),  # missing `)`
    ('param p = "abc\nparam q = 1\n', 1, 11),  # unterminated string
    ("stage x: sft { steps = 1 } }\nparam z = 1\n", 1, 28),  # one `}` too many
])
def test_one_mistake_gives_one_error(text, line, column):
    (diag,) = errors_of(text)
    assert (diag.span.line, diag.span.column) == (line, column)


def test_cr_only_line_breaks_count_as_lines_after_clean_source() -> None:
    text = clean_source("# a\rparam x = 1  # b\rparam y = @\r")
    (diag,) = errors_of(text)
    assert (diag.code, diag.span.line, diag.span.column) == ("TNX002", 3, 11)
    module = parse_ok(clean_source("# a\rparam x = 1  # b\r"))
    assert [(c.text, c.span.line) for c in module.comments] == [("# a", 1), ("# b", 2)]


def test_byte_order_mark_is_not_a_column_on_line_one() -> None:
    (diag,) = errors_of("\ufeffparam x = @\n")
    assert (diag.span.line, diag.span.column) == (1, 11)
    module = parse_ok("\ufeffparam x = 1  # c\n")
    assert module.decls[0].span.column == 1
    assert (module.comments[0].span.column, module.comments[0].span.end_column) == (14, 17)


@pytest.mark.parametrize(("text", "message"), [
    ("1" + "0" * 400, "number `1000000000...0000000000` is too large"),
    ("1e999", "number `1e999` is too large"),
    ("9" * 5000, "number `9999999999...9999999999` is too large"),
])
def test_number_literals_too_large_for_a_float(text: str, message: str) -> None:
    (diag,) = errors_of(f"param x = {text}\n")
    assert (diag.code, diag.message, diag.span.column) == ("TNX210", message, 11)


def test_source_errors_name_the_reason(tmp_path) -> None:
    (tmp_path / "latin1.tnx").write_bytes(b"param p = 1\n# caf\xe9\n")
    with pytest.raises(SourceError) as err:
        read_source(str(tmp_path / "latin1.tnx"))
    assert err.value.reason == "not UTF-8 text (byte 0xe9 on line 2, offset 17)"
    for path, reason in ((tmp_path / "nope.tnx", "no such file"),
                         (tmp_path, "is a directory, not a .tnx file"),
                         (tmp_path / ("x" * 300), "file name too long")):
        with pytest.raises(SourceError) as err:
            read_source(str(path))
        assert err.value.reason == reason
    (tmp_path / "crlf.tnx").write_bytes(b"param p = 1\r\n")
    assert read_source(str(tmp_path / "crlf.tnx")) == "param p = 1\r\n"  # as written
