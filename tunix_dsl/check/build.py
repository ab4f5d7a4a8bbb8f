"""Type-directed building: AST blocks and calls → validated schema objects.

The builder walks a block (`stage x: sft { ... }`), a call (`adamw(...)`) or
a map (`{ data = -1 }`) against its schema: unknown and duplicate fields,
missing required ones, references checked against the kind each field
expects, nested calls built recursively. Pydantic then checks types, ranges
and choices; each of its errors is mapped back to the span of the value that
caused it. Every reference met is recorded as a `Use` for the dataflow graph.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union

from pydantic import ValidationError

from tunix_dsl.check.evaluate import FAIL, Evaluator, describe
from tunix_dsl.check.resolve import SymbolTable, did_you_mean
from tunix_dsl.grammar import ast
from tunix_dsl.grammar.diagnostics import Diagnostic, Label
from tunix_dsl.grammar.spans import Span
from tunix_dsl.rules.registry import diagnostic
from tunix_dsl.schemas import STAGE_KINDS, ModelRef, Schema
from tunix_dsl.schemas.base import Family, Problem
from tunix_dsl.schemas.explain import literal_text, ref_kind, type_name, with_article

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Use:
    """A reference from the declaration being built to another declaration."""

    target: str  # symbol name
    role: str  # the field holding the reference (`policy`, `data`, `tokenizer`)
    span: Span
    output: str | None = None  # `model` / `adapter` for stage outputs


@dataclass(frozen=True)
class Entry:
    name: str
    name_span: Span | None
    value: ast.Expr


def keyword_entries(call: ast.Call) -> list[Entry]:
    """The keyword arguments of a call, as entries of the map its schema validates."""
    return [Entry(a.name, a.name_span, a.value) for a in call.args if a.name is not None]


@dataclass
class Built:
    """A validated object with the span of each field's value (`spans[("lr",)]`)."""

    value: Any
    spans: dict[Loc, Span]


def entries_of(items: tuple[ast.Field, ...] | tuple[ast.MapEntry, ...]) -> list[Entry]:
    out = []
    for item in items:
        if isinstance(item, ast.Field):
            out.append(Entry(item.name, item.name_span, item.value))
        else:
            out.append(Entry(item.key, item.key_span, item.value))
    return out


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """Remove Annotated and Optional wrappers: (core type, Annotated metadata)."""
    metadata: list[Any] = []
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation, *extra = typing.get_args(annotation)
            metadata += extra
        elif origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return annotation, metadata
            annotation = args[0]
        else:
            return annotation, metadata


def _members(annotation: Any) -> list[Any]:
    core, _ = _strip(annotation)
    if typing.get_origin(core) in (Union, types.UnionType):
        return [_strip(a)[0] for a in typing.get_args(core) if a is not type(None)]
    return [core]


def _schemas_in(annotation: Any) -> list[type[Schema]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, Schema)]


def _admits_int_only(annotation: Any) -> bool:
    members = _members(annotation)
    return int in members and float not in members


