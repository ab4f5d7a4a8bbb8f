"""Public Python API: `load(path)` and `parse(text)` → a checked `Pipeline`.

Neither raises on bad input: problems are diagnostics on the returned
pipeline (`pipeline.ok`, `pipeline.diagnostics`). A file that cannot be read
gives TNX009 and `pipeline.io_error = True` (the CLI exits 2 for it, 1 for
other errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tunix_dsl.checker import _empty, check_module
from tunix_dsl.diagnostics import Diagnostic
from tunix_dsl.ir import Pipeline
from tunix_dsl.rules.registry import diagnostic
from tunix_dsl.spans import Span

Overrides = Mapping[str, str] | None


def parse(text: str, file: str = "<string>", overrides: Overrides = None,
          base_dir: str | Path | None = None) -> Pipeline:
    """Parse and check `.tnx` source text.

    `overrides` are `--set` values (`{"scale": "0.1"}`), parsed as .tnx
    literals and type-checked against the params they replace. Relative paths
    in the text resolve against `base_dir` (default: the file's directory, or
    the current directory for `<string>`).
    """
    from tunix_dsl.parser import parse_module

    if base_dir is None:
        base_dir = Path(file).resolve().parent if not file.startswith("<") else Path.cwd()
    module, syntax = parse_module(text, file)
    return check_module(module, file, {file: text}, overrides, Path(base_dir), syntax)


def load(path: str | Path, overrides: Overrides = None) -> Pipeline:
    """Read, parse and check a `.tnx` file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return _io_failure(file, "no such file")
    except IsADirectoryError:
        return _io_failure(file, "is a directory, not a .tnx file")
    except UnicodeDecodeError as e:
        return _io_failure(file, f"not UTF-8 text ({e.reason} at byte {e.start})")
    except OSError as e:
        return _io_failure(file, e.strerror or str(e))
    return parse(text, file, overrides)


def _io_failure(file: str, reason: str) -> Pipeline:
    diags: list[Diagnostic] = [diagnostic(
        "TNX009", f"cannot read `{file}`: {reason}", Span.unknown(file),
        help="check the path; `tnx lint` takes .tnx files")]
    return _empty(file, Path.cwd(), {}, diags, io_error=True)


__all__ = ["Pipeline", "load", "parse"]
