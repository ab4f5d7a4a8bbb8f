"""Text → AST: runs the Lark parser and turns its tree into `tunix_dsl.ast`.

`parse_module` never raises on bad input: syntax problems come back as
diagnostics with exact spans —

- TNX001 unexpected token (the message names what was expected),
- TNX002 unexpected character or unterminated string,
- TNX003 invalid number literal or string escape.
"""

from __future__ import annotations

import dataclasses
import difflib
import re

from lark import Token, Tree
from lark.exceptions import UnexpectedInput

from tunix_dsl import ast
from tunix_dsl.diagnostics import Diagnostic, Severity
from tunix_dsl.grammar import get_parser
from tunix_dsl.spans import Span
from tunix_dsl.syntax_errors import (
    DECL_FORMS,
    DECL_SHAPES,
    span_at,
    syntax_diagnostic,
    too_deep,
    whole_file_span,
)

_DIGITS = r"\d(?:_?\d)*"
_INT_RE = re.compile(rf"{_DIGITS}")
_FLOAT_RE = re.compile(
    rf"(?:{_DIGITS}\.(?:{_DIGITS})?|\.{_DIGITS}|{_DIGITS})(?:[eE][+-]?{_DIGITS})?"
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0"}
_COMMENT_OR_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"?|#[^\r\n]*')


def parse_module(text: str, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    """Parse one `.tnx` source. Returns (module, diagnostics); module is None on errors."""
    try:
        tree = get_parser().parse(text)
    except UnexpectedInput as err:
        first = syntax_diagnostic(err, text, file)
        return None, [first, *_errors_in_other_declarations(text, file, first.span.start)]
    except RecursionError:
        return None, [too_deep(text, file)]
    builder = _AstBuilder(text, file)
    try:
        decls = tuple(builder.decl(child) for child in tree.children)
    except RecursionError:
        return None, [too_deep(text, file)]
    if builder.diagnostics:
        return None, builder.diagnostics
    module = ast.Module(decls, scan_comments(text, file), whole_file_span(text, file))
    return module, []


def _at_next_declaration(diag: Diagnostic, text: str, end: int) -> Diagnostic:
    """A declaration parsed alone ends where the next one starts: say so, not "end of file"."""
    if end >= len(text) or not diag.message.endswith("found end of file"):
        return diag
    word = re.match(r"\w+", text[end:]).group()
    span = span_at(text, diag.span.file, end, end + len(word))
    message = diag.message.removesuffix("end of file") + f"`{word}`"
    return dataclasses.replace(diag, message=message, span=span)


# A line that starts a declaration: a keyword at column 1 in a declaration's shape
# (`model = tiny` at column 1 is a field, not a declaration).
_DECLARATION_START = re.compile(
    r"^(?:(?:pipeline|eval)\s+\w+\s*\{|stage\s+\w+\s*:"
    r"|(?:param|tokenizer|model|dataset|reward)\s+\w+\s*=|export\s+\w)",
    re.MULTILINE,
)
_MAX_ERRORS = 20


def _errors_in_other_declarations(text: str, file: str, first_error: int) -> list[Diagnostic]:
    """Syntax errors of the declarations other than the one holding the first error.

    After an error the LALR parser cannot go on, so each declaration (from a
    line that starts one to the next) is parsed alone, with the rest of the
    text blanked out (newlines kept, so positions stay exact).
    """
    starts = [m.start() for m in _DECLARATION_START.finditer(text)]
    if not starts:
        return []
    blank = re.sub(r"[^\n]", " ", text)
    found: list[Diagnostic] = []
    for start, end in zip(starts, starts[1:] + [len(text)], strict=True):
        if start <= first_error < end or (first_error >= len(text) and end == len(text)):
            continue
        alone = blank[:start] + text[start:end]
        try:
            tree = get_parser().parse(alone)
        except UnexpectedInput as err:
            found.append(_at_next_declaration(syntax_diagnostic(err, alone, file), text, end))
        except RecursionError:
            continue
        else:
            builder = _AstBuilder(alone, file)
            try:
                for child in tree.children:
                    builder.decl(child)
            except RecursionError:
                continue
            found += builder.diagnostics
        if len(found) >= _MAX_ERRORS:
            break
    return found


def scan_comments(text: str, file: str) -> tuple[ast.Comment, ...]:
    """Every `# …` comment outside string literals (the parser ignores them)."""
    comments = []
    for match in _COMMENT_OR_STRING.finditer(text):
        if match.group().startswith("#"):
            span = span_at(text, file, match.start(), match.end())
            comments.append(ast.Comment(match.group().rstrip(), span))
    return tuple(comments)


class _AstBuilder:
    """Converts the Lark tree into AST dataclasses, collecting TNX003 problems."""

    def __init__(self, text: str, file: str):
        self.text = text
        self.file = file
        self.diagnostics: list[Diagnostic] = []

    # ---------------------------------------------------------------- helpers

    def span(self, node: Tree | Token) -> Span:
        """A token's span, or a subtree's: from its first token to its last."""
        first = last = node
        while isinstance(first, Tree):
            first = next(c for c in first.children if c is not None)
        while isinstance(last, Tree):
            last = next(c for c in reversed(last.children) if c is not None)
        return Span(
            self.file, first.line, first.column, last.end_line, last.end_column,
            first.start_pos, last.end_pos,
        )

    def name(self, token: Token) -> tuple[str, Span]:
        return str(token), self.span(token)

    # ---------------------------------------------------------------- declarations

    def decl(self, tree: Tree) -> ast.Decl:
        kids = tree.children
        span = self.span(tree)
        keyword = self.keyword(tree.data, kids[0])
        if tree.data == "export_decl":
            self.expect_word(kids[2], "to")
            self.expect_word(kids[4], "as")
            source = self._ref(kids[1])
            return ast.ExportDecl(source, self._string(kids[3]), self._string(kids[5]), span)
        name, name_span = self.name(kids[1])
        if tree.data == "stage_decl":  # NAME NAME ":" NAME block
            stage_kind, kind_span = self.name(kids[3])
            return ast.StageDecl(name, name_span, stage_kind, kind_span, self.block(kids[4]), span)
        if tree.data == "block_decl":
            decl_type = ast.EvalDecl if keyword == "eval" else ast.PipelineDecl
            return decl_type(name, name_span, self.block(kids[2]), span)
        value = self.expr(kids[3])  # NAME NAME "=" expr
        if keyword == "param":
            return ast.ParamDecl(name, name_span, value, span)
        return ast.ValueDecl(keyword, name, name_span, value, span)

    def keyword(self, shape: str, token: Token) -> str:
        """The declaration keyword, checked against the shape it was written in."""
        word = str(token)
        allowed = DECL_SHAPES[shape]
        if word in allowed:
            return word
        if word in DECL_FORMS:
            message = f"`{word}` is not declared this way"
            help_text = f"write `{DECL_FORMS[word]}`"
        else:
            message = f"unknown declaration `{word}`"
            close = difflib.get_close_matches(word, allowed, n=1, cutoff=0.5)
            help_text = (f"did you mean `{close[0]}`?" if close else
                         "a declaration starts with one of: " + ", ".join(DECL_FORMS))
        self.diagnostics.append(Diagnostic(
            "TNX001", Severity.ERROR, message, self.span(token), label="not a declaration keyword"
            if word not in DECL_FORMS else "wrong form", help=help_text,
        ))
        return allowed[0]

    def expect_word(self, token: Token, word: str) -> None:
        if str(token) != word:
            self.diagnostics.append(Diagnostic(
                "TNX001", Severity.ERROR, f"expected `{word}`, found `{token}`", self.span(token),
                label="unexpected here", help=f"write `{DECL_FORMS['export']}`",
            ))

    def block(self, tree: Tree) -> tuple[ast.Field, ...]:
        fields = []
        for item in _subtrees(tree):  # "{" (field ","?)* "}"
            name, name_span = self.name(item.children[0])
            fields.append(ast.Field(name, name_span, self.expr(item.children[2]), self.span(item)))
        return tuple(fields)

    # ---------------------------------------------------------------- expressions

    def expr(self, node: Tree) -> ast.Expr:
        return getattr(self, f"_{node.data}")(node)

    def _number(self, tree: Tree) -> ast.Number:
        token = tree.children[0]
        text = str(token)
        span = self.span(token)
        if _INT_RE.fullmatch(text):
            return ast.Number(int(text.replace("_", "")), text, span)
        if _FLOAT_RE.fullmatch(text):
            return ast.Number(float(text.replace("_", "")), text, span)
        self.diagnostics.append(Diagnostic(
            "TNX003", Severity.ERROR, f"invalid number `{text}`", span,
            label="not a number",
            help="write integers like `10_000`, decimals like `0.5` or `.5`, "
                 "exponents like `1e-4` (`_` only between digits)",
        ))
        return ast.Number(0, text, span)

    def _string(self, tree: Tree) -> ast.String:
        token = tree.children[0]
        return ast.String(self._decode(token), self.span(token))

    def _decode(self, token: Token) -> str:
        raw = str(token)[1:-1]
        out: list[str] = []
        i = 0
        while i < len(raw):
            char = raw[i]
            if char != "\\":
                out.append(char)
                i += 1
                continue
            code = raw[i + 1]
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                i += 2
                continue
            hex_digits = raw[i + 2:i + 6]
            if code == "u" and re.fullmatch(r"[0-9A-Fa-f]{4}", hex_digits):
                out.append(chr(int(hex_digits, 16)))
                i += 6
                continue
            length = 2 if code != "u" else 2 + len(re.match(r"[0-9A-Fa-f]*", hex_digits).group())
            start = token.start_pos + 1 + i
            self.diagnostics.append(Diagnostic(
                "TNX003", Severity.ERROR, f"invalid escape `{raw[i:i + length]}` in string",
                span_at(self.text, self.file, start, start + length), label="unknown escape",
                help='valid escapes: `\\n` `\\t` `\\r` `\\"` `\\\\` `\\0` and `\\uXXXX` '
                     "(four hex digits)",
            ))
            i += length
        return "".join(out)

    def _true(self, tree: Tree) -> ast.Bool:
        return ast.Bool(True, self.span(tree))

    def _false(self, tree: Tree) -> ast.Bool:
        return ast.Bool(False, self.span(tree))

    def _ref(self, tree: Tree) -> ast.Ref:
        parts = tuple(str(t) for t in tree.children if t.type == "NAME")  # NAME ("." NAME)*
        return ast.Ref(parts, self.span(tree))

    def _call(self, tree: Tree) -> ast.Call:
        func, func_span = self.name(tree.children[0])
        args = []
        for arg in _subtrees(tree):  # NAME "(" [arg ("," arg)* ","?] ")"
            if arg.data == "kwarg":  # NAME "=" expr
                name, name_span = self.name(arg.children[0])
                args.append(ast.Arg(name, name_span, self.expr(arg.children[2]), self.span(arg)))
            else:
                args.append(ast.Arg(None, None, self.expr(arg.children[0]), self.span(arg)))
        return ast.Call(func, func_span, tuple(args), self.span(tree))

    def _list(self, tree: Tree) -> ast.ListExpr:
        items = tuple(self.expr(c) for c in _subtrees(tree))
        return ast.ListExpr(items, self.span(tree))

    def _map(self, tree: Tree) -> ast.MapExpr:
        entries = []
        for entry in _subtrees(tree):  # NAME "=" expr
            key, key_span = self.name(entry.children[0])
            value = self.expr(entry.children[2])
            entries.append(ast.MapEntry(key, key_span, value, self.span(entry)))
        return ast.MapExpr(tuple(entries), self.span(tree))

    def _binop(self, tree: Tree) -> ast.BinOp:
        left, op, right = tree.children
        return ast.BinOp(str(op), self.expr(left), self.expr(right), self.span(tree))

    def _unop(self, tree: Tree) -> ast.UnaryOp:
        op, operand = tree.children
        return ast.UnaryOp(str(op), self.expr(operand), self.span(tree))

    def _paren(self, tree: Tree) -> ast.Expr:
        # The AST has no parenthesis node: the tree's shape already says it.
        return self.expr(tree.children[1])


def _subtrees(tree: Tree) -> list[Tree]:
    """Children that are rules, leaving out punctuation tokens and absent optionals."""
    return [c for c in tree.children if isinstance(c, Tree)]