class Builder:
    def __init__(self, table: SymbolTable, evaluator: Evaluator, diags: list[Diagnostic]):
        self.table = table
        self.ev = evaluator
        self.diags = diags
        self.uses: list[Use] = []

    def _error(self, code: str, message: str, span: Span, **kw: Any) -> Any:
        self.diags.append(diagnostic(code, message, span, **kw))
        return FAIL

    # ------------------------------------------------------------------ objects
    def build(self, schema: type[Schema], entries: list[Entry], owner: Span, what: str,
              positional: tuple[ast.Arg, ...] = (), explain: str = "") -> Built | Any:
        """Validate `entries` (+ positional call arguments) into `schema`, or FAIL."""
        names = schema.source_names()
        entries = list(entries)
        for i, arg in enumerate(positional):
            if i >= len(schema.positional):
                limit = len(schema.positional)
                self._error("TNX108", f"{what} takes {limit or 'no'} positional argument"
                            f"{'' if limit == 1 else 's'}", arg.span, label="surplus argument",
                            help="name the argument: `field = value`")
                continue
            entries.insert(i, Entry(schema.positional[i], None, arg.value))
        values: dict[str, Any] = {}
        extras: dict[str, Any] = {}
        spans: dict[Loc, Span] = {}
        seen: dict[str, Span] = {}
        failed = False
        for entry in entries:
            where = entry.name_span or entry.value.span
            if entry.name in seen:
                self._error("TNX108", f"`{entry.name}` is given twice in {what}", where,
                            label="second value", secondary=[Label(seen[entry.name], "first value")],
                            help="remove one of them")
                failed = True
                continue
            seen[entry.name] = where
            field = names.get(entry.name)
            if field is None:
                if schema.extras_field:
                    value = self.ev.value(entry.value)
                    extras[entry.name] = value
                    spans[(schema.extras_field, entry.name)] = where
                    spans[(schema.extras_field, entry.name, "value")] = entry.value.span
                    failed |= value is FAIL
                    continue
                self._unknown_field(schema, entry, what, names, explain or schema.call_name)
                failed = True
                continue
            info = schema.model_fields[field]
            spans[(field,)] = entry.value.span
            value = self.convert(info.annotation, entry.value, (field,), entry.name, spans,
                                 info.metadata)
            if value is FAIL:
                failed = True
                continue
            if isinstance(value, float) and value.is_integer() and _admits_int_only(info.annotation):
                value = int(value)  # `1500 * scale` with scale = 1.0 is the integer 1500
            values[field] = value
        for source, field in names.items():
            info = schema.model_fields[field]
            if info.is_required() and source not in seen:
                expected = type_name(info.annotation, info.metadata)
                self._error("TNX102", f"missing required field `{source}` in {what}", owner,
                            label=f"`{source}` is not set",
                            help=f"add `{source} = ...` ({expected}: {info.description})")
                failed = True
        if failed:
            self._partial_errors(schema, values, spans, owner, what)
            return FAIL
        if extras:
            values[schema.extras_field] = extras
        try:
            return Built(schema.model_validate(values), spans)
        except ValidationError as exc:
            self._map_errors(schema, exc, values, spans, owner, what)
            return FAIL

    def _unknown_field(self, schema: type[Schema], entry: Entry, what: str,
                       names: dict[str, str], explain: str) -> None:
        help_text = did_you_mean(entry.name, names, "fields")
        if help_text is None or not help_text.startswith("did"):
            others = [k for k, info in STAGE_KINDS.items()
                      if entry.name in info.schema.source_names() and info.schema is not schema]
            if others and issubclass(schema, tuple(k.schema for k in STAGE_KINDS.values())):
                help_text = f"`{entry.name}` is a field of {', '.join(others)}"
        if help_text is None or not help_text.startswith("did"):
            nested = self._nested_owner(schema, entry.name)
            if nested is not None:
                field, call = nested
                help_text = f"`{entry.name}` belongs inside `{field} = {call}({entry.name} = ...)`"
        self._error("TNX101", f"unknown field `{entry.name}` in {what}",
                    entry.name_span or entry.value.span, label="unknown field",
                    help=help_text or (f"`tnx explain {explain}` lists the fields" if explain
                                       else "fields: " + ", ".join(f"`{n}`" for n in names)))

    @staticmethod
    def _nested_owner(schema: type[Schema], name: str) -> tuple[str, str] | None:
        """(field, function) when `name` is a field of a call nested in `schema` (`warmup`)."""
        for field, source in ((f, s) for s, f in schema.source_names().items()):
            info = schema.model_fields[field]
            family = next((m for m in info.metadata if isinstance(m, Family)), None)
            members = list(family.members().values()) if family else _schemas_in(info.annotation)
            for nested in members:
                if nested.call_name and name in nested.source_names():
                    return source, nested.call_name
        return None

    # ------------------------------------------------------------------- values
    def convert(self, annotation: Any, expr: ast.Expr, loc: Loc, role: str,
                spans: dict[Loc, Span], metadata: list[Any] | None = None) -> Any:
        """The value of `expr` for a field typed `annotation` (+ pydantic metadata), or FAIL."""
        core, inner = _strip(annotation)
        kind = ref_kind(annotation, metadata or [])
        family = next((m for m in [*(metadata or []), *inner] if isinstance(m, Family)), None)
        if family is not None:  # an open family (optimizers): plugins' members included
            return self._nested(list(family.members().values()), annotation, expr, role, loc,
                                spans, family.name)
        if typing.get_origin(core) is list:
            (item_type,) = typing.get_args(core)
            if isinstance(expr, ast.ListExpr):
                items = []
                for i, item in enumerate(expr.items):
                    spans[(*loc, i)] = item.span
                    items.append(self.convert(item_type, item, (*loc, i), role, spans))
                return FAIL if any(i is FAIL for i in items) else items
            if ref_kind(item_type) is not None:
                shown = expr.dotted if isinstance(expr, ast.Ref) else None
                return self._error(
                    "TNX201", f"`{role}` expects a list of {ref_kind(item_type)}", expr.span,
                    label="not a list", help=f"write `[{shown}]`" if shown else None)
            return self.ev.value(expr, with_article(type_name(annotation)))
        if kind is not None:
            return self.reference(kind, expr, role)
        schemas = _schemas_in(annotation)
        if schemas:
            return self._nested(schemas, annotation, expr, role, loc, spans)
        return self.ev.value(expr, with_article(type_name(annotation)))

    def _nested(self, schemas: list[type[Schema]], annotation: Any, expr: ast.Expr,
                role: str, loc: Loc = (), spans: dict[Loc, Span] | None = None,
                family_name: str = "") -> Any:
        family = {s.call_name: s for s in schemas}
        shown = (" or ".join(f"{n}(...)" for n in family) if family_name
                 else with_article(type_name(annotation)))
        if isinstance(expr, ast.Call):
            schema = family.get(expr.func)
            if schema is None:
                from tunix_dsl.schemas import CALLS, SOURCES

                known = set(CALLS) | {f for fam in SOURCES.values() for f in fam}
                if expr.func in known:
                    return self._error(
                        "TNX201", f"`{role}` expects {shown}, "
                        f"found `{expr.func}(...)`", expr.func_span, label="wrong kind of value")
                return self._error(
                    "TNX105", f"unknown function `{expr.func}` for `{role}`", expr.func_span,
                    label="unknown function", help=did_you_mean(expr.func, family))
            built = self.build(schema, keyword_entries(expr),
                               expr.span, f"`{expr.func}(...)`", expr.positional)
            if built is not FAIL and spans is not None:  # `optimizer.warmup` for cross-field checks
                spans.update({(*loc, *inner): span for inner, span in built.spans.items()})
            return FAIL if built is FAIL else built.value
        if isinstance(expr, ast.MapExpr) and len(schemas) == 1 and not family_name:
            built = self.build(schemas[0], entries_of(expr.entries), expr.span, f"`{role}`")
            if built is not FAIL and spans is not None:  # `mesh.dcn` for the target checks
                spans.update({(*loc, *inner): span for inner, span in built.spans.items()})
            return FAIL if built is FAIL else built.value
        value = self.ev.value(expr, shown)
        if value is FAIL:
            return FAIL
        example = f"{schemas[0].call_name}(...)" if schemas[0].call_name else "{ ... }"
        return self._error("TNX201", f"`{role}` expects {shown}, "
                           f"found {describe(value)}", expr.span, label="wrong type",
                           help=f"write `{role} = {example}`")

    def reference(self, kind: str, expr: ast.Expr, role: str) -> Any:
        """A reference to a declaration of `kind`: a ModelRef for models, else the name."""
        if not isinstance(expr, ast.Ref):
            value = self.ev.value(expr, f"a {kind}")
            if value is FAIL:
                return FAIL
            named = self.table.get(value) if isinstance(value, str) else None
            return self._error(
                "TNX201", f"`{role}` expects a {kind} reference, found {describe(value)}",
                expr.span, label="not a reference",
                help=f"write the name without quotes: `{role} = {value}`" if named else
                f"name a `{kind}` declaration")
        head, *rest = expr.parts
        symbol = self.table.get(head)
        if symbol is None:
            same = [s.name for s in self.table.symbols.values()
                    if s.keyword == kind or (kind == "model" and s.keyword == "stage")]
            return self._error(
                "TNX104", f"undefined {kind} `{expr.dotted}`", expr.span, label="not defined",
                help=did_you_mean(head, same, f"{kind}s") or f"declare it: `{kind} {head} = ...`")
        output = rest[0] if rest and symbol.keyword == "stage" else None
        self.uses.append(Use(head, role, expr.span, output))
        if kind == "model" and symbol.keyword == "stage":
            if not rest:
                return self._error(
                    "TNX106", f"`{role}` expects a model, found stage `{head}`", expr.span,
                    label="a stage, not a model", help=f"use its output: `{head}.model`")
            if len(rest) > 1 or rest[0] not in ("model", "adapter"):
                return self._error(
                    "TNX109", f"stage `{head}` has no output `{'.'.join(rest)}`", expr.span,
                    label="unknown output",
                    help=did_you_mean(rest[0], ["model", "adapter"], "outputs"))
            return ModelRef(kind="stage", name=head, output="model" if rest[0] == "model" else "adapter")
        if symbol.keyword != kind:
            help_text = None
            if symbol.keyword == "stage":
                help_text = "stages produce models (`.model`), not datasets or rewards"
            return self._error(
                "TNX106", f"`{role}` expects a {kind}, found {symbol.describe()}", expr.span,
                label=f"this is a {symbol.keyword}", help=help_text,
                secondary=[Label(symbol.name_span, f"{symbol.keyword} declared here")])
        if rest:
            return self._error(
                "TNX109", f"{symbol.describe()} has no field `{rest[0]}`", expr.span,
                label="only stages have outputs", help=f"write `{head}`")
        return ModelRef(kind="decl", name=head) if kind == "model" else head

    # ------------------------------------------------------------------- errors
    def _map_errors(self, schema: type[Schema], exc: ValidationError, values: dict[str, Any],
                    spans: dict[Loc, Span], owner: Span, what: str) -> None:
        sources = {field: source for source, field in schema.source_names().items()}
        bad: set[str] = set()
        for err in exc.errors(include_url=False):
            loc: Loc = tuple(err["loc"])
            if not loc:  # a cross-field problem: point each at its own field
                instance = schema.model_construct(**values)
                for problem in instance.problems():
                    self._report_problem(problem, spans, owner, what)
                continue
            span = spans.get(loc[:2]) or spans.get(loc[:1]) or owner
            name = sources.get(str(loc[0]), str(loc[0]))
            info = schema.model_fields.get(str(loc[0]))
            expected = type_name(info.annotation, info.metadata) if info else "a value"
            self.diags.append(_pydantic_diagnostic(err, name, expected, span))
            bad.add(str(loc[0]))
        if bad:  # field errors stop pydantic before the cross-field checks
            self._problems_among_valid(schema, values, bad, spans, owner, what)

    def _partial_errors(self, schema: type[Schema], values: dict[str, Any],
                        spans: dict[Loc, Span], owner: Span, what: str) -> None:
        """Report range/type errors of the fields that did convert, so one run shows them all."""
        bad: set[str] = set()
        try:
            schema.model_validate(values)
        except ValidationError as exc:
            sources = {field: source for source, field in schema.source_names().items()}
            for err in exc.errors(include_url=False):
                loc: Loc = tuple(err["loc"])
                if not loc or err["type"] == "missing" or loc[0] not in values:
                    continue
                bad.add(str(loc[0]))
                info = schema.model_fields[str(loc[0])]
                span = spans.get(loc[:2]) or spans.get(loc[:1]) or owner
                self.diags.append(_pydantic_diagnostic(
                    err, sources.get(str(loc[0]), str(loc[0])),
                    type_name(info.annotation, info.metadata), span))
        self._problems_among_valid(schema, values, bad, spans, owner, what)

    def _problems_among_valid(self, schema: type[Schema], values: dict[str, Any],
                              bad: set[str], spans: dict[Loc, Span], owner: Span,
                              what: str) -> None:
        """Cross-field problems between the fields that are fine, when others are not.

        Pydantic runs `problems()` only on a fully valid object, so a wrong type in
        one field would hide `tensor = 0` in the same map. Here it runs on the valid
        fields plus defaults; a problem that involves a broken field (its path, or
        its name in backticks in the message, as every problem names its fields)
        is left for the next run, as the default stood in for that field's value.
        """
        valid = {k: v for k, v in values.items() if k not in bad}
        sources = {field: source for source, field in schema.source_names().items()}
        broken = [f"`{sources.get(field, field)}`" for field in bad]
        try:
            problems = schema.model_construct(**valid).problems()
        except Exception:  # noqa: BLE001 - the check needs a field that failed: skip it
            return
        for problem in problems:
            if problem.path.split(".")[0] in valid and not any(
                    name in problem.message for name in broken):
                self._report_problem(problem, spans, owner, what)

    def _report_problem(self, problem: Problem, spans: dict[Loc, Span], owner: Span,
                        what: str) -> None:
        path = tuple(problem.path.split("."))
        span = spans.get(path) or spans.get(path[:1]) or owner
        self.diags.append(diagnostic(problem.code, problem.message, span,
                                     label=problem.label or f"in {what}", help=problem.help))


