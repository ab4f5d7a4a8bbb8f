"""Source positions. Every AST node and every diagnostic carries a `Span`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open region of one source file.

    Lines and columns are 1-based (as editors show them); `end_column` is the
    column just past the last character. `start`/`end` are 0-based character
    offsets into the source text, used to slice it.
    """

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    start: int = 0
    end: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @staticmethod
    def unknown(file: str = "<unknown>") -> Span:
        return Span(file, 1, 1, 1, 1, 0, 0)
