"""Diagnostics → text (rustc/ruff style, with carets), JSON, or SARIF 2.1.0."""

from __future__ import annotations

import functools
import json
from collections import Counter
from urllib.parse import quote

from tunix_dsl import __version__
from tunix_dsl.grammar.diagnostics import Diagnostic, Severity
from tunix_dsl.grammar.spans import Span

_SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/tunix-dsl/"
_TAB = 4

_COLORS: dict[str, str] = {
    Severity.ERROR: "\x1b[1;31m", Severity.WARNING: "\x1b[1;33m", Severity.NOTE: "\x1b[1;36m",
    "gutter": "\x1b[1;34m", "bold": "\x1b[1m", "secondary": "\x1b[1;34m",
}
_RESET = "\x1b[0m"


class _Painter:
    def __init__(self, color: bool):
        self.color = color

    def __call__(self, style: str, text: str) -> str:
        return f"{_COLORS[style]}{text}{_RESET}" if self.color and text else text


# --------------------------------------------------------------------------- text


def render_text(diags: list[Diagnostic], sources: dict[str, str], color: bool = False) -> str:
    """Every diagnostic with its source excerpt, then a one-line summary."""
    paint = _Painter(color)
    ordered = sorted(diags, key=_sort_key)
    blocks = [_render_one(d, sources, paint) for d in ordered]
    return "\n".join(blocks + [summary_line(diags)]) + "\n"


