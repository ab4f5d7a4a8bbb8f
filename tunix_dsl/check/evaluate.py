"""Evaluating expressions: params, arithmetic, `--set` overrides.

Values are plain Python: int, float, str, bool, list, dict. References to
params are replaced by the param's value (params may use other params, in any
order; a cycle is reported with its path). References to other declarations
are not values: the builder (`tunix_dsl.check.build`) turns them into typed
references where a field expects one.

Nothing here can exhaust the stack: params are evaluated in dependency order
found by a loop (a chain of thousands of params declared in reverse is fine),
chains of binary operators are folded in a loop, and every other expression
is at most `parser.MAX_NESTING` levels deep. Every number stays a finite
float-sized value (TNX210 otherwise), so later float() calls cannot overflow.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

from tunix_dsl.check.resolve import SymbolTable, did_you_mean
from tunix_dsl.grammar import ast
from tunix_dsl.grammar.diagnostics import Diagnostic, Label
from tunix_dsl.grammar.spans import Span
from tunix_dsl.rules.registry import diagnostic


class _Fail:
    """Marks a value that could not be computed (a diagnostic was already emitted)."""

    def __repr__(self) -> str:
        return "FAIL"


FAIL: Any = _Fail()

_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul,
    "/": operator.truediv, "//": operator.floordiv, "%": operator.mod,
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _round(x: Any) -> int:
    return int(round(x))


# Pure numeric functions usable in any expression: `steps = round(1500 * scale)`.
BUILTINS: dict[str, tuple[Callable[..., Any], int, int]] = {
    "round": (_round, 1, 1),
    "int": (lambda x: int(x), 1, 1),
    "float": (lambda x: float(x), 1, 1),
    "min": (min, 2, 8),
    "max": (max, 2, 8),
}
_FLOAT_MAX = 1.7976931348623157e308


def split_override(text: str) -> tuple[str, str]:
    """`NAME=VALUE` from the command line → (name, raw value); ValueError if malformed.

    The one parser of `--set` for every verb (`lint`, `graph`, `run`, `plan`).
    """
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"expected NAME=VALUE, got `{text}`")
    return name.strip(), value


def _too_large(value: Any) -> bool:
    """Not a finite number that fits a float (ints beyond ~1.8e308 cannot become floats)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    return isinstance(value, int) and abs(value) > _FLOAT_MAX


def describe(value: Any) -> str:
    """`a string "x"`, `an integer 3`: how a wrong value is named in messages."""
    if isinstance(value, bool):
        return f"a bool `{'true' if value else 'false'}`"
    if isinstance(value, int):
        return f"an integer `{value}`"
    if isinstance(value, float):
        return f"a number `{value!r}`"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'a string `"{shown}"`'
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return type(value).__name__


def _a(noun: str) -> str:
    return ("an " if noun[:1] in "aeiou" else "a ") + noun


def param_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "list"


