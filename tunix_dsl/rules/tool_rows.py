"""TNX527: a dataset row's own `tools` column names a tool the stage does not offer;
TNX404: rows carry a `tools` column that their stage ignores (it offers no tools).

A row may narrow the tools it is offered (`tunix_dsl/data/row_tools.py`): an sft stage's
`tools`, or the tools of an agent stage's `tools([...])` environment. Lint reads the first
rows of a jsonl dataset (cheap, like TNX308's peek); rows past them, and other sources, are
checked when the run tokenises them, with an error naming the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunix_dsl.check.ir import Pipeline, Stage
from tunix_dsl.data.row_tools import TOOLS_COLUMN, row_tools_problems
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.models.info import exists
from tunix_dsl.rules.codes import _PRELUDE, without_sums
from tunix_dsl.rules.registry import diagnostic, rule
from tunix_dsl.schemas.agents import PythonTool, ToolsEnvironment
from tunix_dsl.schemas.datasets import JsonlSource

PEEKED_ROWS = 200  # rows lint reads of each dataset; the run checks them all


def _example(tools: str | None) -> str:
    extra = ('dataset talks = jsonl("examples/data/tool_talks.jsonl")\n'
             'tool calc = python("examples/data/talk_tools.py:calculate")\n'
             'tool units = python("examples/data/talk_tools.py:convert")\n')
    offered = f"  tools = {tools}\n" if tools is not None else ""
    return without_sums(_PRELUDE + extra + f"\nstage tune: sft {{\n  model = tiny\n  data = talks\n"
            f"{offered}  steps = 10\n}}\n\nexport tune.model to \"out/tune\" as \"hf\"\n")


def _offered(p: Pipeline, stage: Stage) -> tuple[str, ...]:
    """The tool declarations a stage offers its rows: an sft stage's `tools`, or its
    environment's."""
    names = getattr(stage.config, "tools", None)
    if names:
        return tuple(names)
    env = p.environments.get(getattr(stage.config, "environment", None) or "")
    if env is not None and isinstance(env.spec, ToolsEnvironment):
        return tuple(env.spec.tools)
    return ()


def _jsonl_rows(p: Pipeline, stage: Stage) -> tuple[Any, Path] | None:
    """The stage's `data` declaration and its jsonl file, when it is one that exists."""
    decl = p.datasets.get(getattr(stage.config, "data", None) or "")
    if decl is None or not isinstance(decl.spec, JsonlSource):
        return None
    path = p.resolve_path(decl.spec.path)
    return (decl, Path(path)) if exists(path) else None  # a missing file: TNX403


def _peek(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, the row's `tools` value) of the first rows that carry one; unreadable
    lines are skipped (TNX308 reports them)."""
    try:
        with path.open(encoding="utf-8") as lines:
            for lineno, line in enumerate(lines, 1):
                if lineno > PEEKED_ROWS:
                    return
                try:
                    row = json.loads(line) if line.strip() else None
                except ValueError:
                    continue
                if isinstance(row, dict) and row.get(TOOLS_COLUMN) is not None:
                    yield lineno, row[TOOLS_COLUMN]
    except (OSError, UnicodeDecodeError):
        return


@rule("TNX527", "row-tool-not-declared", Severity.ERROR,
      "A dataset row's `tools` column names a function that is not one of the stage's tools "
      "(an sft stage's `tools`, or its environment's): add the tool, or drop it from the row. "
      "Lint reads the first rows of jsonl files; the run checks every row.",
      bad=_example("[calc]"), good=_example("[calc, units]"))
def row_tool_not_declared(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        names = _offered(p, stage)
        found = _jsonl_rows(p, stage)
        if not names or found is None:
            continue
        decl, path = found
        functions = [p.tools[n].spec.name for n in names
                     if n in p.tools and isinstance(p.tools[n].spec, PythonTool)]
        for lineno, value in _peek(path):
            problems = row_tools_problems(value, functions)
            if problems:
                yield diagnostic(
                    "TNX527", f"{decl.spec.path}:{lineno}: {problems[0]}", stage.span_of("data"),
                    label=f"offers {', '.join(f'`{f}`' for f in functions)}",
                    secondary=[Label(decl.field_spans.get(("path",), decl.name_span),
                                     "the rows are read from here")],
                    help="declare the tool and add it to the stage's `tools` (or the "
                    "environment's), or remove it from the row; rows name a tool by its function")
                break  # one row per stage; the run names every bad one


@rule("TNX404", "row-tools-ignored", Severity.WARNING,
      "The stage's rows carry a `tools` column, but the stage offers no tools (an sft stage "
      "without `tools`, or an agent stage whose environment is not `tools([...])`), so the "
      "column is ignored: the prompts list no tools. Declare the stage's tools, or drop the column.",
      bad=_example(None), good=_example("[calc, units]"))
def row_tools_ignored(p: Pipeline) -> Iterator[Diagnostic]:
    for stage in p.stages:
        fields = type(stage.config).model_fields
        if ("tools" not in fields and "environment" not in fields) or _offered(p, stage):
            continue  # a kind that never renders tools, or one that offers some (TNX527)
        found = _jsonl_rows(p, stage)
        if found is None:
            continue
        decl, path = found
        for lineno, _value in _peek(path):
            yield diagnostic(
                "TNX404", f"{decl.spec.path}:{lineno}: this row lists its own `tools`, but stage "
                f"`{stage.name}` offers none, so the column is ignored", stage.span_of("data"),
                label="rows with a `tools` column",
                secondary=[Label(decl.field_spans.get(("path",), decl.name_span),
                                 "the rows are read from here")],
                help="add `tools = [...]` to an sft stage (an agent stage: `environment = "
                "tools([...])`), or drop the column from the rows")
            break  # one row is enough to say it