def summary_line(diags: list[Diagnostic]) -> str:
    counts = Counter(d.severity for d in diags)
    parts = [
        f"{n} {sev.value}{'s' if n != 1 else ''}"
        for sev in (Severity.ERROR, Severity.WARNING, Severity.NOTE)
        if (n := counts[sev])
    ]
    if not parts:
        return "no problems found"
    return "found " + (", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0])


def _sort_key(d: Diagnostic) -> tuple:
    return (d.span.file, d.span.line, d.span.column, d.code)


def _render_one(d: Diagnostic, sources: dict[str, str], paint: _Painter) -> str:
    head = paint(d.severity, f"{d.severity.value}[{d.code}]") + paint("bold", f": {d.message}")
    text = sources.get(d.span.file)
    marks = [(d.span, d.label, True)]
    marks += [(lab.span, lab.message, False) for lab in d.secondary if lab.span.file == d.span.file]
    other_files = [lab for lab in d.secondary if lab.span.file != d.span.file]
    lines_shown = {m[0].line for m in marks}
    for lab in other_files:
        lines_shown.add(lab.span.line)
    width = len(str(max(lines_shown)))
    pad = " " * width
    out = [head, f"{pad}{paint('gutter', '-->')} {d.span}"]
    if text is not None:
        out += _excerpt(text, marks, width, paint, d.severity)
    for lab in other_files:
        out.append(f"{pad}{paint('gutter', ':::')} {lab.span}")
        other_text = sources.get(lab.span.file)
        if other_text is not None:
            out += _excerpt(other_text, [(lab.span, lab.message, False)], width, paint, d.severity)
    if d.help or d.notes:
        out.append(f"{pad} {paint('gutter', '|')}")
    if d.help:
        out.append(f"{pad} {paint('gutter', '=')} {paint('bold', 'help')}: {d.help}")
    for note in d.notes:
        out.append(f"{pad} {paint('gutter', '=')} {paint('bold', 'note')}: {note}")
    return "\n".join(out) + "\n"


@functools.lru_cache(maxsize=8)
def _lines(text: str) -> tuple[str, ...]:
    # Split once per source, not once per diagnostic: a file with thousands of
    # diagnostics would otherwise render in quadratic time.
    return tuple(text.split("\n"))


def _excerpt(text: str, marks: list[tuple[Span, str, bool]], width: int, paint: _Painter,
             severity: Severity) -> list[str]:
    """Source lines with `^^^` under the primary span and `---` under secondary ones."""
    source_lines = _lines(text)
    bar = paint("gutter", "|")
    out = [f"{' ' * width} {bar}"]
    previous = None
    for line_no in sorted({m[0].line for m in marks}):
        if line_no > len(source_lines):
            continue
        if previous is not None and line_no - previous > 1:
            out.append(paint("gutter", "...".rjust(width)))
        previous = line_no
        raw = source_lines[line_no - 1]
        if line_no == 1:  # a byte-order mark is not a column (see syntax_errors.bom_shift)
            raw = raw.removeprefix("\ufeff")
        shown = raw.expandtabs(_TAB).rstrip("\r")
        out.append(f"{paint('gutter', str(line_no).rjust(width))} {bar} {shown}")
        line_marks = sorted((m for m in marks if m[0].line == line_no), key=lambda m: m[0].column)
        for span, label, primary in line_marks:
            start = len(raw[:span.column - 1].expandtabs(_TAB))
            if span.end_line == span.line:
                end = len(raw[:span.end_column - 1].expandtabs(_TAB))
            else:  # a multi-line span: underline to the end of its first line
                end = len(shown.rstrip())
            length = max(1, end - start)
            glyph = ("^" if primary else "-") * length
            style = severity if primary else "secondary"
            marker = paint(style, glyph + (f" {label}" if label else ""))
            out.append(f"{' ' * width} {bar} {' ' * start}{marker}")
    return out


# --------------------------------------------------------------------------- json


def _span_json(span: Span) -> dict:
    return {
        "file": span.file, "line": span.line, "column": span.column,
        "end_line": span.end_line, "end_column": span.end_column,
    }


def diagnostic_to_json(d: Diagnostic) -> dict:
    return {
        "code": d.code,
        "severity": d.severity.value,
        "message": d.message,
        **_span_json(d.span),
        "label": d.label,
        "help": d.help,
        "notes": list(d.notes),
        "secondary": [{**_span_json(lab.span), "message": lab.message} for lab in d.secondary],
    }


def render_json(diags: list[Diagnostic]) -> str:
    return json.dumps([diagnostic_to_json(d) for d in sorted(diags, key=_sort_key)], indent=2)


# --------------------------------------------------------------------------- sarif


def _rule_description(code: str, fallback: str) -> str:
    """The rule's one-line summary from the rule registry, when it knows the code."""
    try:
        from tunix_dsl.rules.registry import RULES  # filled by the checker's rule modules
    except ImportError:
        return fallback
    entry = RULES.get(code)
    return entry.summary if entry is not None else fallback


_SYNTAX_RULES = {
    "TNX001": "Syntax error: unexpected token",
    "TNX002": "Syntax error: unexpected character or unterminated string",
    "TNX003": "Syntax error: invalid number or string escape",
}


def _region(span: Span) -> dict:
    return {
        "startLine": max(1, span.line), "startColumn": max(1, span.column),
        "endLine": max(1, span.end_line), "endColumn": max(1, span.end_column),
    }


def _location(span: Span, message: str | None = None) -> dict:
    location: dict = {
        "physicalLocation": {
            "artifactLocation": {"uri": quote(span.file.replace("\\", "/"))},
            "region": _region(span),
        }
    }
    if message:
        location["message"] = {"text": message}
    return location


def render_sarif(diags: list[Diagnostic], sources: dict[str, str] | None = None) -> str:
    """A SARIF 2.1.0 log (one run) for code-scanning tools in CI."""
    ordered = sorted(diags, key=_sort_key)
    codes = sorted({d.code for d in ordered})
    first_message = {d.code: d.message for d in reversed(ordered)}
    rules = [
        {
            "id": code,
            "shortDescription": {
                "text": _rule_description(code, _SYNTAX_RULES.get(code, first_message[code]))
            },
        }
        for code in codes
    ]
    results = []
    for d in ordered:
        text = d.message + (f"\nhelp: {d.help}" if d.help else "")
        text += "".join(f"\nnote: {n}" for n in d.notes)
        result = {
            "ruleId": d.code,
            "ruleIndex": codes.index(d.code),
            "level": {"error": "error", "warning": "warning", "note": "note"}[d.severity.value],
            "message": {"text": text},
            "locations": [_location(d.span, d.label or None)],
        }
        if d.secondary:
            result["relatedLocations"] = [
                {"id": i, **_location(lab.span, lab.message or None)}
                for i, lab in enumerate(d.secondary)
            ]
        results.append(result)
    artifacts = sorted({d.span.file for d in ordered} | set(sources or {}))
    log = {
        "$schema": _SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "tnx", "version": __version__, "informationUri": INFORMATION_URI,
                "rules": rules,
            }},
            "artifacts": [{"location": {"uri": quote(f.replace("\\", "/"))}} for f in artifacts],
            "results": results,
        }],
    }
    return json.dumps(log, indent=2)
