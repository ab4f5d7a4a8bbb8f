"""Public Python API: `load(path)` and `parse(text)` → a checked `Pipeline`.

Neither raises on bad input: problems are diagnostics on the returned
pipeline (`pipeline.ok`, `pipeline.diagnostics`). A file that cannot be read
gives TNX009 and `pipeline.io_error = True` (the CLI exits 2 for it, 1 for
other errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tunix_dsl.check.checker import _empty, check_module
from tunix_dsl.check.ir import Pipeline
from tunix_dsl.grammar.diagnostics import Diagnostic
from tunix_dsl.grammar.spans import Span
from tunix_dsl.rules.registry import diagnostic

Overrides = Mapping[str, str] | None


def parse(text: str, file: str = "<string>", overrides: Overrides = None,
          base_dir: str | Path | None = None) -> Pipeline:
    """Parse and check `.tnx` source text.

    `overrides` are `--set` values (`{"scale": "0.1"}`), parsed as .tnx
    literals and type-checked against the params they replace. Relative paths
    in the text resolve against `base_dir` (default: the file's directory, or
    the current directory for `<string>`).
    """
    from tunix_dsl.grammar.parser import parse_module
    from tunix_dsl.grammar.source import clean_source

    if base_dir is None:
        base_dir = Path(file).resolve().parent if not file.startswith("<") else Path.cwd()
    text = clean_source(text)  # positions count `\n` line breaks; sources hold this text
    module, syntax = parse_module(text, file)
    return check_module(module, file, {file: text}, overrides, Path(base_dir), syntax)


def load(path: str | Path, overrides: Overrides = None) -> Pipeline:
    """Read, parse and check a `.tnx` file."""
    from tunix_dsl.grammar.source import SourceError, read_source

    file = str(path)
    try:
        text = read_source(file)
    except SourceError as err:
        return _io_failure(file, err.reason)
    return parse(text, file, overrides)


def unreadable(file: str, reason: str) -> Diagnostic:
    """TNX009 for a source that cannot be read (`tunix_dsl.grammar.source.SourceError`)."""
    return diagnostic(
        "TNX009", f"cannot read `{file}`: {reason}", Span.unknown(file),
        help="pass an existing, readable .tnx file saved as UTF-8")


def _io_failure(file: str, reason: str) -> Pipeline:
    return _empty(file, Path.cwd(), {}, [unreadable(file, reason)], io_error=True)


__all__ = ["Pipeline", "load", "parse"]
