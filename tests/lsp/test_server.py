"""`tnx lsp` end to end: a real server process driven over stdio by pytest-lsp.

One server serves the whole module (it starts in about a second); every test
opens its own document URI so tests cannot see each other's state.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types as lsp
from pytest_lsp import ClientServerConfig, LanguageClient

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = (ROOT / "examples" / "quickstart.tnx").read_text(encoding="utf-8")

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(
    server_command=[sys.executable, "-m", "tunix_dsl", "lsp"]))
async def client(lsp_client: LanguageClient):
    await lsp_client.initialize_session(lsp.InitializeParams(
        capabilities=lsp.ClientCapabilities(), root_uri=ROOT.as_uri()))
    yield
    await lsp_client.shutdown_session()


_counter = iter(range(10**6))


async def open_doc(client: LanguageClient, text: str, name: str = "doc") -> str:
    """Open `text` as a new document in examples/ (so relative paths resolve) and wait
    for its first diagnostics."""
    uri = (ROOT / "examples" / f"_lsp_{name}_{next(_counter)}.tnx").as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri=uri, language_id="tnx", version=1, text=text)))
    await wait_diagnostics(client, uri, 1)
    return uri


async def wait_diagnostics(client: LanguageClient, uri: str, version: int) -> list[lsp.Diagnostic]:
    while True:
        params = await client.wait_for_notification(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        if params.uri == uri and params.version == version:
            return list(params.diagnostics)


def change(client: LanguageClient, uri: str, version: int, text: str) -> None:
    client.text_document_did_change(lsp.DidChangeTextDocumentParams(
        lsp.VersionedTextDocumentIdentifier(uri=uri, version=version),
        [lsp.TextDocumentContentChangeWholeDocument(text=text)]))


def position_of(text: str, needle: str, delta: int = 0) -> lsp.Position:
    offset = text.index(needle) + delta
    line = text.count("\n", 0, offset)
    return lsp.Position(line, offset - (text.rfind("\n", 0, offset) + 1))


async def labels_at(client: LanguageClient, uri: str, text: str, marker: str) -> set[str]:
    """Completion labels at the `|` in `marker` (found in `text` without the bar)."""
    needle = marker.replace("|", "")
    result = await client.text_document_completion_async(lsp.CompletionParams(
        lsp.TextDocumentIdentifier(uri), position_of(text, needle, marker.index("|"))))
    items = result.items if isinstance(result, lsp.CompletionList) else result
    return {item.label for item in items or []}


# ------------------------------------------------------------------ diagnostics

BROKEN = QUICKSTART.replace("  beta        = 0.1\n", "  betta       = 0.1\n")


async def test_diagnostics_appear_with_code_and_range_then_clear_after_the_fix(
        client: LanguageClient) -> None:
    assert BROKEN != QUICKSTART
    uri = await open_doc(client, QUICKSTART)
    change(client, uri, 2, BROKEN)
    diagnostics = await wait_diagnostics(client, uri, 2)
    assert [d.code for d in diagnostics] == ["TNX101"]
    diag = diagnostics[0]
    assert diag.range == lsp.Range(position_of(BROKEN, "betta"),
                                   position_of(BROKEN, "betta", len("betta")))
    assert diag.severity == lsp.DiagnosticSeverity.Error
    assert "did you mean `beta`?" in diag.message

    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        lsp.TextDocumentIdentifier(uri), diag.range, lsp.CodeActionContext([diag])))
    assert [a.title for a in actions] == ["Replace `betta` with `beta`"]
    (edit,) = actions[0].edit.changes[uri]
    assert edit.range == diag.range and edit.new_text == "beta"

    change(client, uri, 3, QUICKSTART)
    assert await wait_diagnostics(client, uri, 3) == []


async def test_missing_field_quick_fix_inserts_a_value_that_checks(client: LanguageClient) -> None:
    text = (ROOT / "examples" / "broken" / "missing_steps.tnx").read_text(encoding="utf-8")
    uri = (ROOT / "examples" / "broken" / "_lsp_missing.tnx").as_uri()
    client.text_document_did_open(lsp.DidOpenTextDocumentParams(
        lsp.TextDocumentItem(uri=uri, language_id="tnx", version=1, text=text)))
    (diag,) = await wait_diagnostics(client, uri, 1)
    assert diag.code == "TNX102"
    actions = await client.text_document_code_action_async(lsp.CodeActionParams(
        lsp.TextDocumentIdentifier(uri), diag.range, lsp.CodeActionContext([diag])))
    assert [a.title for a in actions] == ["Add `steps = 1`"]
    (edit,) = actions[0].edit.changes[uri]
    lines = text.splitlines(keepends=True)
    line = edit.range.start.line
    fixed = "".join(lines[:line]) + edit.new_text + "".join(lines[line:])
    assert "  data  = sums\n  steps = 1\n}" in fixed
    change(client, uri, 2, fixed)
    assert await wait_diagnostics(client, uri, 2) == []


async def test_syntax_error_is_a_diagnostic_not_a_crash(client: LanguageClient) -> None:
    text = QUICKSTART.replace('precision = "float32"', 'precision = "float32')
    uri = await open_doc(client, QUICKSTART)
    change(client, uri, 2, text)
    diagnostics = await wait_diagnostics(client, uri, 2)
    assert diagnostics and diagnostics[0].code == "TNX002"
    assert diagnostics[0].range.start == position_of(text, '"float32')


# ------------------------------------------------------------------ hover


async def hover(client: LanguageClient, uri: str, text: str, needle: str, delta: int = 1) -> str:
    result = await client.text_document_hover_async(lsp.HoverParams(
        lsp.TextDocumentIdentifier(uri), position_of(text, needle, delta)))
    assert result is not None, needle
    return result.contents.value


async def test_hover_shows_field_docs_stage_kind_and_model_size(client: LanguageClient) -> None:
    uri = await open_doc(client, QUICKSTART)
    beta = await hover(client, uri, QUICKSTART, "beta        = 0.1")
    assert "number (> 0), default 0.1" in beta and "β: strength" in beta and "dpo" in beta
    grpo = await hover(client, uri, QUICKSTART, "grpo {")
    assert "Group relative policy optimisation" in grpo and "trains `policy`" in grpo
    tiny = await hover(client, uri, QUICKSTART, "tiny\n")  # `model = tiny` in stage base
    assert 'model tiny  = transformer(preset = "nano", tokenizer = chars)' in tiny
    assert "820,736 parameters" in tiny
    output = await hover(client, uri, QUICKSTART, "base.model", len("base.") + 1)
    assert "stage `base` (pretrain)" in output and "820,736 parameters" in output
    adamw = await hover(client, uri, QUICKSTART, "adamw(")
    assert "adamw(...)" in adamw and "lr" in adamw


# ------------------------------------------------------------------ completion

GRPO_BLOCK = """tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars)
dataset sums = synthetic("addition", count = 100)
reward correct = exact_match(field = "answer")

