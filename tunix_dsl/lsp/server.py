"""`tnx lsp`: the language server (pygls, JSON-RPC over stdin/stdout).

Diagnostics are the checker's own (`tunix_dsl.api.parse`, no `--set`),
published on open and save at once and on change after a short debounce;
hover, completion, definition, references and the outline come from the
tolerant scan (`tunix_dsl.lsp.scan`) so they work on a half-typed file;
formatting is `tnx fmt`.

The server must outlive any input: every handler runs inside `_guard`, which
logs a crash (with its traceback, to the client's log) and answers with an
empty result. Nothing here imports jax.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from lsprotocol import types as lsp
from pygls.lsp.server import LanguageServer
from pygls.uris import to_fs_path

from tunix_dsl import __version__
from tunix_dsl.check.ir import Pipeline
from tunix_dsl.lsp.complete import complete
from tunix_dsl.lsp.diagnostics import code_actions, to_lsp
from tunix_dsl.lsp.hover import hover_text
from tunix_dsl.lsp.navigate import definition, references, symbols
from tunix_dsl.lsp.positions import LineIndex
from tunix_dsl.lsp.scan import scan

# Seconds of quiet after an edit before the file is checked: long enough to
# coalesce a burst of keystrokes, short enough that diagnostics arrive within
# 100 ms of the last one (bench/lsp_latency.py measures it).
DEBOUNCE_S = 0.03
TRIGGERS = [".", ":", '"', "=", "(", "[", ","]

log = logging.getLogger("tnx.lsp")
F = TypeVar("F", bound=Callable[..., Any])


class TnxLanguageServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("tnx", __version__,
                         text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.checked: dict[str, Pipeline] = {}  # uri → the last check of its text
        self.pending: dict[str, asyncio.TimerHandle] = {}
        self.crashes = 0

    # ----------------------------------------------------------------- helpers
    def report_crash(self, where: str) -> None:
        self.crashes += 1
        text = f"tnx lsp: internal error in {where} (answered with an empty result)\n" \
               f"{traceback.format_exc()}"
        log.error(text)
        try:
            self.window_log_message(lsp.LogMessageParams(lsp.MessageType.Error, text))
        except Exception:  # the client may be gone; the server must still not die
            log.exception("could not send the crash report")

    def encoding(self) -> str:
        value = self.workspace.position_encoding if self.workspace else None
        return str(getattr(value, "value", value) or "utf-16")

    def document(self, uri: str) -> tuple[str, LineIndex]:
        text = self.workspace.get_text_document(uri).source
        return text, LineIndex(text, self.encoding())

    def offset(self, uri: str, position: lsp.Position) -> tuple[str, LineIndex, int]:
        text, index = self.document(uri)
        return text, index, index.offset(position)

    # ------------------------------------------------------------- diagnostics
    def schedule(self, uri: str, delay: float) -> None:
        pending = self.pending.pop(uri, None)
        if pending is not None:
            pending.cancel()
        loop = asyncio.get_running_loop()
        self.pending[uri] = loop.call_later(delay, self.check_now, uri)

    def check_now(self, uri: str) -> None:
        pending = self.pending.pop(uri, None)
        if pending is not None:  # a save or open supersedes a debounced check
            pending.cancel()
        try:
            self.publish(uri)
        except Exception:
            self.report_crash("diagnostics")
            self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, []))

    def publish(self, uri: str) -> None:
        from tunix_dsl.api import parse

        document = self.workspace.get_text_document(uri)
        text = document.source
        file, base_dir = _file_of(uri)
        pipeline = parse(text, file, base_dir=base_dir)
        self.checked[uri] = pipeline
        index = LineIndex(text, self.encoding())
        diagnostics = to_lsp(pipeline.diagnostics, file, uri, text, index, scan(text))
        self.text_document_publish_diagnostics(
            lsp.PublishDiagnosticsParams(uri, diagnostics, version=document.version))

    def forget(self, uri: str) -> None:
        pending = self.pending.pop(uri, None)
        if pending is not None:
            pending.cancel()
        self.checked.pop(uri, None)
        self.text_document_publish_diagnostics(lsp.PublishDiagnosticsParams(uri, []))


def _file_of(uri: str) -> tuple[str, Path]:
    """The file name diagnostics carry, and the directory relative paths resolve against."""
    path = to_fs_path(uri) if uri.startswith("file:") else None
    if path:
        return path, Path(path).parent
    return uri, Path.cwd()


def _guard(server: TnxLanguageServer, where: str, empty: Callable[[], Any]) -> Callable[[F], F]:
    """Run a handler; on any exception log it and answer `empty()` instead."""
    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def guarded(ls: TnxLanguageServer, params: Any) -> Any:
            try:
                return fn(ls, params)
            except Exception:
                server.report_crash(where)
                return empty()
        return guarded  # type: ignore[return-value]
    return wrap


def build_server() -> TnxLanguageServer:
    server = TnxLanguageServer()

    def feature(name: str, empty: Callable[[], Any] = lambda: None, options: Any = None):
        def register(fn: F) -> F:
            server.feature(name, options)(_guard(server, name, empty)(fn))
            return fn
        return register

    @feature(lsp.INITIALIZED)
    def initialized(ls: TnxLanguageServer, params: lsp.InitializedParams) -> None:
        from tunix_dsl.api import parse

        # Build the Lark parser and the common pydantic validators now, not on the first edit.
        parse("tokenizer t = bytes()\nmodel m = transformer(preset = \"pico\", tokenizer = t)\n")

    @feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: TnxLanguageServer, params: lsp.DidOpenTextDocumentParams) -> None:
        ls.check_now(params.text_document.uri)

    @feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: TnxLanguageServer, params: lsp.DidChangeTextDocumentParams) -> None:
        ls.schedule(params.text_document.uri, DEBOUNCE_S)

    @feature(lsp.TEXT_DOCUMENT_DID_SAVE)
    def did_save(ls: TnxLanguageServer, params: lsp.DidSaveTextDocumentParams) -> None:
        ls.check_now(params.text_document.uri)

    @feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: TnxLanguageServer, params: lsp.DidCloseTextDocumentParams) -> None:
        ls.forget(params.text_document.uri)

    @feature(lsp.TEXT_DOCUMENT_HOVER)
    def hover(ls: TnxLanguageServer, params: lsp.HoverParams) -> lsp.Hover | None:
        uri = params.text_document.uri
        text, index, offset = ls.offset(uri, params.position)
        outline = scan(text)
        content = hover_text(text, outline, offset, ls.checked.get(uri))
        if content is None:
            return None
        occ = outline.at(offset)
        where = index.range(occ.start, occ.end) if occ else None
        return lsp.Hover(lsp.MarkupContent(lsp.MarkupKind.Markdown, content), where)

    @feature(lsp.TEXT_DOCUMENT_COMPLETION, lambda: [],
             lsp.CompletionOptions(trigger_characters=TRIGGERS))
    def completion(ls: TnxLanguageServer, params: lsp.CompletionParams) -> list[lsp.CompletionItem]:
        text, index, offset = ls.offset(params.text_document.uri, params.position)
        return complete(text, offset, index)

    @feature(lsp.TEXT_DOCUMENT_DEFINITION)
    def goto_definition(ls: TnxLanguageServer, params: lsp.DefinitionParams) -> lsp.Location | None:
        uri = params.text_document.uri
        text, index, offset = ls.offset(uri, params.position)
        found = definition(scan(text), offset)
        return lsp.Location(uri, index.range(*found)) if found else None

    @feature(lsp.TEXT_DOCUMENT_REFERENCES, lambda: [])
    def find_references(ls: TnxLanguageServer, params: lsp.ReferenceParams) -> list[lsp.Location]:
        uri = params.text_document.uri
        text, index, offset = ls.offset(uri, params.position)
        found = references(scan(text), offset, params.context.include_declaration)
        return [lsp.Location(uri, index.range(start, end)) for start, end in found]

    @feature(lsp.TEXT_DOCUMENT_DOCUMENT_SYMBOL, lambda: [])
    def document_symbols(ls: TnxLanguageServer,
                         params: lsp.DocumentSymbolParams) -> list[lsp.DocumentSymbol]:
        text, index = ls.document(params.text_document.uri)
        return symbols(scan(text), index)

    @feature(lsp.TEXT_DOCUMENT_FORMATTING, lambda: [])
    def formatting(ls: TnxLanguageServer,
                   params: lsp.DocumentFormattingParams) -> list[lsp.TextEdit]:
        from tunix_dsl.grammar.diagnostics import TnxError
        from tunix_dsl.grammar.formatter import format_source

        uri = params.text_document.uri
        text, index = ls.document(uri)
        try:
            formatted = format_source(text, _file_of(uri)[0])
        except TnxError:  # a syntax error: the diagnostics already say where
            return []
        return [] if formatted == text else [lsp.TextEdit(index.whole(), formatted)]

    @feature(lsp.TEXT_DOCUMENT_CODE_ACTION, lambda: [],
             lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix]))
    def code_action(ls: TnxLanguageServer, params: lsp.CodeActionParams) -> list[lsp.CodeAction]:
        return code_actions(params.text_document.uri, params.context.diagnostics)

    return server


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="tnx lsp: %(message)s")
    build_server().start_io()
    return 0
