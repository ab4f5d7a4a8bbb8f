"""The tolerant scan's vocabulary: tokens, name occurrences, frames, declarations, context.

`tunix_dsl.lsp.scan` fills these in; completion, hover, navigation and the
quick fixes read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as _field

# Terminals as in grammar/tnx.lark; a string may be unterminated (mid-edit).
_TOKEN = re.compile(
    r"(?P<ws>[ \t\f\r\n\ufeff]+)"
    r"|(?P<comment>#[^\n]*)"
    r'|(?P<string>"(?:[^"\\\n]|\\.)*"?)'
    r"|(?P<number>(?:\d\w*|\.\d\w*)(?:\.\w*)*(?:(?<=[eE])[+-]\w+)?)"
    r"|(?P<name>[A-Za-z_]\w*)"
    r"|(?P<op>//|[-+*/%])"
    r"|(?P<punct>[{}()\[\]=,:.])"
    r"|(?P<other>.)",
    re.S,
)

DECL_KEYWORDS = ("pipeline", "param", "tokenizer", "model", "dataset", "reward", "tool",
                 "environment", "stage", "eval", "export")
CLOSER = {"{": "}", "(": ")", "[": "]"}


@dataclass(frozen=True)
class Token:
    kind: str  # comment | string | number | name | op | punct
    text: str
    start: int
    end: int


def tokenize(text: str) -> list[Token]:
    """Every token but whitespace and stray characters, with 0-based offsets."""
    tokens = []
    for m in _TOKEN.finditer(text):
        kind = m.lastgroup or "other"
        if kind not in ("ws", "other"):
            tokens.append(Token(kind, m.group(), m.start(), m.end()))
    return tokens


@dataclass(frozen=True)
class Occurrence:
    """One classified name.

    kind: `keyword` (a declaration keyword), `decl` (a declared name), `kind`
    (a stage kind), `field` (a block field or call argument name), `call` (a
    function name), `ref` (a reference; `parts`/`index` say which part).
    `owner` is the Frame the name belongs to (fields, calls); `keyword` the
    declaration keyword (decl names, and the keyword itself).
    """

    kind: str
    name: str
    start: int
    end: int
    parts: tuple[str, ...] = ()
    index: int = 0
    owner: Frame | None = None
    keyword: str = ""


@dataclass(eq=False)
class Frame:
    """An open bracket (or the module), and what is being written inside it.

    type: `module`, `block` (a stage/pipeline/eval body), `map`, `call`, `list`, `paren`.
    `owner`: for a block, the declaration keyword; for a call, its function.
    `field`: the field or argument whose value is being written (or None).
    """

    type: str
    owner: str = ""
    stage_kind: str = ""
    parent: Frame | None = None
    parent_field: str | None = None  # the field of `parent` whose value this frame is
    decl_keyword: str = ""  # the top-level declaration this frame is inside
    names: list[str] = _field(default_factory=list)  # fields/arguments already written
    field: str | None = None
    positional: int = 0  # positional arguments of a call seen so far
    expect: str = "entry"  # entry (a name or header) | operand | operator
    header: list[Token] = _field(default_factory=list)  # module: the declaration being read


@dataclass
class Decl:
    keyword: str
    name: str
    name_start: int
    name_end: int
    start: int
    end: int
    kind: str = ""  # stage kind
    fields: list[Occurrence] = _field(default_factory=list)
    block: Frame | None = None  # the `{ }` of pipeline, stage and eval declarations


@dataclass(frozen=True)
class Context:
    """Where a cursor is: the innermost frame and what may be typed there."""

    frame: Frame
    expect: str  # entry | operand | operator
    field: str | None  # the field whose value is being written
    header: tuple[str, ...]  # module level: the words of the declaration header so far
    member_of: tuple[str, ...] | None  # after `a.`: the parts before the dot
    prefix: str  # the part of the name being typed before the cursor
    string: Token | None  # the (possibly unterminated) string the cursor is in
    in_comment: bool = False


@dataclass
class Outline:
    decls: list[Decl]
    occurrences: list[Occurrence]
    context: Context | None = None

    def at(self, offset: int) -> Occurrence | None:
        """The occurrence under `offset` (a cursor touching either end counts)."""
        for occ in self.occurrences:
            if occ.start <= offset <= occ.end:
                return occ
        return None

    def decl(self, name: str) -> Decl | None:
        return next((d for d in self.decls if d.name == name and d.keyword != "export"), None)