stage base: sft {
  model = tiny
  data  = sums
  steps = 10
}

stage solve: grpo {
  policy  = base.model
  data    = sums
  rewards = [correct]

}
"""


async def test_completion_offers_unwritten_grpo_fields_inside_a_grpo_block(
        client: LanguageClient) -> None:
    from tunix_dsl.schemas import STAGE_KINDS

    uri = await open_doc(client, GRPO_BLOCK)
    labels = await labels_at(client, uri, GRPO_BLOCK, "[correct]\n|\n}")
    grpo_fields = set(STAGE_KINDS["grpo"].schema.source_names())
    assert labels == grpo_fields - {"policy", "data", "rewards"}
    assert {"generations", "epsilon_high", "kl_estimator", "steps"} <= labels
    assert "model" not in labels  # an sft field, not a grpo one


async def test_completion_after_model_offers_only_models(client: LanguageClient) -> None:
    text = GRPO_BLOCK.replace("  model = tiny\n", "  model = \n")
    uri = await open_doc(client, text)
    labels = await labels_at(client, uri, text, "  model = |\n")
    # models and stage outputs; never the tokenizer, dataset or reward; not its own output
    assert labels == {"tiny", "solve.model"}
    labels = await labels_at(client, uri, text, "policy  = |base")
    assert labels == {"tiny", "base.model"}


async def test_completion_of_kinds_members_enums_and_call_arguments(
        client: LanguageClient) -> None:
    from tunix_dsl.schemas import STAGE_KINDS

    text = GRPO_BLOCK.replace("  rewards = [correct]\n", '  rewards = [correct]\n  loss = "\n')
    text = text.replace("stage base: sft", "stage base: sft") + "stage extra: \n"
    uri = await open_doc(client, text)
    assert await labels_at(client, uri, text, "stage extra: |") == set(STAGE_KINDS)
    assert await labels_at(client, uri, text, "base.|model") == {"model", "adapter"}
    assert await labels_at(client, uri, text, 'loss = "|') == {
        '"grpo"', '"dr-grpo"', '"dapo"', '"gspo-token"'}
    assert await labels_at(client, uri, text, "rewards = [|correct") == {"correct"}
    labels = await labels_at(client, uri, text, 'transformer(preset = "pico", |tokenizer')
    assert "d_model" in labels and "preset" not in labels and "tokenizer" not in labels
    assert await labels_at(client, uri, text, "model tiny = |transformer") == {
        "transformer", "hf"}


# ------------------------------------------------------------------ navigation


async def test_definition_and_references(client: LanguageClient) -> None:
    uri = await open_doc(client, QUICKSTART)
    target = await client.text_document_definition_async(lsp.DefinitionParams(
        lsp.TextDocumentIdentifier(uri), position_of(QUICKSTART, "tune.model", 1)))
    assert target.range.start == position_of(QUICKSTART, "tune: sft")
    refs = await client.text_document_references_async(lsp.ReferenceParams(
        text_document=lsp.TextDocumentIdentifier(uri),
        position=position_of(QUICKSTART, "tune: sft", 1),
        context=lsp.ReferenceContext(include_declaration=True)))
    starts = [r.range.start for r in refs]
    uses = [i for i in range(len(QUICKSTART)) if QUICKSTART.startswith("tune.model", i)]
    assert len(starts) == len(uses) + 1  # `tune.model` ×4 and the declaration
    assert position_of(QUICKSTART, "tune: sft") in starts
    param = await client.text_document_definition_async(lsp.DefinitionParams(
        lsp.TextDocumentIdentifier(uri), position_of(QUICKSTART, "* scale", 3)))
    assert param.range.start == position_of(QUICKSTART, "scale = 1.0")


async def test_document_symbols_outline(client: LanguageClient) -> None:
    uri = await open_doc(client, QUICKSTART)
    result = await client.text_document_document_symbol_async(lsp.DocumentSymbolParams(
        lsp.TextDocumentIdentifier(uri)))
    names = [(s.name, s.detail) for s in result]
    assert names[:3] == [("quickstart", "pipeline"), ("scale", "param"), ("seed", "param")]
    assert ("solve", "stage: grpo") in names and names[-1] == ("export", "export")
    solve = next(s for s in result if s.name == "solve")
    assert [c.name for c in solve.children][:3] == ["policy", "data", "rewards"]


async def test_formatting_is_tnx_fmt(client: LanguageClient) -> None:
    from tunix_dsl.grammar.formatter import format_source

    messy = QUICKSTART.replace("  seed      = seed\n", "seed=seed\n").replace("batch_size  = 64",
                                                                             "batch_size=64")
    uri = await open_doc(client, messy)
    edits = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        lsp.TextDocumentIdentifier(uri), lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert len(edits) == 1 and edits[0].new_text == format_source(messy) == QUICKSTART
    assert edits[0].range.start == lsp.Position(0, 0)
    change(client, uri, 2, QUICKSTART)
    await wait_diagnostics(client, uri, 2)
    again = await client.text_document_formatting_async(lsp.DocumentFormattingParams(
        lsp.TextDocumentIdentifier(uri), lsp.FormattingOptions(tab_size=2, insert_spaces=True)))
    assert not again
