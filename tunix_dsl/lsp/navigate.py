"""Go to definition, find references and the document outline, from the tolerant scan.

All names share one namespace (`tunix_dsl.check.resolve`), so a reference's first
part names a declaration; `tune.model` is a use of stage `tune`.
"""

from __future__ import annotations

from lsprotocol import types as lsp

from tunix_dsl.lsp.outline import Decl, Outline
from tunix_dsl.lsp.positions import LineIndex

_SYMBOL_KIND = {
    "pipeline": lsp.SymbolKind.Module,
    "param": lsp.SymbolKind.Constant,
    "tokenizer": lsp.SymbolKind.Class,
    "model": lsp.SymbolKind.Class,
    "dataset": lsp.SymbolKind.Array,
    "reward": lsp.SymbolKind.Function,
    "tool": lsp.SymbolKind.Function,
    "environment": lsp.SymbolKind.Object,
    "stage": lsp.SymbolKind.Method,
    "eval": lsp.SymbolKind.Event,
    "export": lsp.SymbolKind.Interface,
}


def _target(outline: Outline, offset: int) -> str | None:
    """The declared name the cursor is on: a declaration's name or a reference's first part."""
    occ = outline.at(offset)
    if occ is None:
        return None
    if occ.kind == "decl":
        return occ.name
    if occ.kind == "ref":
        return occ.parts[0]
    return None


def definition(outline: Outline, offset: int) -> tuple[int, int] | None:
    """(start, end) of the declared name the cursor refers to."""
    name = _target(outline, offset)
    decl = outline.decl(name) if name else None
    return (decl.name_start, decl.name_end) if decl else None


def references(outline: Outline, offset: int, include_declaration: bool) -> list[tuple[int, int]]:
    """Every use of the name under the cursor (and its declaration, if asked)."""
    name = _target(outline, offset)
    if name is None:
        return []
    found = []
    for occ in outline.occurrences:
        if occ.kind == "ref" and occ.index == 0 and occ.name == name:
            found.append((occ.start, occ.end))
        elif include_declaration and occ.kind == "decl" and occ.name == name:
            found.append((occ.start, occ.end))
    return sorted(found)


def symbols(outline: Outline, index: LineIndex) -> list[lsp.DocumentSymbol]:
    """Declarations (stages show their kind) with their fields as children."""
    result = []
    for decl in outline.decls:
        result.append(_symbol(decl, index))
    return result


def _symbol(decl: Decl, index: LineIndex) -> lsp.DocumentSymbol:
    if decl.keyword == "export":
        name, selection = "export", index.range(decl.start, decl.start + len("export"))
    else:
        name, selection = decl.name or decl.keyword, index.range(decl.name_start, decl.name_end)
    whole = index.range(decl.start, max(decl.end, decl.name_end))
    children = [
        lsp.DocumentSymbol(name=f.name, kind=lsp.SymbolKind.Field,
                           range=index.range(f.start, f.end),
                           selection_range=index.range(f.start, f.end))
        for f in decl.fields
    ]
    detail = f"{decl.keyword}: {decl.kind}" if decl.kind else decl.keyword
    return lsp.DocumentSymbol(name=name, kind=_SYMBOL_KIND.get(decl.keyword, lsp.SymbolKind.Object),
                              range=whole, selection_range=selection, detail=detail,
                              children=children or None)
