"""What the schemas say about a place in the text: which fields a frame takes, what a value is.

Everything comes from `tunix_dsl.schemas` (the pydantic models the checker
validates against, with their field descriptions) and
`tunix_dsl.schemas.explain` (type names, defaults, ranges), so completion and
hover can never disagree with `tnx lint` or `tnx explain`.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union

from pydantic.fields import FieldInfo

from tunix_dsl.lsp.outline import Frame
from tunix_dsl.schemas import BLOCKS, CALLS, SOURCES, STAGE_KINDS, Schema
from tunix_dsl.schemas.base import RefKind
from tunix_dsl.schemas.explain import constraint_text, default_text, type_name


def call_schema(func: str, decl_keyword: str, top_level: bool) -> type[Schema] | None:
    """The schema `func(...)` builds: a source function right after `KEYWORD NAME =`, else a call."""
    if top_level and decl_keyword in SOURCES and func in SOURCES[decl_keyword]:
        return SOURCES[decl_keyword][func]
    if func in CALLS:
        return CALLS[func]
    for family in SOURCES.values():
        if func in family:
            return family[func]
    return None


def frame_schema(frame: Frame | None) -> type[Schema] | None:
    """The schema whose fields are written inside `frame` (None when there is none)."""
    if frame is None:
        return None
    if frame.type == "block":
        if frame.owner == "stage":
            kind = STAGE_KINDS.get(frame.stage_kind)
            return kind.schema if kind else None
        return BLOCKS.get(frame.owner)
    if frame.type == "call":
        return call_schema(frame.owner, frame.decl_keyword,
                           frame.parent is not None and frame.parent.type == "module")
    if frame.type == "map":  # `mesh = { data = -1 }`: the field's schema type
        info = field_info(frame_schema(frame.parent), frame.parent_field)
        schemas = expectation(info).schemas if info else ()
        return schemas[0] if len(schemas) == 1 else None
    if frame.type in ("list", "paren"):
        return frame_schema(frame.parent)
    return None


def field_info(schema: type[Schema] | None, name: str | None) -> FieldInfo | None:
    if schema is None or name is None:
        return None
    python_name = schema.source_names().get(name)
    return schema.model_fields.get(python_name) if python_name else None


def user_fields(schema: type[Schema]) -> dict[str, FieldInfo]:
    """Source spelling → field, for the fields a user may write."""
    return {source: schema.model_fields[name] for source, name in schema.source_names().items()}


@dataclass(frozen=True)
class Expectation:
    """What a field's value may be: references of a kind, choices, calls, booleans, a list."""

    ref: str | None = None  # model | dataset | tokenizer | reward
    choices: tuple[Any, ...] = ()
    schemas: tuple[type[Schema], ...] = ()
    boolean: bool = False
    is_list: bool = False


def _walk(annotation: Any, metadata: list[Any], found: dict[str, Any]) -> None:
    for item in metadata:
        if isinstance(item, RefKind):
            found["ref"] = item.kind
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        _walk(args[0], list(args[1:]), found)
    elif origin in (Union, types.UnionType):
        for arg in args:
            if arg is not type(None):
                _walk(arg, [], found)
    elif origin is Literal:
        found["choices"] += list(args)
    elif origin is list:
        found["is_list"] = True
        _walk(args[0], [], found)
    elif annotation is bool:
        found["boolean"] = True
    elif isinstance(annotation, type) and issubclass(annotation, Schema):
        found["schemas"].append(annotation)


def expectation(info: FieldInfo) -> Expectation:
    found: dict[str, Any] = {"ref": None, "choices": [], "schemas": [], "boolean": False,
                             "is_list": False}
    _walk(info.annotation, list(info.metadata), found)
    return Expectation(found["ref"], tuple(found["choices"]), tuple(found["schemas"]),
                       found["boolean"], found["is_list"])


def field_summary(name: str, info: FieldInfo) -> tuple[str, str]:
    """(`type (range), default …`, description) of one field, as `tnx explain` words them."""
    typ = type_name(info.annotation, info.metadata)
    bounds = constraint_text(info)
    default = default_text(info)
    when = "required" if default == "required" else f"default {default}"
    return f"{typ}{f' ({bounds})' if bounds else ''}, {when}", info.description or ""


def schema_doc(schema: type[Schema]) -> str:
    return " ".join((schema.__doc__ or "").split())