_TYPE_ERRORS = {"int_type", "float_type", "string_type", "bool_type", "list_type", "dict_type",
                "model_type", "int_from_float", "is_instance_of", "model_attributes_type"}
_RANGE = {"greater_than": ">", "greater_than_equal": "≥", "less_than": "<",
          "less_than_equal": "≤"}


def _pydantic_diagnostic(err: Any, name: str, expected: str, span: Span) -> Diagnostic:
    kind: str = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind in _TYPE_ERRORS:
        help_text = None
        if isinstance(value, float) and "integer" in expected:
            help_text = "round it: `round(...)`"
        return diagnostic("TNX201", f"`{name}` expects {with_article(expected)}, found "
                          f"{describe(value)}", span, label=f"expected {with_article(expected)}",
                          help=help_text)
    if kind in _RANGE:
        symbol, bound = _RANGE[kind], next(iter(ctx.values()))
        code = "TNX207" if name in ("steps", "batch_size") else "TNX202"
        return diagnostic(code, f"`{name}` must be {symbol} {literal_text(bound)}, found "
                          f"{literal_text(value)}", span, label="out of range")
    if kind == "literal_error":
        choices = [c.strip().strip("'\"") for c in str(ctx.get("expected", "")).split(" or ")]
        choices = [c for part in choices for c in part.split(", ")]
        choices = [c.strip().strip("'\"") for c in choices]
        shown = literal_text(value)
        return diagnostic("TNX203", f"`{name}` must be {with_article(expected)}, found {shown}", span,
                          label="not an allowed value",
                          help=did_you_mean(str(value), choices, "choices"))
    if kind == "finite_number":
        # Unreachable from source: the evaluator reports every overflow to inf as TNX210.
        return diagnostic("TNX210", f"`{name}` must be a finite number, found {describe(value)}",
                          span, label="not finite", help="write a finite value such as `1e-3`")
    if kind in ("too_short", "string_too_short"):
        return diagnostic("TNX202", f"`{name}` must not be empty", span, label="empty")
    if kind in ("too_long", "string_too_long"):
        return diagnostic("TNX202", f"`{name}` is too long", span, label="too long")
    message = str(ctx.get("error", err.get("msg", "invalid value")))
    return diagnostic("TNX202", f"invalid `{name}`: {message}", span, label="invalid value")
