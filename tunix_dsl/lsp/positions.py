"""Character offsets ↔ LSP positions (line, column in the negotiated code units).

Spans and the scanner count Python characters (code points); LSP clients
count UTF-16 code units unless they negotiated UTF-8 or UTF-32. One
`LineIndex` per text converts both ways, so a `é` or an emoji before a
diagnostic never shifts its squiggle.
"""

from __future__ import annotations

from bisect import bisect_right

from lsprotocol import types as lsp


def _units(text: str, encoding: str) -> int:
    if encoding == "utf-32":
        return len(text)
    if encoding == "utf-8":
        return len(text.encode("utf-8"))
    return len(text.encode("utf-16-le")) // 2


class LineIndex:
    def __init__(self, text: str, encoding: str = "utf-16"):
        self.text = text
        self.encoding = encoding
        self.starts = [0]
        for i, ch in enumerate(text):
            if ch == "\n":
                self.starts.append(i + 1)

    def position(self, offset: int) -> lsp.Position:
        offset = max(0, min(offset, len(self.text)))
        line = bisect_right(self.starts, offset) - 1
        start = self.starts[line]
        return lsp.Position(line, _units(self.text[start:offset], self.encoding))

    def range(self, start: int, end: int) -> lsp.Range:
        return lsp.Range(self.position(start), self.position(max(start, end)))

    def offset(self, position: lsp.Position) -> int:
        """The character offset of a client position (clamped into the text)."""
        if position.line >= len(self.starts):
            return len(self.text)
        start = self.starts[max(0, position.line)]
        end = self.starts[position.line + 1] - 1 if position.line + 1 < len(self.starts) \
            else len(self.text)
        line = self.text[start:end]
        if self.encoding == "utf-32":
            return start + min(position.character, len(line))
        units = 0
        for i, ch in enumerate(line):
            if units >= position.character:
                return start + i
            units += _units(ch, self.encoding)
        return end

    def whole(self) -> lsp.Range:
        return self.range(0, len(self.text))
