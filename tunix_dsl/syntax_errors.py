"""Syntax diagnostics: what the parser says when a `.tnx` file does not parse.

- TNX001 unexpected token: the message names, in words, what the grammar
  expected and what it found (`expected `=` or `}`, found `:``),
- TNX002 unexpected character or unterminated string,
- TNX003 invalid number literal or string escape (emitted by the AST builder).

Also the declaration shapes of grammar/tnx.lark, which the parser checks the
declaration keyword against.
"""

from __future__ import annotations

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from tunix_dsl.diagnostics import Diagnostic, Severity
from tunix_dsl.spans import Span


def whole_file_span(text: str, file: str) -> Span:
    lines = text.split("\n")
    return Span(file, 1, 1, len(lines), len(lines[-1]) + 1, 0, len(text))


def span_at(text: str, file: str, start: int, end: int) -> Span:
    """The span of text[start:end], with 1-based line/column computed from offsets."""
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = line + text.count("\n", start, end)
    end_column = end - (text.rfind("\n", 0, end) + 1) + 1
    return Span(file, line, column, end_line, end_column, start, end)


def too_deep(text: str, file: str) -> Diagnostic:
    return Diagnostic(
        "TNX001", Severity.ERROR, "expression nested too deeply to parse",
        whole_file_span(text, file), help="split the expression into `param`s",
    )


def syntax_diagnostic(err: UnexpectedInput, text: str, file: str) -> Diagnostic:
    if isinstance(err, UnexpectedToken):
        return describe_unexpected_token(err, text, file)
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream
        char = text[pos] if pos < len(text) else ""
        if char == '"':
            line_end = text.find("\n", pos)
            line_end = len(text) if line_end < 0 else line_end
            return Diagnostic(
                "TNX002", Severity.ERROR, "unterminated string",
                span_at(text, file, pos, line_end), label="this string never ends",
                help='close it with `"` on the same line (use `\\n` for a line break)',
            )
        shown = repr(char)[1:-1] if not char.isprintable() else char
        return Diagnostic(
            "TNX002", Severity.ERROR, f"unexpected character `{shown}`",
            span_at(text, file, pos, min(pos + 1, len(text))), label="not valid here",
        )
    assert isinstance(err, UnexpectedEOF)
    end = len(text)
    return Diagnostic(
        "TNX001", Severity.ERROR, "unexpected end of file",
        span_at(text, file, end, end), label="the file ends here",
    )


# Human words for the terminals of grammar/tnx.lark, in the order messages list them.
_TERMINAL_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "STRING": "a string",
    "TRUE": "`true`", "FALSE": "`false`",
    "EQUAL": "`=`", "COLON": "`:`", "COMMA": "`,`", "DOT": "`.`",
    "LBRACE": "`{`", "RBRACE": "`}`", "LPAR": "`(`", "RPAR": "`)`",
    "LSQB": "`[`", "RSQB": "`]`", "ADD_OP": "an operator", "MUL_OP": "an operator",
    "TO": "`to`", "AS": "`as`", "$END": "end of file",
}
# Declarations are a NAME in a fixed shape (see grammar/tnx.lark); which words fit which shape.
DECL_SHAPES = {
    "block_decl": ("pipeline", "eval"),
    "stage_decl": ("stage",),
    "value_decl": ("model", "dataset", "tokenizer", "reward", "param"),
    "export_decl": ("export",),
}
DECL_FORMS = {
    "pipeline": "pipeline NAME { field = value ... }",
    "param": "param NAME = value",
    "tokenizer": "tokenizer NAME = source(...)",
    "model": "model NAME = source(...)",
    "dataset": "dataset NAME = source(...)",
    "reward": "reward NAME = source(...)",
    "stage": "stage NAME: KIND { field = value ... }",
    "eval": "eval NAME { field = value ... }",
    "export": 'export STAGE.model to "dir" as "format"',
}
_EXPRESSION_START = {"NAME", "NUMBER", "STRING", "TRUE", "FALSE", "LSQB", "LBRACE", "LPAR"}


def _expected_words(expected: set[str]) -> list[str]:
    words: list[str] = []
    if _EXPRESSION_START <= expected:
        words.append("a value")
        expected = expected - _EXPRESSION_START - {"ADD_OP"}
    if {"NAME", "$END"} <= expected:  # between declarations: a NAME starts the next one
        words.append("a declaration")
        expected = expected - {"NAME"}
    for name in sorted(expected, key=lambda n: (list(_TERMINAL_WORDS).index(n)
                                                if n in _TERMINAL_WORDS else 99, n)):
        word = _TERMINAL_WORDS.get(name, f"`{name.lower()}`")
        if word not in words:
            words.append(word)
    return words


def _join_or(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _current_keyword(err: UnexpectedToken) -> str | None:
    """The first word of the declaration being parsed when the error struck."""
    stack = getattr(getattr(err, "state", None), "value_stack", None) or []
    for item in stack:  # finished declarations are trees; the open one starts with a token
        if isinstance(item, Token):
            return str(item)
    return None


def describe_unexpected_token(err: UnexpectedToken, text: str, file: str) -> Diagnostic:
    """TNX001 for a token the grammar does not allow here, naming what it expected."""
    token = err.token
    expected = set(getattr(err, "accepts", None) or err.expected)
    if token.type == "$END":
        found = "end of file"
        span = span_at(text, file, len(text), len(text))
    else:
        found = f"`{token}`"
        start = token.start_pos if token.start_pos is not None else len(text)
        span = span_at(text, file, start, start + len(str(token)))
    words = _expected_words(expected)
    message = f"expected {_join_or(words)}, found {found}" if words else f"unexpected {found}"
    help_text = None
    if token.type == "COLON" and "EQUAL" in expected:
        help_text = "fields are written `name = value`"
    elif token.type == "$END" and "RBRACE" in expected:
        help_text = "a `{` block is still open: close it with `}`"
    keyword = _current_keyword(err)
    if help_text is None and keyword in DECL_FORMS:
        article = "an" if keyword[0] in "aeiou" else "a"
        help_text = f"{article} `{keyword}` declaration is written `{DECL_FORMS[keyword]}`"
    return Diagnostic("TNX001", Severity.ERROR, message, span, label="unexpected here",
                      help=help_text)
