"""The abstract syntax tree of a `.tnx` file.

Produced by `tunix_dsl.grammar.parser` from the Lark parse tree. Every node keeps the
`Span` it came from so that any later phase can point at the source. Nodes
are frozen dataclasses; equality "modulo spans" is `strip_spans(a) ==
strip_spans(b)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tunix_dsl.grammar.spans import Span

# --------------------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Number:
    value: int | float
    text: str  # as written (`1e-4`, `10_000`), kept for the formatter
    span: Span


@dataclass(frozen=True)
class String:
    value: str  # escapes already decoded
    span: Span


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span


@dataclass(frozen=True)
class Ref:
    """A (possibly dotted) name: `tiny`, `tune.model`."""

    parts: tuple[str, ...]
    span: Span

    @property
    def dotted(self) -> str:
        return ".".join(self.parts)


@dataclass(frozen=True)
class ListExpr:
    items: tuple[Expr, ...]
    span: Span


@dataclass(frozen=True)
class MapEntry:
    key: str
    key_span: Span
    value: Expr
    span: Span


@dataclass(frozen=True)
class MapExpr:
    entries: tuple[MapEntry, ...]
    span: Span


@dataclass(frozen=True)
class Arg:
    """A call argument; `name` is None for a positional one."""

    name: str | None
    name_span: Span | None
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call:
    """`func(a, k = v)`: sources (`transformer(...)`), strategies, optimizers."""

    func: str
    func_span: Span
    args: tuple[Arg, ...]
    span: Span

    @property
    def positional(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.name is None)

    @property
    def keywords(self) -> tuple[Arg, ...]:
        return tuple(a for a in self.args if a.name is not None)


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / // %
    left: Expr
    right: Expr
    span: Span


@dataclass(frozen=True)
class UnaryOp:
    op: str  # "-" or "+"
    operand: Expr
    span: Span


Expr = Number | String | Bool | Ref | ListExpr | MapExpr | Call | BinOp | UnaryOp

# --------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Field:
    """`name = value` inside a block."""

    name: str
    name_span: Span
    value: Expr
    span: Span


@dataclass(frozen=True)
class PipelineDecl:
    name: str
    name_span: Span
    fields: tuple[Field, ...]
    span: Span


@dataclass(frozen=True)
class ParamDecl:
    name: str
    name_span: Span
    value: Expr
    span: Span


@dataclass(frozen=True)
class ValueDecl:
    """`tokenizer|model|dataset|reward|tool|environment NAME = expr`."""

    keyword: str
    name: str
    name_span: Span
    value: Expr
    span: Span


@dataclass(frozen=True)
class StageDecl:
    name: str
    name_span: Span
    kind: str
    kind_span: Span
    fields: tuple[Field, ...]
    span: Span


@dataclass(frozen=True)
class EvalDecl:
    name: str
    name_span: Span
    fields: tuple[Field, ...]
    span: Span


@dataclass(frozen=True)
class ExportDecl:
    """`export tune.model to "out/dir" as "hf"`."""

    source: Ref
    destination: String
    format: String
    span: Span


Decl = PipelineDecl | ParamDecl | ValueDecl | StageDecl | EvalDecl | ExportDecl


@dataclass(frozen=True)
class Comment:
    text: str  # including the leading `#`
    span: Span


@dataclass(frozen=True)
class Module:
    decls: tuple[Decl, ...]
    comments: tuple[Comment, ...]
    span: Span


def strip_spans(node: Any) -> Any:
    """A span-free structural copy of `node`, for equality modulo positions."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        if isinstance(node, Span):
            return None
        values = tuple(
            (f.name, strip_spans(getattr(node, f.name)))
            for f in dataclasses.fields(node)
            if not f.name.endswith("span") and f.name != "span"
        )
        return (type(node).__name__, values)
    if isinstance(node, tuple | list):
        return tuple(strip_spans(x) for x in node)
    return node


def children(expr: Expr) -> tuple[Expr, ...]:
    """The expressions directly inside `expr`, in source order."""
    if isinstance(expr, ListExpr):
        return expr.items
    if isinstance(expr, MapExpr):
        return tuple(e.value for e in expr.entries)
    if isinstance(expr, Call):
        return tuple(a.value for a in expr.args)
    if isinstance(expr, BinOp):
        return (expr.left, expr.right)
    if isinstance(expr, UnaryOp):
        return (expr.operand,)
    return ()


def walk(expr: Expr) -> Iterator[Expr]:
    """`expr` and every expression inside it, in source order.

    A loop, not recursion: a chain `1 + 1 + ... + 1` nests one `BinOp` per
    term, thousands deep.
    """
    stack = [expr]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))
