"""Text → AST: runs the Lark parser and turns its tree into `tunix_dsl.grammar.ast`.

`parse_module` never raises on bad input: syntax problems come back as
diagnostics with exact spans —

- TNX001 unexpected token (the message names what was expected),
- TNX002 unexpected character or unterminated string,
- TNX003 invalid number literal or string escape,
- TNX004 an expression nested more than `MAX_NESTING` levels deep,
- TNX210 a number literal too large for a float.

The nesting limit is what keeps every later phase (evaluator, checker,
formatter) within Python's recursion limit: they recurse once per level and
walk a chain of binary operators (`1 + 1 + ... + 1`, any length) in a loop.

Callers hand in text through `tunix_dsl.grammar.source.clean_source`: positions count
`\n` line breaks only. A leading byte-order mark is kept in the text (offsets
stay valid) but does not count as a column.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re

from lark import Token, Tree
from lark.exceptions import UnexpectedInput

from tunix_dsl.grammar import ast, get_parser
from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.grammar.spans import Span
from tunix_dsl.grammar.syntax_errors import (
    DECL_FORMS,
    DECL_SHAPES,
    bom_shift,
    head_mismatch,
    span_at,
    syntax_diagnostic,
    whole_file_span,
)

_DIGITS = r"\d(?:_?\d)*"
_INT_RE = re.compile(rf"{_DIGITS}")
_FLOAT_RE = re.compile(
    rf"(?:{_DIGITS}\.(?:{_DIGITS})?|\.{_DIGITS}|{_DIGITS})(?:[eE][+-]?{_DIGITS})?"
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "0": "\0"}
_COMMENT_OR_STRING = re.compile(r'"(?:[^"\\\r\n]|\\.)*"?|#[^\r\n]*')
# Deeper expressions are refused (TNX004); see the module docstring.
MAX_NESTING = 100
_NESTING = frozenset({"binop", "unop", "call", "list", "map"})  # not parentheses: see _paren
# Larger literals cannot become a float (about 1.8e308): TNX210.
_MAX_DIGITS = 308


def parse_module(text: str, file: str) -> tuple[ast.Module | None, list[Diagnostic]]:
    """Parse one `.tnx` source. Returns (module, diagnostics); module is None on errors.

    Positions count lines by `\n` only: pass text through `source.clean_source` first.
    """
    try:
        tree = get_parser().parse(text)
    except UnexpectedInput as err:
        return None, _syntax_errors(err, text, file)
    builder = _AstBuilder(text, file)
    built = [builder.decl(_tree(child)) for child in tree.children]
    if builder.diagnostics:  # a declaration too deep to build (None) left its diagnostic
        return None, builder.diagnostics
    decls = tuple(d for d in built if d is not None)
    module = ast.Module(decls, scan_comments(text, file), whole_file_span(text, file))
    return module, []


# A line that starts a declaration: a keyword at column 1 in a declaration's shape
# (`model = tiny` at column 1 is a field, not a declaration).
_DECLARATION_START = re.compile(
    r"^(?:(?:pipeline|eval)\s+\w+\s*\{|stage\s+\w+\s*:?"
    r"|(?:param|tokenizer|model|dataset|reward|tool|environment)\s+\w+\s*=|export\s+\w)",
    re.MULTILINE,
)
_MAX_ERRORS = 20


def _syntax_errors(err: UnexpectedInput, text: str, file: str) -> list[Diagnostic]:
    """One diagnostic per broken declaration, each at its first mistake.

    After an error the LALR parser cannot go on, so the text is cut where lines
    start declarations and each piece is parsed alone (the rest blanked out,
    newlines kept, so positions stay exact). A mistake that runs on into the next
    declaration (an unclosed `{`) is reported once, in its own piece, at the point
    where the next declaration starts; the next one is then fine on its own.
    """
    whole = _first_error(err, text, file)
    starts = [m.start() for m in _DECLARATION_START.finditer(text)]
    bounds = ([0] if not starts or starts[0] > 0 else []) + starts + [len(text)]
    blank = re.sub(r"[^\n]", " ", text)
    found: list[Diagnostic] = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        if not text[start:end].strip():
            continue
        alone = blank[:start] + text[start:end] + blank[end:]
        try:
            tree = get_parser().parse(alone)
        except UnexpectedInput as piece_err:
            found.append(_at_next_declaration(_first_error(piece_err, alone, file), text, end))
        else:
            builder = _AstBuilder(alone, file)
            for child in tree.children:
                builder.decl(_tree(child))
            found += builder.diagnostics
        if len(found) >= _MAX_ERRORS:
            break
    return found or [whole]


def _first_error(err: UnexpectedInput, text: str, file: str) -> Diagnostic:
    """The parser's error, or an earlier mistake in the declaration's head that caused it.

    Keywords are not reserved, so `stage tune sft {` parses as far as an
    `export` would and fails at `{`; checked against the `stage` shape, the
    mistake is the missing `:` after `tune`.
    """
    diag = syntax_diagnostic(err, text, file)
    head = head_mismatch(err, text, file)
    if head is not None and head.span.start <= diag.span.start:
        return head
    return diag


def _at_next_declaration(diag: Diagnostic, text: str, end: int) -> Diagnostic:
    """A declaration parsed alone ends where the next one starts: say so, not "end of file"."""
    if end >= len(text) or not diag.message.endswith("found end of file"):
        return diag
    match = re.match(r"\w+", text[end:])
    word = match.group() if match else text[end]
    span = span_at(text, diag.span.file, end, end + len(word))
    message = diag.message.removesuffix("end of file") + f"`{word}`"
    return dataclasses.replace(diag, message=message, span=span)


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
        return self._between(first, last)

    def _between(self, first: Token, last: Token) -> Span:
        shift = bom_shift(self.text)
        line, column = _known(first.line), _known(first.column)
        end_line, end_column = _known(last.end_line), _known(last.end_column)
        return Span(
            self.file, line, column - (shift if line == 1 else 0),
            end_line, end_column - (shift if end_line == 1 else 0),
            _known(first.start_pos), _known(last.end_pos),
        )

    def name(self, token: Token) -> tuple[str, Span]:
        return str(token), self.span(token)

    # ---------------------------------------------------------------- declarations

    def decl(self, tree: Tree) -> ast.Decl | None:
        """The declaration's AST, or None when it is nested too deeply to build."""
        if self._too_deep(tree):
            return None
        kids = tree.children
        span = self.span(tree)
        keyword = self.keyword(tree.data, _token(kids[0]))
        if tree.data == "export_decl":
            self.expect_word(_token(kids[2]), "to")
            self.expect_word(_token(kids[4]), "as")
            source = self._ref(kids[1])
            return ast.ExportDecl(source, self._string(kids[3]), self._string(kids[5]), span)
        name, name_span = self.name(_token(kids[1]))
        if tree.data == "stage_decl":  # NAME NAME ":" NAME block
            stage_kind, kind_span = self.name(_token(kids[3]))
            return ast.StageDecl(name, name_span, stage_kind, kind_span, self.block(kids[4]), span)
        if tree.data == "block_decl":
            decl_type = ast.EvalDecl if keyword == "eval" else ast.PipelineDecl
            return decl_type(name, name_span, self.block(kids[2]), span)
        value = self.expr(kids[3])  # NAME NAME "=" expr
        if keyword == "param":
            return ast.ParamDecl(name, name_span, value, span)
        return ast.ValueDecl(keyword, name, name_span, value, span)

    def _too_deep(self, decl: Tree) -> bool:
        """TNX004 at the first expression deeper than MAX_NESTING (an iterative walk).

        Each call, list, map, unary or binary operator is a level,
        except that a chain of binary operators (`a + b - c`) is one level however
        long it is: every phase walks such a chain in a loop.
        """
        stack: list[tuple[Tree, int]] = [(decl, 0)]
        while stack:
            node, depth = stack.pop()
            if depth > MAX_NESTING:
                first = self.span(node)
                self.diagnostics.append(Diagnostic(
                    "TNX004", Severity.ERROR,
                    f"expression nested more than {MAX_NESTING} levels deep", first,
                    label=f"level {depth} starts here",
                    help="give the inner part its own `param` and use its name here"))
                return True
            children = [c for c in node.children if isinstance(c, Tree)]
            for i, child in reversed(list(enumerate(children))):
                chained = node.data == "binop" and i == 0 and child.data == "binop"
                stack.append((child, depth + (child.data in _NESTING and not chained)))
        return False

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
            name, name_span = self.name(_token(item.children[0]))
            fields.append(ast.Field(name, name_span, self.expr(item.children[2]), self.span(item)))
        return tuple(fields)

    # ---------------------------------------------------------------- expressions

    def expr(self, node: Tree) -> ast.Expr:
        return getattr(self, f"_{node.data}")(node)

    def _number(self, tree: Tree) -> ast.Number:
        token = _token(tree.children[0])
        text = str(token)
        span = self.span(token)
        if _INT_RE.fullmatch(text):
            digits = text.replace("_", "").lstrip("0")
            if len(digits) > _MAX_DIGITS:  # int() of a long digit string is slow, then refused
                return self._too_large(text, span)
            return ast.Number(int(digits or "0"), text, span)
        if _FLOAT_RE.fullmatch(text):
            value = float(text.replace("_", ""))
            if math.isinf(value):
                return self._too_large(text, span)
            return ast.Number(value, text, span)
        self.diagnostics.append(Diagnostic(
            "TNX003", Severity.ERROR, f"invalid number `{_shorten(text)}`", span,
            label="not a number",
            help="write integers like `10_000`, decimals like `0.5` or `.5`, "
                 "exponents like `1e-4` (`_` only between digits)",
        ))
        return ast.Number(0, text, span)

    def _too_large(self, text: str, span: Span) -> ast.Number:
        self.diagnostics.append(Diagnostic(
            "TNX210", Severity.ERROR, f"number `{_shorten(text)}` is too large", span,
            label="larger than any float (about 1.8e308)",
            help="numbers must fit a 64-bit float"))
        return ast.Number(0, text, span)

    def _string(self, tree: Tree) -> ast.String:
        token = _token(tree.children[0])
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
            hex_run = len(hex_digits) - len(hex_digits.lstrip("0123456789abcdefABCDEF"))
            length = 2 if code != "u" else 2 + hex_run
            start = _known(token.start_pos) + 1 + i
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
        parts = tuple(str(t) for t in tree.children if isinstance(t, Token) and t.type == "NAME")  # NAME ("." NAME)*
        return ast.Ref(parts, self.span(tree))

    def _call(self, tree: Tree) -> ast.Call:
        func, func_span = self.name(_token(tree.children[0]))
        args = []
        for arg in _subtrees(tree):  # NAME "(" [arg ("," arg)* ","?] ")"
            if arg.data == "kwarg":  # NAME "=" expr
                name, name_span = self.name(_token(arg.children[0]))
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
            key, key_span = self.name(_token(entry.children[0]))
            value = self.expr(entry.children[2])
            entries.append(ast.MapEntry(key, key_span, value, self.span(entry)))
        return ast.MapExpr(tuple(entries), self.span(tree))

    def _binop(self, tree: Tree) -> ast.BinOp:
        # A chain `a + b - c ...` nests to the left: build it in a loop, any length.
        chain = []
        node = tree
        while isinstance(node, Tree) and node.data == "binop":
            chain.append(node)
            node = node.children[0]
        expr = self.expr(node)
        first = self.span(node)
        for link in reversed(chain):
            _, op, right = link.children
            right_expr = self.expr(right)
            end = self.span(right)
            span = Span(self.file, first.line, first.column, end.end_line, end.end_column,
                        first.start, end.end)
            expr = ast.BinOp(str(op), expr, right_expr, span)
        return expr  # type: ignore[return-value]

    def _unop(self, tree: Tree) -> ast.UnaryOp:
        op, operand = tree.children
        return ast.UnaryOp(str(op), self.expr(operand), self.span(tree))

    def _paren(self, tree: Tree) -> ast.Expr:
        # The AST has no parenthesis node: the tree's shape already says it. Parentheses
        # are no nesting level (fmt adds some: `-(-1)`), so any number of them is a loop.
        while tree.data == "paren":
            tree = tree.children[1]
        return self.expr(tree)


def _shorten(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:10]}...{text[-10:]}"


def _token(node: Token | Tree) -> Token:
    """A grammar position that holds a terminal (the grammar guarantees it)."""
    assert isinstance(node, Token), node
    return node


def _tree(node: Token | Tree) -> Tree:
    """A grammar position that holds a rule (the grammar guarantees it)."""
    assert isinstance(node, Tree), node
    return node


def _known(position: int | None) -> int:
    """A token position; lark fills every one of them with propagate_positions."""
    assert position is not None
    return position


def _subtrees(tree: Tree) -> list[Tree]:
    """Children that are rules, leaving out punctuation tokens and absent optionals."""
    return [c for c in tree.children if isinstance(c, Tree)]
