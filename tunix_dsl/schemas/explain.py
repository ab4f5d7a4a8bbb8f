"""Human-readable type names and `tnx explain` text for every schema."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tunix_dsl.schemas.base import Family, RefKind, Schema


def ref_kind(annotation: Any, metadata: list[Any] = ()) -> str | None:  # type: ignore[assignment]
    """The declaration kind a (possibly Optional) reference field expects, or None."""
    for item in metadata:
        if isinstance(item, RefKind):
            return item.kind
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        return ref_kind(base, extra)
    if origin in (Union, types.UnionType):
        kinds = {ref_kind(a) for a in typing.get_args(annotation) if a is not type(None)}
        kinds.discard(None)
        return kinds.pop() if len(kinds) == 1 else None
    return None


def type_name(annotation: Any, metadata: list[Any] = ()) -> str:  # type: ignore[assignment]
    """`int` → "integer", `list[RewardInput]` → "list of reward", unions joined by "or"."""
    kind = ref_kind(annotation, metadata)
    if kind is not None and typing.get_origin(annotation) is not list:
        return kind
    family = next((m for m in metadata if isinstance(m, Family)), None)
    if family is not None:  # an open family: whatever is registered now (plugins included)
        return " or ".join(f"{name}(...)" for name in family.members())
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return type_name(args[0], list(args[1:]))
    if origin in (Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin is list:
        return f"list of {type_name(args[0])}"
    if origin is dict:
        return "map"
    if isinstance(annotation, type) and issubclass(annotation, Schema):
        return f"{annotation.call_name}(...)" if annotation.call_name else "{ ... }"
    names = {int: "integer", float: "number", str: "string", bool: "bool"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def default_text(info: FieldInfo) -> str:
    """The default as it would be written in a .tnx file; "required" when there is none."""
    if info.is_required():
        return "required"
    value = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
    return literal_text(value)


def literal_text(value: Any) -> str:
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(literal_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {literal_text(v)}" for k, v in value.items()) + "}"
    if isinstance(value, Schema):
        name = type(value).call_name
        return f"{name}()" if name else "{ }"
    if isinstance(value, BaseModel):
        return str(value)
    return repr(value)


def constraint_text(info: FieldInfo) -> str:
    """Range constraints as `> 0`, `0 ≤ x < 1`."""
    bounds = {}
    for item in info.metadata:
        for attr, symbol in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(item, attr, None)
            if value is not None:
                bounds[symbol] = value
        if getattr(item, "min_length", None):
            bounds["len ≥"] = item.min_length
    return ", ".join(f"{s} {v}" for s, v in bounds.items())


def schema_fields(schema: type[Schema]) -> list[tuple[str, ...]]:
    """(source name, type, default, range, description) per user-visible field."""
    rows = []
    own = set(schema.__annotations__)
    for source, name in schema.source_names().items():
        info = schema.model_fields[name]
        rows.append((source, type_name(info.annotation, info.metadata), default_text(info),
                     constraint_text(info), info.description or "", name in own))
    # Required first, then the kind's own fields, then the shared ones.
    rows.sort(key=lambda r: (r[2] != "required", not r[5]))
    return [r[:5] for r in rows]


def explain_schema(title: str, schema: type[Schema], extra: str = "") -> str:
    doc = " ".join((schema.__doc__ or "").split())
    lines = [title, "", doc] if doc else [title]
    rows = schema_fields(schema)
    if schema.positional:
        lines += ["", "positional: " + ", ".join(schema.positional)]
    if rows:
        width = max(len(r[0]) for r in rows)
        lines += ["", "fields:"]
        for source, typ, default, bounds, description in rows:
            spec = typ + (f" ({bounds})" if bounds else "")
            when = "required" if default == "required" else f"default {default}"
            lines.append(f"  {source:<{width}}  {spec}, {when}")
            lines.append(f"  {'':<{width}}  {description}")
    if extra:
        lines += ["", extra]
    return "\n".join(lines) + "\n"


def with_article(expected: str) -> str:
    """"integer" → "an integer", choices → "one of ...": for "expects X" messages."""
    if " | " in expected:
        return f"one of {expected}"
    if expected.endswith("(...)") or expected.startswith(("{", "one of")):
        return expected
    return ("an " if expected[:1] in "aeiou" else "a ") + expected
