"""The tools a dataset row is offered: all the stage's tools, or the row's own `tools` column.

A row may carry a `tools` column: a list whose entries are tool names — the function name
the model calls (`calculate`), as tool-use datasets spell them — or JSON schemas
(`{"type": "function", "function": {"name": ...}}`, or the inner `{"name": ...}`) named by
one, rendered as the row gives them. Every name must be one of the stage's tools (an sft
stage's `tools`, or its environment's). The row's conversation is rendered with those
schemas alone (the chat template's `tools`, `runtime/data.py`), and in an agent stage its
episodes may call those alone: a call to another tool gets an error observation, as an
unknown tool does (`runtime/agent_env.py`). A row without the column (or with null) is
offered every tool; `[]` offers none.

jax-free: lint (TNX527, `tunix_dsl/rules/tool_rows.py`) checks the rows it can read cheaply
with `row_tools_problems`; the run checks every row before it trains (`check_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

TOOLS_COLUMN = "tools"

Schema = Mapping[str, Any]


class RowToolsError(ValueError):
    """A row's `tools` column that names a tool the stage does not offer, or is not a list."""


def entry_name(entry: Any) -> str | None:
    """The tool name of one `tools` entry (or of a schema): the string, or the schema's
    function name; None for an entry of neither shape."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, Mapping):
        inner = entry.get("function", entry)
        name = inner.get("name") if isinstance(inner, Mapping) else None
        return name if isinstance(name, str) else None
    return None


def row_tools_problems(value: Any, functions: Collection[str]) -> list[str]:
    """What is wrong with a row's `tools` value, given the stage's tool `functions`: one line
    per problem, empty when every entry names one of them."""
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
        elif name not in functions:
            problems.append(f"`{TOOLS_COLUMN}` names `{name}`, which is not one of the "
                            f"stage's tools ({', '.join(functions) or 'none'})")
    return problems


def offered(row: Mapping[str, Any], schemas: Sequence[Schema]) -> Sequence[Schema]:
    """The schemas `row` is offered out of the stage's `schemas` (all of them without a
    `tools` column); raises RowToolsError for a name not among them."""
    value = row.get(TOOLS_COLUMN)
    if value is None:
        return schemas
    by_name = {entry_name(s): s for s in schemas}
    problems = row_tools_problems(value, [str(n) for n in by_name])
    if problems:
        raise RowToolsError(f"{problems[0]}; name the functions the stage offers, or add the "
                            "tool to the stage")
    return tuple(entry if isinstance(entry, Mapping) else by_name[entry] for entry in value)


def offered_functions(schemas: Sequence[Schema]) -> frozenset[str]:
    """The function names a model may call, given the schemas it was offered."""
    return frozenset(str(entry_name(s)) for s in schemas)


def check_rows(rows: Sequence[Mapping[str, Any]], schemas: Sequence[Schema],
               where: Callable[[int], str]) -> None:
    """Every row's `tools` against the stage's `schemas`; the first bad row raises,
    named by `where(index)` (its file and line)."""
    for i, row in enumerate(rows):
        try:
            offered(row, schemas)
        except RowToolsError as err:
            raise RowToolsError(f"{where(i)}: {err}") from None
