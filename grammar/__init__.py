"""The text → AST phase: the `.tnx` grammar and everything that reads text.

    tnx.lark        the grammar, the single source of truth for syntax
    spans, source   positions (file, line, column) and source files
    diagnostics     the located messages every phase reports
    parser          text → AST (`ast`), with `syntax_errors` explaining Lark's errors
    formatter       AST + comments → canonical text (`tnx fmt`)

Nothing here imports the later phases (`tunix_dsl.check`, compiler, runtime).

This module builds the one Lark parser. The LALR tables are built once per
process, and cached on disk between processes (in `~/.cache/tunix-dsl/`,
checked against a hash of the grammar), so `tnx lint` starts fast.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

from lark import Lark

GRAMMAR_PATH = Path(__file__).with_name("tnx.lark")


@functools.lru_cache(maxsize=1)
def grammar_text() -> str:
    return GRAMMAR_PATH.read_text(encoding="utf-8")


def _cache_file() -> str | bool:
    """Where Lark keeps the built tables: a user-private directory, never shared /tmp.

    Lark's cache is a pickle; one in a world-writable directory could be planted
    by another user. Without a usable private directory the tables are rebuilt
    (~50 ms).
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    directory = Path(base) / "tunix-dsl"
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK) or directory.stat().st_uid != os.getuid():
            return False
    except (OSError, AttributeError):  # AttributeError: no getuid on this platform
        return False
    digest = hashlib.sha256(grammar_text().encode()).hexdigest()[:16]
    return str(directory / f"tnx-grammar-{digest}.lark-cache")


@functools.lru_cache(maxsize=1)
def get_parser() -> Lark:
    """The LALR parser for `.tnx` (contextual lexer).

    Every token is kept in the tree (brackets, commas, `=`), so each node's span
    is that of its first and last token. That is what Lark's
    `propagate_positions` computes too, but doing it on demand in
    `tunix_dsl.grammar.parser` halves the time to parse a large file.
    """
    return Lark(
        grammar_text(),
        parser="lalr",
        lexer="contextual",
        keep_all_tokens=True,
        maybe_placeholders=True,
        cache=_cache_file(),
    )
