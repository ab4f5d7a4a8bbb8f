"""A tool's JSON schema from its source, read with `ast` — the user's file is never imported.

    def calculate(expression: str, digits: int = 6) -> str:
        '''Evaluate an arithmetic expression.

        Args:
            expression: digits, + - * / and parentheses
            digits: decimal places of the result
        '''

becomes the OpenAI/Hermes function schema the chat template lists:

    {"type": "function", "function": {"name": "calculate",
     "description": "Evaluate an arithmetic expression.",
     "parameters": {"type": "object",
                    "properties": {"expression": {"type": "string", "description": "..."},
                                   "digits": {"type": "integer", "description": "...",
                                              "default": 6}},
                    "required": ["expression"]}}}

Parameter descriptions come from a Google-style `Args:` section or reST `:param x:` lines.
The same reading serves lint (does the function exist, can it be described) and the
runtime (the schema shown to the model), so the two cannot disagree.
"""

from __future__ import annotations

import ast
import difflib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Annotation name → JSON schema type (subscripted forms use their outer name: list[int]).
_JSON_TYPES = {
    "str": "string", "int": "integer", "float": "number", "bool": "boolean",
    "list": "array", "tuple": "array", "List": "array", "Sequence": "array",
    "dict": "object", "Dict": "object", "Mapping": "object",
}
_GOOGLE_ARG = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_REST_PARAM = re.compile(r"^\s*:param\s+(?:\w+\s+)?(\w+)\s*:\s*(.*)$")


class SourceProblem(ValueError):
    """Why a `file.py:name` target cannot be used; `code` is the lint code that reports it."""

    def __init__(self, code: str, message: str, help: str | None = None):
        super().__init__(message)
        self.code = code
        self.help = help


@dataclass(frozen=True)
class ToolSchema:
    name: str
    description: str
    properties: dict[str, dict[str, Any]]
    required: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": self.properties,
                           "required": list(self.required)}}}


def read_module(path: Path) -> ast.Module:
    """The parsed file; SourceProblem TNX510 (missing) or TNX511 (unreadable, bad syntax)."""
    if not path.is_file():
        raise SourceProblem("TNX510", f"\"{path}\" not found",
                            "the path is relative to the .tnx file's directory")
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, UnicodeDecodeError) as err:
        raise SourceProblem("TNX511", f"cannot read \"{path}\": {err}") from None
    except SyntaxError as err:
        raise SourceProblem("TNX511", f"\"{path}\" has a syntax error at line {err.lineno}: "
                                      f"{err.msg}", "fix the Python file") from None


