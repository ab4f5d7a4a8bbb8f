"""The tools a dataset row is offered: all the stage's declared tools, or the row's `tools`.

A row may carry a `tools` column: a list whose entries are tool names — a `tool`
declaration's name (`calc`) or its function's (`calculate`, what the model calls) — or JSON
schemas (`{"type": "function", "function": {"name": ...}}`, or the inner `{"name": ...}`)
named by a declared tool's function, rendered as the row gives them. That row's conversation is rendered with
those schemas alone (the chat template's `tools`), and in an agent stage its episodes may
call those tools alone: a call to another declared tool gets an error observation, as an
unknown tool does. A row without the column (or with null) is offered every declared tool.

jax-free: lint (`tunix_dsl.rules.agent_checks`, TNX527) checks the rows it can read cheaply
with `unknown_tool_names`; the runtime resolves every row with `DeclaredTools`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

TOOLS_COLUMN = "tools"

Schema = Mapping[str, Any]


class RowToolsError(ValueError):
    """A row's `tools` column that names an undeclared tool or is not a list; says which."""


def entry_name(entry: Any) -> str | None:
    """The tool name of one `tools` entry: the string, or a schema's function name; None for
    an entry of neither shape."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        inner = entry.get("function", entry)
        name = inner.get("name") if isinstance(inner, Mapping) else None
        return name if isinstance(name, str) else None
    return None


def unknown_tool_names(value: Any, declared: set[str], functions: set[str]) -> list[str]:
    """What is wrong with a row's `tools` value, given the `declared` tool names and their
    `functions`: one line per problem, empty when every entry names a declared tool (a schema
    by its function's name, the one the model calls)."""
    if value is None:
        return []
    if not isinstance(value, list):
        return [f"`{TOOLS_COLUMN}` must be a list of tool names or schemas, got "
                f"{type(value).__name__}"]
    problems = []
    for n, entry in enumerate(value):
        name = entry_name(entry)
        if name is None:
            problems.append(f"`{TOOLS_COLUMN}` entry {n} is neither a tool name nor a JSON "
                            "schema with a function name")
        elif name not in (functions if isinstance(entry, Mapping) else declared | functions):
            problems.append(f"`{TOOLS_COLUMN}` names `{name}`, which is not a declared tool")
    return problems


@dataclass(frozen=True)
class DeclaredTools:
    """A stage's declared tools: their JSON schemas (declaration order) and the names a row
    may call each by."""

    schemas: tuple[Schema, ...]
    declared: tuple[str, ...]  # the `tool` declaration of each schema

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(str(entry_name(s)) for s in self.schemas)

    def _index(self) -> dict[str, int]:
        return {**{f: i for i, f in enumerate(self.functions)},
                **{d: i for i, d in enumerate(self.declared)}}

    def for_row(self, row: Mapping[str, Any], where: Callable[[], str]) -> tuple[Schema, ...]:
        """The schemas offered to `row`; `where()` names the row in an error."""
        value = row.get(TOOLS_COLUMN)
        if value is None:
            return self.schemas
        index = self._index()
        problems = unknown_tool_names(value, set(self.declared), set(self.functions))
        if problems:
            raise RowToolsError(f"{where()}: {problems[0]} (declared: "
                                f"{', '.join(self.declared)}); list declared tools by name, "
                                "or declare the tool")
        return tuple(entry if isinstance(entry, Mapping) else self.schemas[index[entry]]
                     for entry in value)

    def per_row(self, rows: Sequence[Mapping[str, Any]], where: Callable[[int], str]
                ) -> list[tuple[Schema, ...]] | None:
        """The offered schemas of every row; None when no row has its own `tools`."""
        if not any(row.get(TOOLS_COLUMN) is not None for row in rows):
            return None
        return [self.for_row(row, partial(where, i)) for i, row in enumerate(rows)]


def offered_functions(schemas: Sequence[Schema]) -> frozenset[str]:
    """The function names a model may call, given the schemas it was offered."""
    return frozenset(str(entry_name(s)) for s in schemas)
