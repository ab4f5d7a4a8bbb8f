"""Diagnostics: what the checker says about a pipeline.

Modelled on rustc/ruff: a stable code (`TNX101`), a severity, a primary span
with a label, optional secondary spans with their own labels, and help text.
Renderers (text with carets, JSON, SARIF) live in `tunix_dsl.cli.render`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tunix_dsl.grammar.spans import Span


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True, slots=True)
class Label:
    span: Span
    message: str = ""


@dataclass(frozen=True)
class Diagnostic:
    code: str
    severity: Severity
    message: str
    span: Span
    label: str = ""
    secondary: tuple[Label, ...] = ()
    help: str | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def is_error(self) -> bool:
        return self.severity is Severity.ERROR


class TnxError(Exception):
    """Raised by API entry points that cannot go on; carries diagnostics."""

    def __init__(self, diagnostics: list[Diagnostic]):
        self.diagnostics = diagnostics
        first = diagnostics[0] if diagnostics else None
        super().__init__(f"{first.span}: {first.code} {first.message}" if first else "error")
