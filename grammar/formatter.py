"""`tnx fmt`: one canonical layout for `.tnx` files.

The layout: 2-space indent in blocks; `=` aligned within a block and within a
run of consecutive top-level declarations of the same keyword; one space
around binary operators; lists, maps and calls on one line when they fit in
100 columns, otherwise one item per line with trailing commas. Numbers and
strings are kept exactly as written; nothing is reordered; blank lines
between declarations (and between fields) are kept, collapsed to one.

Comments are kept. Each one attaches to the nearest syntactic slot: trailing
an item on the same line, leading the next item, after an opening bracket, or
before a closing one. A comment inside an expression that has no such slot
(say, between `1500 *` and `scale` across lines) moves to its own line above
the field or declaration — the only edit `fmt` makes to comment placement,
and a stable one, which keeps `fmt` idempotent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tunix_dsl.grammar import ast
from tunix_dsl.grammar.diagnostics import TnxError
from tunix_dsl.grammar.parser import parse_module
from tunix_dsl.grammar.source import clean_source

WIDTH = 100
INDENT = "  "
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2}
_ATOM = 3


def format_source(text: str, file: str = "<stdin>") -> str:
    """The canonical layout of `text`. Raises `TnxError` if it does not parse.

    The output is UTF-8 text with `\n` line breaks and no byte-order mark, whatever
    the input used (CRLF, CR, a BOM), so a file and the same text on stdin format
    alike.
    """
    text = clean_source(text)
    module, diagnostics = parse_module(text, file)
    if module is None:
        raise TnxError(diagnostics)
    return _Formatter(text).module(module)


@dataclass
class _Slots:
    """Comments attached to one container (module, block or collection)."""

    header: list[ast.Comment] = field(default_factory=list)
    leading: dict[int, list[ast.Comment]] = field(default_factory=dict)
    trailing: dict[int, ast.Comment] = field(default_factory=dict)
    dangling: list[ast.Comment] = field(default_factory=list)


def _distribute(comments: list[ast.Comment], items: list, open_line: int) -> _Slots:
    """Attach each comment to a slot around `items` (anything with a `.span`)."""
    slots = _Slots()
    for comment in sorted(comments, key=lambda c: c.span.start):
        start = comment.span.start
        before = [i for i, item in enumerate(items) if item.span.end <= start]
        prev = before[-1] if before else None
        after = [i for i, item in enumerate(items) if item.span.end > start]
        if prev is not None and items[prev].span.end_line == comment.span.line \
                and prev not in slots.trailing:
            slots.trailing[prev] = comment
        elif prev is None and comment.span.line == open_line:
            slots.header.append(comment)
        elif after:
            slots.leading.setdefault(after[0], []).append(comment)
        else:
            slots.dangling.append(comment)
    return slots


def _items(expr: ast.ListExpr | ast.MapExpr | ast.Call) -> tuple:
    if isinstance(expr, ast.ListExpr):
        return expr.items
    if isinstance(expr, ast.MapExpr):
        return expr.entries
    return expr.args


_COLLECTIONS = (ast.ListExpr, ast.MapExpr, ast.Call)


def _prec(expr: ast.Expr) -> int:
    return _PRECEDENCE[expr.op] if isinstance(expr, ast.BinOp) else _ATOM


def _chain(expr: ast.BinOp) -> tuple[ast.Expr, list[ast.BinOp]]:
    """(first operand, links innermost first) of a left-nested chain `a + b - c ...`."""
    links = []
    node: ast.Expr = expr
    while isinstance(node, ast.BinOp):
        links.append(node)
        node = node.left
    links.reverse()
    return node, links


class _Formatter:
    def __init__(self, text: str):
        self.text = text
        self.collection_slots: dict[int, _Slots] = {}

    # ---------------------------------------------------------------- comments

    def claim(self, expr: ast.Expr, comments: list[ast.Comment]) -> list[ast.Comment]:
        """Give each comment inside a collection of `expr` to the innermost one; return the others.

        A loop over `ast.walk`, which visits a collection before the ones inside
        it, so a later (inner) owner replaces an earlier (outer) one.
        """
        if not comments:
            return comments
        owner: dict[int, ast.ListExpr | ast.MapExpr | ast.Call] = {}
        for node in ast.walk(expr):
            if isinstance(node, _COLLECTIONS):
                for comment in comments:
                    if node.span.start < comment.span.start < node.span.end:
                        owner[id(comment)] = node
        claimed: dict[int, list[ast.Comment]] = {}
        collections: dict[int, ast.ListExpr | ast.MapExpr | ast.Call] = {}
        for comment in comments:
            holder = owner.get(id(comment))
            if holder is not None:
                claimed.setdefault(id(holder), []).append(comment)
                collections[id(holder)] = holder
        for key, inside in claimed.items():
            holder = collections[key]
            open_line = holder.func_span.end_line if isinstance(holder, ast.Call) else holder.span.line
            self.collection_slots[key] = _distribute(inside, list(_items(holder)), open_line)
        return [c for c in comments if id(c) not in owner]

    def has_comments(self, expr: ast.Expr) -> bool:
        return any(id(node) in self.collection_slots for node in ast.walk(expr))

    # ---------------------------------------------------------------- module and blocks

    def module(self, module: ast.Module) -> str:
        decls = list(module.decls)
        top_level: list[ast.Comment] = []
        block_slots: dict[int, _Slots] = {}
        for comment_group, decl in self._comments_by_decl(module):
            if isinstance(decl, ast.PipelineDecl | ast.StageDecl | ast.EvalDecl):
                rest = comment_group
                for f in decl.fields:
                    rest = self.claim(f.value, rest)
                block_slots[id(decl)] = _distribute(rest, list(decl.fields), decl.span.line)
            elif isinstance(decl, ast.ParamDecl | ast.ValueDecl):
                top_level += self.claim(decl.value, comment_group)
            else:
                top_level += comment_group
        in_decls = {id(c) for group, _ in self._comments_by_decl(module) for c in group}
        top_level += [c for c in module.comments if id(c) not in in_decls]
        slots = _distribute(top_level, decls, open_line=0)

        widths = self._group_widths(decls, slots)
        out: _Lines = _Lines()
        for i, decl in enumerate(decls):
            for comment in slots.leading.get(i, []):
                out.add(comment.text, comment.span.line, comment.span.line)
            text = self.decl(decl, widths[i], block_slots.get(id(decl)))
            trailing = slots.trailing.get(i)
            out.add(text + (f"  {trailing.text}" if trailing else ""),
                    decl.span.line, decl.span.end_line)
        for comment in slots.dangling:
            out.add(comment.text, comment.span.line, comment.span.line)
        return out.joined("") + ("\n" if out.lines else "")

    def _comments_by_decl(self, module: ast.Module) -> list[tuple[list[ast.Comment], ast.Decl]]:
        return [([c for c in module.comments if d.span.start <= c.span.start < d.span.end], d)
                for d in module.decls]

    def _group_widths(self, decls: list[ast.Decl], slots: _Slots) -> list[int]:
        """Name width per declaration: the widest name in its run of same-keyword decls."""
        def key(decl: ast.Decl) -> str | None:
            if isinstance(decl, ast.ValueDecl):
                return decl.keyword
            return "param" if isinstance(decl, ast.ParamDecl) else None

        widths = [0] * len(decls)
        start = 0
        for i in range(1, len(decls) + 1):
            breaks = (
                i == len(decls) or key(decls[i]) is None or key(decls[i]) != key(decls[i - 1])
                or i in slots.leading or decls[i].span.line - decls[i - 1].span.end_line > 1
            )
            if breaks:
                run = decls[start:i]
                width = max(len(getattr(d, "name", "")) for d in run)
                widths[start:i] = [width] * len(run)
                start = i
        return widths

    def decl(self, decl: ast.Decl, name_width: int, slots: _Slots | None) -> str:
        if isinstance(decl, ast.PipelineDecl):
            return self.block(f"pipeline {decl.name}", decl, slots)
        if isinstance(decl, ast.StageDecl):
            return self.block(f"stage {decl.name}: {decl.kind}", decl, slots)
        if isinstance(decl, ast.EvalDecl):
            return self.block(f"eval {decl.name}", decl, slots)
        if isinstance(decl, ast.ExportDecl):
            return (f"export {decl.source.dotted} to {self.source_of(decl.destination)}"
                    f" as {self.source_of(decl.format)}")
        keyword = decl.keyword if isinstance(decl, ast.ValueDecl) else "param"
        prefix = f"{keyword} {decl.name.ljust(name_width)} = "
        return prefix + self.expr(decl.value, "", len(prefix))

    def block(self, header: str, decl, slots: _Slots | None) -> str:
        slots = slots or _Slots()
        fields = decl.fields
        if not fields and not slots.header and not slots.dangling:
            return header + " {}"
        head = header + " {" + "".join(f"  {c.text}" for c in slots.header)
        out = _Lines()
        width = max((len(f.name) for f in fields), default=0)
        for i, f in enumerate(fields):
            for comment in slots.leading.get(i, []):
                out.add(INDENT + comment.text, comment.span.line, comment.span.line)
            prefix = f"{INDENT}{f.name.ljust(width)} = "
            text = prefix + self.expr(f.value, INDENT, len(prefix))
            trailing = slots.trailing.get(i)
            out.add(text + (f"  {trailing.text}" if trailing else ""),
                    f.span.line, f.span.end_line)
        for comment in slots.dangling:
            out.add(INDENT + comment.text, comment.span.line, comment.span.line)
        return head + "\n" + out.joined("") + "\n}"

    # ---------------------------------------------------------------- expressions

    def source_of(self, node: ast.String) -> str:
        return self.text[node.span.start:node.span.end]

    def flat(self, expr: ast.Expr) -> str:
        if isinstance(expr, ast.Number):
            return expr.text
        if isinstance(expr, ast.String):
            return self.source_of(expr)
        if isinstance(expr, ast.Bool):
            return "true" if expr.value else "false"
        if isinstance(expr, ast.Ref):
            return expr.dotted
        if isinstance(expr, ast.ListExpr):
            return "[" + ", ".join(self.flat(i) for i in expr.items) + "]"
        if isinstance(expr, ast.MapExpr):
            if not expr.entries:
                return "{}"
            return "{ " + ", ".join(f"{e.key} = {self.flat(e.value)}" for e in expr.entries) + " }"
        if isinstance(expr, ast.Call):
            return f"{expr.func}(" + ", ".join(self.arg(a, self.flat(a.value))
                                                for a in expr.args) + ")"
        if isinstance(expr, ast.UnaryOp):
            inner = self.flat(expr.operand)
            nested = isinstance(expr.operand, ast.BinOp | ast.UnaryOp)
            return expr.op + (f"({inner})" if nested else inner)
        assert isinstance(expr, ast.BinOp)
        leftmost, links = _chain(expr)
        text = self.flat(leftmost)
        for link in links:
            left, right = self.operands(link, text, self.flat(link.right))
            text = f"{left} {link.op} {right}"
        return text

    @staticmethod
    def arg(arg: ast.Arg, value: str) -> str:
        return f"{arg.name} = {value}" if arg.name is not None else value

    @staticmethod
    def operands(expr: ast.BinOp, left: str, right: str) -> tuple[str, str]:
        """Parenthesise operands only where precedence (left associativity) needs it."""
        if _prec(expr.left) < _PRECEDENCE[expr.op]:
            left = f"({left})"
        if _prec(expr.right) <= _PRECEDENCE[expr.op]:
            right = f"({right})"
        return left, right

    def expr(self, expr: ast.Expr, indent: str, used: int, suffix: int = 0) -> str:
        """`expr` laid out at column `used` of a line indented by `indent`."""
        if not self.has_comments(expr):
            flat = self.flat(expr)
            if used + len(flat) + suffix <= WIDTH or not isinstance(expr, (*_COLLECTIONS, ast.BinOp)):
                return flat
        if isinstance(expr, _COLLECTIONS):
            return self.broken(expr, indent)
        if isinstance(expr, ast.BinOp):
            return self.chain(expr, indent, used, suffix)
        assert isinstance(expr, ast.UnaryOp)  # only a collection inside can carry comments
        inner = self.expr(expr.operand, indent, used + 2, suffix)
        nested = isinstance(expr.operand, ast.BinOp | ast.UnaryOp)
        return expr.op + (f"({inner})" if nested else inner)

    def chain(self, expr: ast.BinOp, indent: str, used: int, suffix: int) -> str:
        """A chain of binary operators that does not fit flat, in a loop (any length).

        Each operand after the first starts where the text before it ends. The
        longest inner part of the chain that fits flat (and holds no comments)
        is written flat; its width is known from the operands' widths alone.
        """
        leftmost, links = _chain(expr)
        width = len(self.flat(leftmost))
        commented = self.has_comments(leftmost)
        fitting = -1  # links[:fitting + 1] fit flat after `used`
        for i, link in enumerate(links):
            right_width = len(self.flat(link.right))
            width += len(link.op) + 2 + right_width + 2 * (_prec(link.right) <= _PRECEDENCE[link.op])
            width += 2 * (_prec(link.left) < _PRECEDENCE[link.op])
            commented = commented or self.has_comments(link.right)
            last = i == len(links) - 1
            if commented or used + width + (suffix if last else 0) > WIDTH:
                break
            fitting = i
        if fitting >= 0:
            text = self.flat(links[fitting])
        else:
            text = self.expr(leftmost, indent, used)
        for i in range(fitting + 1, len(links)):
            link = links[i]
            after = len(text) - text.rfind("\n") - 1 + len(link.op) + 2
            right = self.expr(link.right, indent, after, suffix if i == len(links) - 1 else 0)
            left, right = self.operands(link, text, right)
            text = f"{left} {link.op} {right}"
        return text

    def broken(self, expr: ast.ListExpr | ast.MapExpr | ast.Call, indent: str) -> str:
        """One item per line, trailing commas, comments in their slots."""
        slots = self.collection_slots.get(id(expr), _Slots())
        if isinstance(expr, ast.ListExpr):
            opener, closer = "[", "]"
        elif isinstance(expr, ast.MapExpr):
            opener, closer = "{", "}"
        else:
            opener, closer = f"{expr.func}(", ")"
        inner = indent + INDENT
        lines = [opener + "".join(f"  {c.text}" for c in slots.header)]
        for i, item in enumerate(_items(expr)):
            lines += [inner + c.text for c in slots.leading.get(i, [])]
            if isinstance(item, ast.MapEntry):
                prefix = f"{item.key} = "
            elif isinstance(item, ast.Arg) and item.name is not None:
                prefix = f"{item.name} = "
            else:
                prefix = ""
            value = item.value if isinstance(item, ast.MapEntry | ast.Arg) else item
            text = inner + prefix + self.expr(value, inner, len(inner) + len(prefix), 1) + ","
            trailing = slots.trailing.get(i)
            lines.append(text + (f"  {trailing.text}" if trailing else ""))
        lines += [inner + c.text for c in slots.dangling]
        lines.append(indent + closer)
        return "\n".join(lines)


class _Lines:
    """Output lines with source positions, keeping at most one blank line between units."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.last_end: int | None = None

    def add(self, text: str, first_line: int, last_line: int) -> None:
        if self.last_end is not None and first_line - self.last_end > 1:
            self.lines.append("")
        self.lines.append(text)
        self.last_end = max(last_line, self.last_end or 0)

    def joined(self, _: str) -> str:
        return "\n".join(self.lines)
