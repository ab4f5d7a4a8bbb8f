"""Syntax diagnostics: what the parser says when a `.tnx` file does not parse.

- TNX001 unexpected token: the message names, in words, what the grammar
  expected and what it found (`expected `=` or `}`, found `:``),
- TNX002 unexpected character or unterminated string,
- TNX003 invalid number literal or string escape (emitted by the AST builder).

Also the declaration shapes of grammar/tnx.lark, which the parser checks the
declaration keyword against.
"""

from __future__ import annotations

import re

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.grammar.spans import Span


def whole_file_span(text: str, file: str) -> Span:
    lines = text.split("\n")
    return Span(file, 1, 1, len(lines), len(lines[-1]) + 1, 0, len(text))


def bom_shift(text: str) -> int:
    """1 when `text` starts with a byte-order mark: editors do not show it as a column."""
    return 1 if text.startswith("\ufeff") else 0


def span_at(text: str, file: str, start: int, end: int) -> Span:
    """The span of text[start:end], with 1-based line/column computed from offsets."""
    line = text.count("\n", 0, start) + 1
    column = start - (text.rfind("\n", 0, start) + 1) + 1
    end_line = line + text.count("\n", start, end)
    end_column = end - (text.rfind("\n", 0, end) + 1) + 1
    shift = bom_shift(text)
    if line == 1:
        column = max(1, column - shift)
    if end_line == 1:
        end_column = max(1, end_column - shift)
    return Span(file, line, column, end_line, end_column, start, end)


def syntax_diagnostic(err: UnexpectedInput, text: str, file: str) -> Diagnostic:
    if isinstance(err, UnexpectedToken):
        return describe_unexpected_token(err, text, file)
    if isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream
        assert pos is not None  # lark sets it for every UnexpectedCharacters
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
    "value_decl": ("model", "dataset", "tokenizer", "reward", "param", "tool", "environment"),
    "export_decl": ("export",),
}
DECL_FORMS = {
    "pipeline": "pipeline NAME { field = value ... }",
    "param": "param NAME = value",
    "tokenizer": "tokenizer NAME = source(...)",
    "model": "model NAME = source(...)",
    "dataset": "dataset NAME = source(...)",
    "reward": "reward NAME = source(...)",
    "tool": "tool NAME = python(\"file.py:function\")",
    "environment": "environment NAME = tools([...], reward = ...)",
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


def _current_keyword(err: UnexpectedToken) -> Token | None:
    """The first word of the declaration being parsed when the error struck."""
    stack = getattr(getattr(err, "state", None), "value_stack", None) or []
    for item in stack:  # finished declarations are trees; the open one starts with a token
        if isinstance(item, Token):
            return item
    return None


# What follows each declaration keyword, up to its body or value.
_HEADS: dict[str, tuple[str, ...]] = {
    "pipeline": ("NAME", "{"), "eval": ("NAME", "{"),
    "stage": ("NAME", ":", "NAME", "{"),
    **{k: ("NAME", "=") for k in ("param", "tokenizer", "model", "dataset", "reward")},
    "export": ("REF", "to", "STRING", "as", "STRING"),
}
_HEAD_WORDS = {"NAME": "a name", "REF": "a stage output", "STRING": "a string"}
_HEAD_TOKEN = re.compile(r'\s+|#[^\r\n]*|(?P<token>"(?:[^"\\\r\n]|\\.)*"|[A-Za-z_]\w*|\S)')
_NAME = re.compile(r"[A-Za-z_]\w*")


def _head_tokens(text: str, pos: int, count: int) -> list[tuple[str, int]]:
    tokens: list[tuple[str, int]] = []
    while len(tokens) < count and pos < len(text):
        match = _HEAD_TOKEN.match(text, pos)
        if match is None:
            break
        if match.group("token") is not None:
            tokens.append((match.group("token"), match.start()))
        pos = match.end()
    return tokens


def _fits(expected: str, token: str) -> bool:
    if expected in ("NAME", "REF"):
        return _NAME.fullmatch(token) is not None
    if expected == "STRING":
        return token.startswith('"')
    return token == expected


def head_mismatch(err: UnexpectedInput, text: str, file: str) -> Diagnostic | None:
    """The first token of the open declaration's head that does not fit its keyword's shape.

    A missing `:`, `=` or `{` is reported where it belongs, right after the
    token before it; None when the head fits (the parser's own error stands).
    """
    keyword = _current_keyword(err) if isinstance(err, UnexpectedToken) else None
    if keyword is None or str(keyword) not in _HEADS or keyword.end_pos is None:
        return None
    shape = _HEADS[str(keyword)]
    tokens = _head_tokens(text, keyword.end_pos, 4 * len(shape))
    previous, previous_end = str(keyword), keyword.end_pos
    i = 0
    for expected in shape:
        if i >= len(tokens):
            return None  # the file ends inside the head: the parser says so
        token, start = tokens[i]
        if not _fits(expected, token):
            return _head_diagnostic(str(keyword), expected, token, start, previous,
                                    previous_end, text, file)
        i += 1
        if expected == "REF":  # NAME ("." NAME)*
            while i + 1 < len(tokens) and tokens[i][0] == "." and _fits("NAME", tokens[i + 1][0]):
                i += 2
        previous, previous_end = tokens[i - 1][0], tokens[i - 1][1] + len(tokens[i - 1][0])
    return None


def _head_diagnostic(keyword: str, expected: str, token: str, start: int, previous: str,
                     previous_end: int, text: str, file: str) -> Diagnostic:
    article = "an" if keyword[0] in "aeiou" else "a"
    help_text = f"{article} `{keyword}` declaration is written `{DECL_FORMS[keyword]}`"
    if expected in _HEAD_WORDS or expected in ("to", "as"):
        wanted = _HEAD_WORDS.get(expected, f"`{expected}`")
        return Diagnostic("TNX001", Severity.ERROR, f"expected {wanted}, found `{token}`",
                          span_at(text, file, start, start + len(token)),
                          label="unexpected here", help=help_text)
    # A missing punctuation mark: point between the two tokens, where it goes.
    end = previous_end + (previous_end < len(text) and text[previous_end] not in "\r\n")
    return Diagnostic("TNX001", Severity.ERROR,
                      f"expected `{expected}` after `{previous}`, found `{token}`",
                      span_at(text, file, previous_end, end), label=f"`{expected}` missing here",
                      help=help_text)


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
    keyword_token = _current_keyword(err)
    keyword = str(keyword_token) if keyword_token is not None else None
    if help_text is None and keyword in DECL_FORMS:
        article = "an" if keyword[0] in "aeiou" else "a"
        help_text = f"{article} `{keyword}` declaration is written `{DECL_FORMS[keyword]}`"
    return Diagnostic("TNX001", Severity.ERROR, message, span, label="unexpected here",
                      help=help_text)
