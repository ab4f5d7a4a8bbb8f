"""2,000 random edits of a real example never kill `tnx lsp` nor make a handler crash.

Incremental edits (random insertions of syntax fragments, non-ASCII text and
deletions) go to the real server over stdio; every 10th edit is followed by
a hover, completion, definition, references, symbols or formatting request at
a random place, every 25th by a save (which checks the text at once). At the end the server's diagnostics must be the checker's
for the final text (so its copy of the document kept in sync) and its log
must hold no internal error.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

from tunix_dsl.api import parse

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quickstart.tnx"
EDITS = 2000
FRAGMENTS = ["{", "}", "(", ")", "[", "]", '"', "=", ",", ".", ":", "#", "\n", " ", "stage ",
             "model", "x: grpo {", "tune.", "1e-", "lora(", "é", "😀", "\\", "-", "steps = 3\n"]

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=[sys.executable, "-m", "tunix_dsl", "lsp"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=lsp.ClientCapabilities(), root_uri=ROOT.as_uri()))
    yield
    await lsp_client.shutdown_session()


def position(text: str, offset: int) -> lsp.Position:
    """UTF-16 position, as a client counts it by default."""
    line_start = text.rfind("\n", 0, offset) + 1
    column = len(text[line_start:offset].encode("utf-16-le")) // 2
    return lsp.Position(text.count("\n", 0, offset), column)


async def request(client: LanguageClient, rng: random.Random, uri: str, text: str) -> None:
    doc = lsp.TextDocumentIdentifier(uri)
    where = position(text, rng.randrange(len(text) + 1))
    kind = rng.randrange(6)
    if kind == 0:
        await client.text_document_hover_async(lsp.HoverParams(doc, where))
    elif kind == 1:
        await client.text_document_completion_async(lsp.CompletionParams(doc, where))
    elif kind == 2:
        await client.text_document_definition_async(lsp.DefinitionParams(doc, where))
    elif kind == 3:
        await client.text_document_references_async(lsp.ReferenceParams(
            text_document=doc, position=where,
            context=lsp.ReferenceContext(include_declaration=True)))
    elif kind == 4:
        await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(doc))
    else:
        await client.text_document_formatting_async(lsp.DocumentFormattingParams(
            doc, lsp.FormattingOptions(tab_size=2, insert_spaces=True)))


async def test_two_thousand_random_edits_never_kill_the_server(client: LanguageClient) -> None:
    rng = random.Random(16)
    text = EXAMPLE.read_text(encoding="utf-8")
    uri = (ROOT / "examples" / "_lsp_fuzz.tnx").as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri=uri, language_id="tnx", version=1, text=text)))
    for version in range(2, EDITS + 2):
        start = rng.randrange(len(text) + 1)
        if rng.random() < 0.5 or not text:
            end, new = start, rng.choice(FRAGMENTS)
        else:
            end, new = min(len(text), start + rng.randint(1, 12)), ""
        change = lsp.TextDocumentContentChangePartial(
            range=lsp.Range(position(text, start), position(text, end)), text=new)
        text = text[:start] + new + text[end:]
        client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=version), [change]))
        if version % 10 == 0:
            await request(client, rng, uri, text)
        if version % 25 == 0:  # a save checks at once: the checker sees broken texts too
            client.text_document_did_save(lsp.DidSaveTextDocumentParams(
                lsp.TextDocumentIdentifier(uri)))
    last = EDITS + 1
    client.text_document_did_save(lsp.DidSaveTextDocumentParams(lsp.TextDocumentIdentifier(uri)))
    while True:
        params = await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        if params.uri == uri and params.version == last:
            break
    expected = parse(text, str(ROOT / "examples" / "_lsp_fuzz.tnx"))
    assert [d.code for d in params.diagnostics] == [d.code for d in expected.diagnostics]
    crashes = [m.message for m in client.log_messages if "internal error" in m.message]
    assert crashes == []