def find_definition(module: ast.Module, name: str, path: Path, want: type[ast.AST]
                    ) -> ast.AST:
    """The top-level `def`/`class` named `name`; SourceProblem TNX512 with a did-you-mean."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef) if want is ast.FunctionDef else (ast.ClassDef,)
    what = "function" if want is ast.FunctionDef else "class"
    found: dict[str, ast.AST] = {}
    for node in module.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign | ast.ImportFrom | ast.Import):  # aliases: trust them
            for alias in _bound_names(node):
                found.setdefault(alias, node)
    bound = found.get(name)
    if bound is None:
        close = difflib.get_close_matches(name, [n for n, d in found.items()
                                                 if isinstance(d, kinds)], n=1)
        raise SourceProblem("TNX512", f"\"{path.name}\" defines no {what} `{name}`",
                            f"did you mean `{close[0]}`?" if close else
                            f"define `{name}` at the top level of the file")
    if isinstance(bound, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and not isinstance(
            bound, kinds):
        other = "class" if isinstance(bound, ast.ClassDef) else "function"
        raise SourceProblem("TNX512", f"`{name}` in \"{path.name}\" is a {other}, not a {what}")
    return bound


def _bound_names(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    if isinstance(node, ast.Import | ast.ImportFrom):
        return [(a.asname or a.name).split(".")[0] for a in node.names]
    return []


def tool_schema(path: Path, function: str) -> ToolSchema | None:
    """The schema of `function` in `path`; None when it is bound by an import or assignment
    (nothing to read without running the file). Raises SourceProblem."""
    module = read_module(path)
    node = find_definition(module, function, path, ast.FunctionDef)
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    return schema_of(node)


def schema_of(node: ast.FunctionDef | ast.AsyncFunctionDef) -> ToolSchema:
    args = node.args
    if args.vararg is not None or args.kwarg is not None:
        star = args.vararg or args.kwarg
        assert star is not None
        raise SourceProblem("TNX513", f"tool `{node.name}` takes `*{star.arg}`: a tool's "
                                      "arguments must be named", "list each argument by name")
    doc = ast.get_docstring(node) or ""
    summary, described = _parse_docstring(doc)
    positional = [*args.posonlyargs, *args.args]
    defaults: dict[str, ast.expr] = dict(zip([a.arg for a in positional][len(positional)
                                              - len(args.defaults):], args.defaults, strict=True))
    defaults.update({a.arg: d for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)
                     if d is not None})
    properties: dict[str, dict[str, Any]] = {}
    required = []
    for arg in [*positional, *args.kwonlyargs]:
        prop: dict[str, Any] = {}
        json_type = _json_type(arg.annotation)
        if json_type is not None:
            prop["type"] = json_type
        if arg.arg in described:
            prop["description"] = described[arg.arg]
        if arg.arg in defaults:
            try:
                prop["default"] = ast.literal_eval(defaults[arg.arg])
            except ValueError:
                pass  # a computed default: optional, value not shown
        else:
            required.append(arg.arg)
        properties[arg.arg] = prop
    return ToolSchema(node.name, summary, properties, tuple(required))


def _json_type(annotation: ast.expr | None) -> str | None:
    if annotation is None:
        return None
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:  # a string annotation (`from __future__ import annotations` is not needed for this)
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return None
    if isinstance(annotation, ast.Subscript):
        annotation = annotation.value
    if isinstance(annotation, ast.BinOp):  # `int | None`: the non-None side
        sides = [s for s in (annotation.left, annotation.right)
                 if not (isinstance(s, ast.Constant) and s.value is None)]
        return _json_type(sides[0]) if len(sides) == 1 else None
    name = annotation.attr if isinstance(annotation, ast.Attribute) else getattr(annotation, "id", None)
    return _JSON_TYPES.get(name or "")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(first paragraph, argument name → description) of a Google or reST docstring."""
    lines = doc.splitlines()
    summary_lines = []
    for line in lines:
        if not line.strip():
            break
        summary_lines.append(line.strip())
    described: dict[str, str] = {}
    in_args = False
    for line in lines:
        rest = _REST_PARAM.match(line)
        if rest:
            described[rest.group(1)] = rest.group(2).strip()
            continue
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            if line.strip() and not line.startswith((" ", "\t")):
                in_args = False  # the next section
                continue
            match = _GOOGLE_ARG.match(line)
            if match and match.group(1).lstrip("*"):
                last = match.group(1).lstrip("*")
                described[last] = match.group(2).strip()
            elif line.strip() and described:  # a continuation line of the last argument
                key = next(reversed(described))
                described[key] = f"{described[key]} {line.strip()}".strip()
    return " ".join(summary_lines), described


def environment_problems(path: Path, class_name: str) -> None:
    """Raise SourceProblem when `class_name` in `path` is missing or lacks `reset`/`step`.

    A class with base classes may inherit them, so only a class without bases is checked."""
    module = read_module(path)
    node = find_definition(module, class_name, path, ast.ClassDef)
    if not isinstance(node, ast.ClassDef) or node.bases:
        return
    methods = {n.name for n in node.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    missing = [m for m in ("reset", "step") if m not in methods]
    if missing:
        raise SourceProblem(
            "TNX513", f"environment class `{class_name}` has no "
            + " and no ".join(f"`{m}`" for m in missing) + " method",
            "define `reset(self, row) -> observation` and "
            "`step(self, action) -> (observation, reward, done)`")


def explain_tool(target: str, base_dir: Path) -> str | None:
    """`tnx explain tools.py:calculate`: the JSON schema the model is shown; None if not a
    `file.py:function` target. Raises SourceProblem when the function cannot be read."""
    file, sep, function = target.rpartition(":")
    if not sep or not file.endswith(".py") or not function.isidentifier():
        return None
    schema = tool_schema(base_dir / file, function)
    if schema is None:
        return f"tool {target}: bound by an import or assignment; its schema is read at run time\n"
    return (f"tool NAME = python(\"{target}\")\n\nJSON schema shown to the model:\n"
            + json.dumps(schema.as_json(), indent=2) + "\n")
