"""A tolerant scan of `.tnx` text: the structure an editor needs, even mid-edit.

The real parser (`tunix_dsl.grammar.parser`) rejects a file at its first syntax
error, which is most of the time while someone types. The language server
still has to say where the cursor is (a field name of a `grpo` block, the
value of `model =`, the arguments of `adamw(`) and what each name is (a
declaration, a reference, a field). This module gets that from the tokens
alone, with the grammar's shapes (`grammar/tnx.lark`) and a bracket stack:

- `scan(text)` → `Outline`: declarations (with their blocks' fields) and
  every classified name occurrence (declaration name, reference, field,
  call, stage kind, keyword);
- `scan(text, cursor)` also records the `Context` at a character offset.

It never raises: unknown characters are skipped and unclosed brackets end
at the end of the text. Diagnostics always come from the real checker.
"""

from __future__ import annotations

import re

from tunix_dsl.lsp.outline import (
    CLOSER,
    Context,
    Decl,
    Frame,
    Occurrence,
    Outline,
    Token,
    tokenize,
)


class _Walker:
    def __init__(self, text: str, cursor: int | None):
        self.text = text
        self.tokens = tokenize(text)
        self.cursor = cursor
        self.module = Frame("module")
        self.stack = [self.module]
        self.decls: list[Decl] = []
        self.occ: list[Occurrence] = []
        self.context: Context | None = None
        self.current: Decl | None = None  # the top-level declaration being read

    # ------------------------------------------------------------------ helpers
    @property
    def top(self) -> Frame:
        return self.stack[-1]

    def next_index(self, i: int) -> int:
        """The index of the first non-comment token after i (len(tokens) at the end)."""
        j = i + 1
        while j < len(self.tokens) and self.tokens[j].kind == "comment":
            j += 1
        return j

    def peek(self, i: int) -> Token | None:
        j = self.next_index(i)
        return self.tokens[j] if j < len(self.tokens) else None

    def push(self, type_: str, owner: str = "", stage_kind: str = "") -> Frame:
        parent = self.top
        frame = Frame(type_, owner, stage_kind, parent, parent.field,
                      parent.decl_keyword or (self.current.keyword if self.current else ""))
        if type_ in ("list", "paren"):
            frame.field = parent.field  # items are values of the same field
            frame.expect = "operand"
        self.stack.append(frame)
        return frame

    def pop(self, closer: str, end: int) -> None:
        for depth in range(len(self.stack) - 1, 0, -1):
            if CLOSER.get(self._opener(self.stack[depth]), "") == closer:
                del self.stack[depth:]
                if self.top is self.module and self.current is not None:
                    self.current.end = end
                    if self.current.keyword in ("pipeline", "eval", "stage"):
                        self.current = None
                self.top.expect = "operator"
                return

    @staticmethod
    def _opener(frame: Frame) -> str:
        return {"block": "{", "map": "{", "call": "(", "list": "[", "paren": "("}.get(frame.type, "")

    def add(self, kind: str, tok: Token, **kw) -> Occurrence:
        occ = Occurrence(kind, tok.text, tok.start, tok.end, **kw)
        self.occ.append(occ)
        return occ

    # ------------------------------------------------------------------ cursor
    def before(self, tok: Token) -> bool:
        """Whether the cursor context must be taken before `tok` is walked."""
        cursor = self.cursor
        if cursor is None or self.context is not None:
            return False
        if tok.end > cursor:  # the token is after the cursor or contains it
            return True
        if tok.end == cursor:  # touching: a name or number is still being typed
            unterminated = tok.kind == "string" and (len(tok.text) == 1 or tok.text[-1] != '"')
            return tok.kind in ("name", "number", "comment") or unterminated
        return False

    def snapshot(self, tok: Token | None, frame: Frame | None = None, expect: str | None = None,
                 member: tuple[str, ...] | None = None) -> None:
        """Record the context at the cursor, before `tok` is walked."""
        assert self.cursor is not None
        frame = frame or self.top
        expect = expect or frame.expect
        prefix, string = "", None
        touching = tok is not None and tok.start < self.cursor <= tok.end
        kind = tok.kind if tok is not None and touching else None
        if tok is not None and kind == "name":
            prefix = self.text[tok.start:self.cursor]
        if kind == "string":
            string = tok
        if member is None:
            member = self._dotted_before(self.cursor - len(prefix))
            if member is not None:
                expect = "operand"
        header = tuple(t.text for t in frame.header) if frame is self.module else ()
        comment = kind == "comment"
        self.context = Context(frame, expect, frame.field, header, member, prefix, string, comment)

    def _dotted_before(self, offset: int) -> tuple[str, ...] | None:
        """`a.b.` right before `offset` (on one line) → ("a", "b")."""
        line_start = self.text.rfind("\n", 0, offset) + 1
        m = re.search(r"([A-Za-z_]\w*(?:[ \t]*\.[ \t]*[A-Za-z_]\w*)*)[ \t]*\.[ \t]*$",
                      self.text[line_start:offset])
        if not m:
            return None
        return tuple(p.strip() for p in m.group(1).split("."))

    # ------------------------------------------------------------------ walk
    def run(self) -> Outline:
        i = 0
        while i < len(self.tokens):
            tok = self.tokens[i]
            if self.before(tok):
                self.snapshot(tok)
            if tok.kind == "comment":
                i += 1
                continue
            i = self.step(i, tok)
            if self.current is not None:
                self.current.end = self.tokens[i - 1].end
        if self.cursor is not None and self.context is None:
            self.snapshot(None)
        return Outline(self.decls, self.occ, self.context)

    def step(self, i: int, tok: Token) -> int:
        frame = self.top
        if frame is self.module and frame.expect == "entry":
            return self.header(i, tok)
        if frame.type in ("block", "map", "call") and frame.expect == "entry":
            return self.entry(i, tok, frame)
        return self.value(i, tok, frame)

    def header(self, i: int, tok: Token) -> int:
        """Module level: read `KEYWORD NAME (= | { | : KIND {)` or `export ...`."""
        frame = self.module
        frame.header.append(tok)
        words = frame.header
        first = words[0]
        if first.kind != "name":
            words.clear()
            return i + 1
        if first.text == "export":
            return self.export(i, tok)
        if tok.text == "=" and len(words) >= 3:
            kw, name = words[-3], words[-2]
            self.declare(kw, name, kind="")
            frame.expect, frame.field = "operand", "value"
            words[:] = [kw, name]
            return i + 1
        if tok.text == "{":
            colon = [j for j, w in enumerate(words) if w.text == ":"]
            if colon and colon[-1] >= 2:
                kw, name = words[colon[-1] - 2], words[colon[-1] - 1]
                kind = words[colon[-1] + 1] if len(words) > colon[-1] + 2 else None
                self.declare(kw, name, kind=kind.text if kind else "")
                self.decls[-1].block = self.push("block", kw.text, kind.text if kind else "")
            elif len(words) >= 3:
                kw, name = words[-3], words[-2]
                self.declare(kw, name, kind="")
                self.decls[-1].block = self.push("block", kw.text)
            else:
                self.push("block", "")
            words.clear()
            return i + 1
        if tok.kind == "name":
            if len(words) == 1:
                self.add("keyword", tok, keyword=tok.text)
            elif len(words) == 4 and words[2].text == ":":
                self.add("kind", tok, keyword=words[0].text)
        return i + 1

    def declare(self, kw: Token, name: Token, kind: str) -> None:
        decl = Decl(kw.text, name.text, name.start, name.end, kw.start, name.end, kind)
        self.decls.append(decl)
        self.current = decl
        self.add("decl", name, keyword=kw.text)

    def export(self, i: int, tok: Token) -> int:
        """`export REF to STRING as STRING`: the reference is the only name that matters."""
        words = self.module.header
        if len(words) == 1:
            self.add("keyword", tok, keyword="export")
            self.current = Decl("export", "", tok.start, tok.end, tok.start, tok.end)
            self.decls.append(self.current)
            self.module.field = "source"
            return i + 1
        texts = [w.text for w in words]
        if len(words) >= 2 and tok.kind == "name" and "to" not in texts[1:-1]:
            if tok.text == "to" and len(words) > 2:
                return i + 1
            j = self.ref(i, self.module, keyword="export")
            words.extend(self.tokens[i + 1:j])
            return j
        if tok.kind == "string" and len(texts) >= 2 and texts[-2] == "as":
            if self.current is not None:
                self.current.end = tok.end
            words.clear()
            self.module.field = None
            self.current = None
        return i + 1

    def ref_parts(self, i: int) -> tuple[list[tuple[str, Token]], int]:
        """The dotted name starting at token i (on one line), and the index just past it."""
        parts = [(self.tokens[i].text, self.tokens[i])]
        j = i + 1
        while j + 1 < len(self.tokens) and self.tokens[j].text == "." \
                and self.tokens[j + 1].kind == "name" \
                and "\n" not in self.text[parts[-1][1].end:self.tokens[j + 1].start]:
            parts.append((self.tokens[j + 1].text, self.tokens[j + 1]))
            j += 2
        return parts, j

    def ref(self, i: int, frame: Frame, **kw) -> int:
        """Record a dotted reference; a cursor inside it is a member (or name) completion."""
        parts, j = self.ref_parts(i)
        names = tuple(p for p, _ in parts)
        if self.cursor is not None and self.context is None \
                and parts[0][1].start < self.cursor <= parts[-1][1].end:
            k = next(k for k, (_, t) in enumerate(parts) if self.cursor <= t.end)
            member = names[:k] if k else None  # `tune.mo|` or `tune.|model`
            self.snapshot(parts[k][1], frame, frame.expect, member)
        for k, (_, ptok) in enumerate(parts):
            self.add("ref", ptok, parts=names, index=k, owner=frame, **kw)
        return j

    def entry(self, i: int, tok: Token, frame: Frame) -> int:
        """In a block, map or call, where a field or argument begins."""
        nxt = self.peek(i)
        if tok.kind == "name" and nxt is not None and nxt.text == "=":
            occ = self.add("field", tok, owner=frame)
            frame.names.append(tok.text)
            if frame.type == "block" and frame is self.stack[1] and self.current is not None:
                self.current.fields.append(occ)
            frame.field, frame.expect = tok.text, "operand"
            return self.next_index(i) + 1
        if tok.text in ("}", ")", "]"):
            self.pop(tok.text, tok.end)
            return i + 1
        if tok.text == ",":
            return i + 1
        if frame.type == "call":  # a positional argument
            positional = _positional_field(frame)
            frame.field, frame.expect = positional, "operand"
            frame.positional += 1
            return self.value(i, tok, frame)
        if tok.kind == "name":  # a field name still being typed (`= value` missing)
            self.add("field", tok, owner=frame)
        return i + 1

    def value(self, i: int, tok: Token, frame: Frame) -> int:
        """An expression (the value of `frame.field`), operand/operator alternating."""
        if tok.text == ",":
            if frame.type in ("block", "map", "call"):
                frame.expect, frame.field = "entry", None
            else:
                frame.expect = "operand"
            return i + 1
        if tok.text in ("}", ")", "]"):
            self.pop(tok.text, tok.end)
            return i + 1
        if frame.expect == "operator" and tok.kind in ("name", "string", "number") \
                or frame.expect == "operator" and tok.text == "{" and frame is self.module:
            # A new field (block) or declaration (module) begins: no separator is needed.
            if frame is self.module:
                frame.expect, frame.field = "entry", None
                frame.header.clear()
                self.current = None
                return self.header(i, tok)
            if frame.type in ("block", "map", "call"):
                frame.expect, frame.field = "entry", None
                return self.entry(i, tok, frame)
        if tok.kind == "op":
            frame.expect = "operand"
            return i + 1
        if tok.kind in ("string", "number"):
            frame.expect = "operator"
            return i + 1
        if tok.kind == "name":
            nxt = self.peek(i)
            if tok.text in ("true", "false"):
                frame.expect = "operator"
                return i + 1
            if nxt is not None and nxt.text == "(":
                self.add("call", tok, owner=frame, keyword=frame.decl_keyword
                         or (self.current.keyword if self.current else ""))
                frame.expect = "operator"
                self.push("call", tok.text)
                return self.next_index(i) + 1
            if nxt is not None and frame.type in ("block", "map", "call") and nxt.text == "=":
                frame.expect, frame.field = "entry", None  # the value was left out
                return self.entry(i, tok, frame)
            if nxt is not None and frame is self.module and nxt.kind == "name":
                frame.expect, frame.field = "entry", None  # `model tiny =` then a new declaration
                frame.header.clear()
                self.current = None
                return self.header(i, tok)
            j = self.ref(i, frame)
            frame.expect = "operator"
            return j
        if tok.text == "{":
            frame.expect = "operator"
            self.push("map")
            return i + 1
        if tok.text == "[":
            frame.expect = "operator"
            self.push("list")
            return i + 1
        if tok.text == "(":
            frame.expect = "operator"
            self.push("paren")
            return i + 1
        return i + 1  # `=`, `:` or `.` out of place: skip


def _positional_field(frame: Frame) -> str | None:
    from tunix_dsl.lsp.schema_info import call_schema

    schema = call_schema(frame.owner, frame.decl_keyword, frame.parent is not None
                         and frame.parent.type == "module")
    if schema is None or frame.positional >= len(schema.positional):
        return None
    return schema.positional[frame.positional]


def scan(text: str, cursor: int | None = None) -> Outline:
    """The outline of `text`; with `cursor` (a character offset), its `Context` too."""
    return _Walker(text, cursor).run()
