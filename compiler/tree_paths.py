"""Names of jax tree path entries, shared by the optimizer's decay mask and checkpoints."""

from __future__ import annotations

from typing import Any


def key_name(entry: Any) -> str:
    """One path entry as text: a `DictKey`'s key, a `GetAttrKey`'s name, a `SequenceKey`'s
    index (`jax.tree_util.keystr` would add brackets and dots)."""
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)