class Evaluator:
    """Computes expression values; params are evaluated on first use, memoised."""

    def __init__(self, table: SymbolTable, diags: list[Diagnostic]):
        self.table = table
        self.diags = diags
        self.params: dict[str, Any] = {}
        self._overrides: dict[str, ast.Expr] = {}
        self._override_raw: dict[str, tuple[str, Span]] = {}
        self._in_progress: list[tuple[str, Span]] = []
        self.extra_sources: dict[str, str] = {}

    # ------------------------------------------------------------------ params
    def param(self, name: str, use_span: Span) -> Any:
        if name in self.params:
            return self.params[name]
        stack = [n for n, _ in self._in_progress]
        if name in stack:
            cycle = stack[stack.index(name):] + [name]
            first = self._in_progress[stack.index(name)]
            self.diags.append(diagnostic(
                "TNX301", "params form a cycle: " + " → ".join(cycle), use_span,
                label=f"`{name}` is used while computing itself",
                secondary=[Label(first[1], f"`{first[0]}` starts the cycle")],
                help="give one of these params a literal value"))
            self.params[name] = FAIL
            return FAIL
        symbol = self.table.symbols[name]
        decl = symbol.decl
        assert isinstance(decl, ast.ParamDecl)
        self._in_progress.append((name, use_span))
        try:
            value = self.value(decl.value)
            if value is not FAIL and not isinstance(value, int | float | str | bool | list):
                self.diags.append(diagnostic(
                    "TNX201", f"param `{name}` must be a number, string, bool or list",
                    decl.value.span, label=f"found {describe(value)}"))
                value = FAIL
            if value is not FAIL and (name in self._overrides or name in self._override_raw):
                value = self._apply_override(name, value)
        finally:
            self._in_progress.pop()
        self.params[name] = value
        return value

    def evaluate_params(self) -> dict[str, Any]:
        for symbol in self.table.of_keyword("param"):
            for name, span in self._dependency_order(symbol.name, symbol.name_span):
                self.param(name, span)
        return self.params

    def _param_uses(self, name: str) -> list[tuple[str, Span]]:
        """The params that param `name` (and its `--set` value) refers to, with the use spans."""
        decl = self.table.symbols[name].decl
        assert isinstance(decl, ast.ParamDecl)
        exprs = [decl.value] + ([self._overrides[name]] if name in self._overrides else [])
        uses = []
        for expr in exprs:
            for node in ast.walk(expr):
                if isinstance(node, ast.Ref):
                    symbol = self.table.get(node.parts[0])
                    if symbol is not None and symbol.keyword == "param":
                        uses.append((symbol.name, node.span))
        return uses

    def _dependency_order(self, root: str, root_span: Span) -> list[tuple[str, Span]]:
        """Params `root` needs, dependencies first (a depth-first walk kept on a list).

        A cycle is reported here, and its params fail, so evaluating in this
        order recurses at most one level per expression.
        """
        if root in self.params:
            return []
        order: list[tuple[str, Span]] = []
        path: list[tuple[str, Span]] = [(root, root_span)]
        pending = [iter(self._param_uses(root))]
        on_path = {root}
        done: set[str] = set()
        while pending:
            use = next(pending[-1], None)
            if use is None:
                pending.pop()
                name, span = path.pop()
                on_path.discard(name)
                done.add(name)
                order.append((name, span))
                continue
            name, span = use
            if name in self.params or name in done:
                continue
            if name in on_path:
                self._cycle(path, name, span)
                continue
            path.append(use)
            on_path.add(name)
            pending.append(iter(self._param_uses(name)))
        return order

    def _cycle(self, path: list[tuple[str, Span]], name: str, use_span: Span) -> None:
        names = [n for n, _ in path]
        start = names.index(name)
        first = path[start]
        self.diags.append(diagnostic(
            "TNX301", "params form a cycle: " + " → ".join(names[start:] + [name]), use_span,
            label=f"`{name}` is used while computing itself",
            secondary=[Label(first[1], f"`{first[0]}` starts the cycle")],
            help="give one of these params a literal value"))
        for member in names[start:]:
            self.params[member] = FAIL

    # --------------------------------------------------------------- overrides
    def add_override(self, name: str, raw: str) -> None:
        """Register `--set name=raw`; the value is parsed as a .tnx literal."""
        file = f"--set {name}"
        text = f"--set {name}={raw}"
        self.extra_sources[file] = text
        whole = Span(file, 1, 1, 1, len(text) + 1, 0, len(text))
        symbol = self.table.get(name)
        if not name.isidentifier() or symbol is None or symbol.keyword != "param":
            params = [s.name for s in self.table.of_keyword("param")]
            if symbol is not None:
                message = f"`--set {name}`: {symbol.describe()} is not a param"
                help_text = "only `param` declarations can be set from the command line"
            else:
                message = f"`--set {name}`: no param named `{name}`"
                help_text = did_you_mean(name, params, "params") or "this pipeline has no params"
            name_span = Span(file, 1, 7, 1, 7 + len(name), 6, 6 + len(name))
            self.diags.append(diagnostic("TNX107", message, name_span,
                                         label="unknown param", help=help_text))
            return
        from tunix_dsl.grammar.parser import parse_module

        module, parse_diags = parse_module("param" + text[len("--set"):], file)
        too_large = [d for d in parse_diags if d.code == "TNX210"]
        if too_large:  # `param` and `--set` have one length: the spans fit the shown text
            self.diags.extend(too_large)
            return
        value_expr = None
        if module is not None and not parse_diags and len(module.decls) == 1:
            decl = module.decls[0]
            if isinstance(decl, ast.ParamDecl):
                value_expr = decl.value
        if isinstance(value_expr, ast.Ref) and self.table.get(value_expr.parts[0]) is None:
            value_expr = None  # a bare word: a string for string params, else an error
        if value_expr is None:
            self._override_raw[name] = (raw, whole)
            return
        self._overrides[name] = value_expr

    def _apply_override(self, name: str, declared: Any) -> Any:
        if name in self._override_raw:  # not a .tnx literal: fine only for string params
            raw, span = self._override_raw[name]
            if isinstance(declared, str):
                return raw
            self.diags.append(diagnostic(
                "TNX205", f"`--set {name}={raw}` is not a valid value", span,
                label="cannot be parsed",
                help=f"`{name}` is {_a(param_type(declared))}; write it as in a .tnx file"))
            return declared
        expr = self._overrides[name]
        value = self.value(expr)
        if value is FAIL:
            return declared
        if isinstance(declared, float) and _is_number(value):
            return float(value)
        if type(value) is type(declared):
            return value
        self.diags.append(diagnostic(
            "TNX201", f"`--set {name}` expects {_a(param_type(declared))}, found {describe(value)}",
            expr.span, label=f"declared as {describe(declared)}",
            secondary=[Label(self.table.symbols[name].decl.value.span, "declared here")],  # type: ignore[union-attr]
            help=("quote strings: --set name='\"text\"'" if isinstance(declared, str) else None)))
        return declared

    # ----------------------------------------------------------------- values
    def value(self, expr: ast.Expr, expected: str = "a value") -> Any:
        """The Python value of `expr`, or FAIL after emitting a diagnostic."""
        if isinstance(expr, ast.Number | ast.String | ast.Bool):
            return expr.value
        if isinstance(expr, ast.ListExpr):
            items = [self.value(item, expected) for item in expr.items]
            return FAIL if any(i is FAIL for i in items) else items
        if isinstance(expr, ast.MapExpr):
            entries = {e.key: self.value(e.value, expected) for e in expr.entries}
            return FAIL if FAIL in entries.values() else entries
        if isinstance(expr, ast.Ref):
            return self._ref(expr, expected)
        if isinstance(expr, ast.UnaryOp):
            operand = self.value(expr.operand, "a number")
            if operand is FAIL:
                return FAIL
            if not _is_number(operand):
                return self._fail("TNX204", f"unary `{expr.op}` needs a number, found "
                                  f"{describe(operand)}", expr.span)
            return -operand if expr.op == "-" else operand
        if isinstance(expr, ast.BinOp):
            return self._binop(expr)
        if isinstance(expr, ast.Call):
            return self._call(expr, expected)
        return self._fail("TNX201", "unsupported expression", expr.span)  # pragma: no cover

    def _fail(self, code: str, message: str, span: Span, **kw: Any) -> Any:
        self.diags.append(diagnostic(code, message, span, **kw))
        return FAIL

    def _ref(self, expr: ast.Ref, expected: str) -> Any:
        head = expr.parts[0]
        symbol = self.table.get(head)
        if symbol is None:
            params = [s.name for s in self.table.of_keyword("param")]
            return self._fail(
                "TNX104", f"undefined name `{expr.dotted}`", expr.span, label="not defined",
                help=did_you_mean(head, params or list(self.table.symbols), "params")
                or "declare it with `param NAME = value`")
        if symbol.keyword != "param":
            return self._fail(
                "TNX201", f"expected {expected}, found {symbol.describe()}", expr.span,
                label=f"this is a {symbol.keyword}",
                secondary=[Label(symbol.name_span, f"{symbol.keyword} declared here")])
        if len(expr.parts) > 1:
            return self._fail("TNX109", f"param `{head}` has no field `{expr.parts[1]}`",
                              expr.span, label="params are plain values")
        return self.param(head, expr.span)

    def _binop(self, expr: ast.BinOp) -> Any:
        # `a + b - c ...` nests to the left: fold the chain in a loop, any length.
        chain = []
        node: ast.Expr = expr
        while isinstance(node, ast.BinOp):
            chain.append(node)
            node = node.left
        result = self.value(node, "a number")
        for link in reversed(chain):
            right = self.value(link.right, "a number")
            result = FAIL if result is FAIL or right is FAIL else self._apply(link, result, right)
        return result

    def _apply(self, expr: ast.BinOp, left: Any, right: Any) -> Any:
        if expr.op == "+" and isinstance(left, str) and isinstance(right, str):
            return left + right
        if not (_is_number(left) and _is_number(right)):
            bad, side = (left, expr.left) if not _is_number(left) else (right, expr.right)
            return self._fail(
                "TNX204", f"`{expr.op}` needs numbers, found {describe(bad)}", side.span,
                label="not a number",
                help="only `+` joins two strings" if isinstance(bad, str) else None)
        if expr.op in ("/", "//", "%") and right == 0:
            return self._fail("TNX204", "division by zero", expr.right.span, label="this is 0")
        try:
            result = _BINARY[expr.op](left, right)
        except OverflowError:  # an int too large to mix with a float
            result = math.inf
        if _too_large(result):
            return self._fail("TNX210", "number too large", expr.span,
                              label="the result does not fit a 64-bit float",
                              help="numbers must stay within about ±1.8e308")
        return result

    def _call(self, expr: ast.Call, expected: str) -> Any:
        builtin = BUILTINS.get(expr.func)
        if builtin is None:
            return self._fail(
                "TNX201", f"expected {expected}, found a call to `{expr.func}(...)`", expr.span,
                label="not allowed here",
                help="numeric functions: " + ", ".join(f"`{n}`" for n in BUILTINS))
        fn, least, most = builtin
        if expr.keywords or not least <= len(expr.args) <= most:
            count = f"{least}" if least == most else f"{least} to {most}"
            return self._fail("TNX201", f"`{expr.func}` takes {count} positional argument(s)",
                              expr.span, label="wrong arguments")
        args = [self.value(a.value, "a number") for a in expr.args]
        if FAIL in args:
            return FAIL
        for arg, value in zip(expr.args, args, strict=True):
            if not _is_number(value):
                return self._fail("TNX204", f"`{expr.func}` needs numbers, found "
                                  f"{describe(value)}", arg.span, label="not a number")
        try:
            result = fn(*args)
        except (OverflowError, ValueError) as e:
            return self._fail("TNX204", f"`{expr.func}`: {e}", expr.span)
        if _too_large(result):
            return self._fail("TNX210", "number too large", expr.span,
                              label="the result does not fit a 64-bit float")
        return result
