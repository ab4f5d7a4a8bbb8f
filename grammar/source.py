"""Reading `.tnx` sources: one reader for every verb, and the text positions refer to.

`read_source` returns a file's (or stdin's) text as written, or raises
`SourceError` with the reason in words, so an unreadable file gets the same
message (TNX009) from `lint`, `fmt`, `graph`, `run` and `plan`.
`clean_source` turns CRLF and CR-only line breaks into LF: the parser, the
formatter and the diagnostics all count lines that way, and `tnx fmt` writes
it, so a file and the same text on stdin give the same result.
"""

from __future__ import annotations

import sys
from pathlib import Path


def clean_source(text: str) -> str:
    """`text` with CRLF and CR-only line breaks as LF, as the parser's positions count them."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


class SourceError(Exception):
    """A `.tnx` source that cannot be read; `reason` says why, in words."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"cannot read `{path}`: {reason}")
        self.path = path
        self.reason = reason


def read_source(path: str) -> str:
    """The text of a `.tnx` file (`-`: standard input), as written: no newline translation.

    The one reader for every verb, so an unreadable file gets the same message
    everywhere. Raises `SourceError` for a missing file, a directory, a name the
    OS refuses, a permission problem, or bytes that are not UTF-8.
    """
    if path == "-" and not hasattr(sys.stdin, "buffer"):  # a text stream put in place of stdin
        return sys.stdin.read()
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except FileNotFoundError:
        raise SourceError(path, "no such file") from None
    except IsADirectoryError:
        raise SourceError(path, "is a directory, not a .tnx file") from None
    except PermissionError:
        raise SourceError(path, "permission denied") from None
    except OSError as err:
        reason = err.strerror or str(err)
        raise SourceError(path, reason[:1].lower() + reason[1:]) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise SourceError(path, f"not UTF-8 text (byte 0x{data[err.start]:02x} on line {line}, "
                                f"offset {err.start})") from None
