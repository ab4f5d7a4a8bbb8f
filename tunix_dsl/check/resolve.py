"""Name resolution: the symbol table of a module and did-you-mean suggestions.

All named declarations (params, tokenizers, models, datasets, rewards,
tools, environments, stages, evals) share one namespace; declarations are order-independent, so
the table is built before anything is evaluated.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from tunix_dsl.grammar import ast
from tunix_dsl.grammar.diagnostics import Diagnostic, Label
from tunix_dsl.grammar.spans import Span
from tunix_dsl.rules.registry import diagnostic


@dataclass(frozen=True)
class Symbol:
    name: str
    keyword: str  # param | tokenizer | model | dataset | reward | tool | environment | stage | eval
    decl: ast.Decl
    name_span: Span
    index: int  # position in the file, for stable ordering

    @property
    def node(self) -> str:
        """Node id in the dataflow graph: `model:tiny`, `stage:base`."""
        return f"{self.keyword}:{self.name}"

    def describe(self) -> str:
        return f"{self.keyword} `{self.name}`"


@dataclass
class SymbolTable:
    symbols: dict[str, Symbol]
    pipeline: ast.PipelineDecl | None
    exports: list[ast.ExportDecl]

    def get(self, name: str) -> Symbol | None:
        return self.symbols.get(name)

    def of_keyword(self, keyword: str) -> list[Symbol]:
        return [s for s in self.symbols.values() if s.keyword == keyword]


def suggest(name: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to `name`, if any is close enough to be a typo."""
    return _suggest(name, tuple(candidates))


@functools.lru_cache(maxsize=256)
def _suggest(name: str, candidates: tuple[str, ...]) -> str | None:
    # Cached: a name misspelt in many places (or used thousands of times in one
    # expression) is compared with every candidate once, not once per use.
    same_but_case = [c for c in candidates if c.lower() == name.lower()]
    if same_but_case:  # `SFT` for `sft`: difflib alone scores case differences as misses
        return same_but_case[0]
    matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    if not matches:
        lowered = {c.lower(): c for c in candidates}
        matches = [lowered[m] for m in difflib.get_close_matches(name.lower(), lowered, n=1,
                                                                 cutoff=0.6)]
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str], what: str = "") -> str | None:
    """Help text: "did you mean `x`?", or the list of choices when none is close."""
    candidates = list(dict.fromkeys(candidates))
    best = suggest(name, candidates)
    if best is not None:
        return f"did you mean `{best}`?"
    if candidates and len(candidates) <= 12:
        return f"{what or 'expected one of'}: " + ", ".join(f"`{c}`" for c in candidates)
    return None


def _named(decl: ast.Decl) -> tuple[str, str, Span] | None:
    if isinstance(decl, ast.ParamDecl):
        return "param", decl.name, decl.name_span
    if isinstance(decl, ast.ValueDecl):
        return decl.keyword, decl.name, decl.name_span
    if isinstance(decl, ast.StageDecl):
        return "stage", decl.name, decl.name_span
    if isinstance(decl, ast.EvalDecl):
        return "eval", decl.name, decl.name_span
    return None


def collect(module: ast.Module, diags: list[Diagnostic]) -> SymbolTable:
    """Build the symbol table; a second definition of a name is TNX103."""
    symbols: dict[str, Symbol] = {}
    pipeline: ast.PipelineDecl | None = None
    exports: list[ast.ExportDecl] = []
    seen_destinations: dict[str, ast.ExportDecl] = {}
    for index, decl in enumerate(module.decls):
        if isinstance(decl, ast.PipelineDecl):
            if pipeline is not None:
                diags.append(diagnostic(
                    "TNX103", "more than one `pipeline` block", decl.name_span,
                    label="second pipeline block",
                    secondary=[Label(pipeline.name_span, "first defined here")],
                    help="merge the settings into one `pipeline` block"))
                continue
            pipeline = decl
            continue
        if isinstance(decl, ast.ExportDecl):
            first = seen_destinations.get(decl.destination.value)
            if first is not None:
                diags.append(diagnostic(
                    "TNX103", f"two exports write to \"{decl.destination.value}\"",
                    decl.destination.span, label="second export here",
                    secondary=[Label(first.destination.span, "first export here")],
                    help="give each export its own destination directory"))
                continue
            seen_destinations[decl.destination.value] = decl
            exports.append(decl)
            continue
        named = _named(decl)
        if named is None:
            continue
        keyword, name, span = named
        first_symbol = symbols.get(name)
        if first_symbol is not None:
            diags.append(diagnostic(
                "TNX103", f"the name `{name}` is defined more than once", span,
                label=f"{keyword} `{name}` redefined here",
                secondary=[Label(first_symbol.name_span,
                                 f"first defined here as {first_symbol.keyword}")],
                help="names are shared by every declaration; rename one of them"))
            continue
        symbols[name] = Symbol(name, keyword, decl, span, index)
    return SymbolTable(symbols, pipeline, exports)
