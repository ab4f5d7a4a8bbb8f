"""The `.tnx` grammar and the one Lark parser built from it.

`tnx.lark` next to this file is the single source of truth for syntax. The
LALR tables are built once per process (and cached on disk by Lark between
processes, keyed by a hash of the grammar), so `tnx lint` starts fast.
"""

from __future__ import annotations

import functools
from pathlib import Path

from lark import Lark

GRAMMAR_PATH = Path(__file__).with_name("tnx.lark")


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return GRAMMAR_PATH.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def get_parser() -> Lark:
    """The LALR parser for `.tnx` (contextual lexer).

    Every token is kept in the tree (brackets, commas, `=`), so each node's span
    is that of its first and last token. That is what Lark's
    `propagate_positions` computes too, but doing it on demand in
    `tunix_dsl.parser` halves the time to parse a large file.
    """
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        keep_all_tokens=True,
        maybe_placeholders=True,
        cache=True,
    )
