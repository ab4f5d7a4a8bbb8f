"""Checker diagnostics → LSP diagnostics, and the quick fixes their help text implies.

The text is checked by the same `tunix_dsl.api.parse` that `tnx lint` runs,
without `--set` overrides, with relative paths resolved against the file's
directory. Codes, messages, ranges and secondary labels are the linter's own.

Quick fixes come from the help a diagnostic already carries:
"did you mean `beta`?" replaces the span; "use `tune.model`" replaces a
reference; "add `steps = ...`" inserts the missing field into its block,
with a value of the field's type. A fix travels in the diagnostic's `data`,
so a code-action request needs no state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from lsprotocol import types as lsp

from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.lsp.outline import Outline
from tunix_dsl.lsp.positions import LineIndex
from tunix_dsl.lsp.schema_info import expectation, field_info, frame_schema

_SEVERITY = {
    Severity.ERROR: lsp.DiagnosticSeverity.Error,
    Severity.WARNING: lsp.DiagnosticSeverity.Warning,
    Severity.NOTE: lsp.DiagnosticSeverity.Information,
}
_DID_YOU_MEAN = re.compile(r"did you mean `([^`]+)`\?")
_USE = re.compile(r"^use `([A-Za-z_][\w.]*)`")
_ADD = re.compile(r"^add `([A-Za-z_]\w*) = \.\.\.`")
_NAME = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def to_lsp(diags: list[Diagnostic], file: str, uri: str, text: str, index: LineIndex,
           outline: Outline) -> list[lsp.Diagnostic]:
    result = []
    for diag in diags:
        if diag.span.file != file:  # e.g. a `python()` reward file: shown at the top
            where = f"{diag.span}: " if diag.span.file else ""
            result.append(lsp.Diagnostic(index.range(0, 0), where + _message(diag),
                                         _SEVERITY[diag.severity], code=diag.code, source="tnx"))
            continue
        related = [
            lsp.DiagnosticRelatedInformation(
                lsp.Location(uri, index.range(label.span.start, label.span.end)),
                label.message or "see here")
            for label in diag.secondary if label.span.file == file
        ]
        fix = quick_fix(diag, text, outline)
        data = None
        if fix is not None:
            title, start, end, new_text = fix
            data = {"title": title, "range": _range_json(index.range(start, end)),
                    "newText": new_text}
        result.append(lsp.Diagnostic(
            range=index.range(diag.span.start, diag.span.end), message=_message(diag),
            severity=_SEVERITY[diag.severity], code=diag.code, source="tnx",
            related_information=related or None, data=data))
    return result


def _message(diag: Diagnostic) -> str:
    lines = [diag.message]
    if diag.label and diag.label not in diag.message:
        lines[0] += f" ({diag.label})"
    lines += [f"note: {note}" for note in diag.notes]
    if diag.help:
        lines.append(f"help: {diag.help}")
    return "\n".join(lines)


def _range_json(r: lsp.Range) -> dict[str, Any]:
    return {"start": {"line": r.start.line, "character": r.start.character},
            "end": {"line": r.end.line, "character": r.end.character}}


def quick_fix(diag: Diagnostic, text: str, outline: Outline) -> tuple[str, int, int, str] | None:
    """(title, start, end, new text) of the edit the diagnostic's help suggests, if any."""
    if not diag.help:
        return None
    start, end = diag.span.start, diag.span.end
    written = text[start:end]
    m = _DID_YOU_MEAN.search(diag.help)
    if m:
        suggestion = m.group(1)
        if written.startswith('"') and written.endswith('"') and len(written) > 1:
            return f'Replace with "{suggestion}"', start, end, f'"{suggestion}"'
        if _NAME.fullmatch(written):
            return f"Replace `{written}` with `{suggestion}`", start, end, suggestion
        return None
    m = _USE.match(diag.help)
    if m and _NAME.fullmatch(written):
        return f"Replace `{written}` with `{m.group(1)}`", start, end, m.group(1)
    m = _ADD.match(diag.help)
    if m:
        return _add_field(m.group(1), start, text, outline)
    return None


def _add_field(name: str, name_start: int, text: str,
               outline: Outline) -> tuple[str, int, int, str] | None:
    decl = next((d for d in outline.decls if d.name_start == name_start and d.block), None)
    if decl is None or decl.end < 1 or text[decl.end - 1] != "}":
        return None
    value = _placeholder(decl, name, outline)
    if value is None:
        return None
    brace = decl.end - 1
    line_start = text.rfind("\n", 0, brace) + 1
    title = f"Add `{name} = {value}`"
    if text[line_start:brace].strip():  # `{ ... }` on one line
        return title, brace, brace, f"{'' if text[brace - 1] == ' ' else ' '}{name} = {value} "
    indent = "  "
    if decl.fields:
        first = decl.fields[0].start
        indent = text[text.rfind("\n", 0, first) + 1:first]
        indent = indent if not indent.strip() else "  "
    return title, line_start, line_start, f"{indent}{name} = {value}\n"


def _placeholder(decl, name: str, outline: Outline) -> str | None:
    """A value of the field's type that the checker accepts: the user edits it from there."""
    info = field_info(frame_schema(decl.block), name)
    if info is None:
        return None
    expect = expectation(info)
    if expect.ref is not None:
        candidates = [d.name for d in outline.decls if d.keyword == expect.ref]
        if expect.ref == "model":
            candidates += [f"{d.name}.model" for d in outline.decls
                           if d.keyword == "stage" and d is not decl]
        if not candidates:
            return None
        return f"[{candidates[0]}]" if expect.is_list else candidates[0]
    if expect.choices:
        choice = expect.choices[0]
        return f'"{choice}"' if isinstance(choice, str) else str(choice)
    annotation = info.annotation
    for typ, value in ((bool, "false"), (int, "1"), (float, "1.0"), (str, '""')):
        if annotation is typ:
            return value
    return None


def code_actions(uri: str, diagnostics: Sequence[lsp.Diagnostic]) -> list[lsp.CodeAction]:
    actions = []
    for diag in diagnostics:
        data = diag.data
        if not isinstance(data, dict) or "newText" not in data:
            continue
        r = data["range"]
        edit_range = lsp.Range(lsp.Position(r["start"]["line"], r["start"]["character"]),
                               lsp.Position(r["end"]["line"], r["end"]["character"]))
        edit = lsp.WorkspaceEdit(changes={uri: [lsp.TextEdit(edit_range, data["newText"])]})
        actions.append(lsp.CodeAction(title=data["title"], kind=lsp.CodeActionKind.QuickFix,
                                      diagnostics=[diag], edit=edit, is_preferred=True))
    return actions
