"""The VS Code extension folder is consistent: its manifest names files that exist."""

from __future__ import annotations

import json
from pathlib import Path

EXTENSION = Path(__file__).resolve().parents[2] / "editors" / "vscode"


def test_manifest_points_at_the_grammar_and_language_configuration() -> None:
    manifest = json.loads((EXTENSION / "package.json").read_text(encoding="utf-8"))
    (language,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert language["extensions"] == [".tnx"] and grammar["language"] == language["id"]
    tm = json.loads((EXTENSION / grammar["path"]).read_text(encoding="utf-8"))
    assert tm["scopeName"] == grammar["scopeName"] == "source.tnx"
    config = json.loads((EXTENSION / language["configuration"]).read_text(encoding="utf-8"))
    assert config["comments"]["lineComment"] == "#"
    main = (EXTENSION / manifest["main"]).read_text(encoding="utf-8")
    # the client runs `<tnx.server.command> lsp`, the setting the manifest declares
    assert 'args: ["lsp"]' in main and 'getConfiguration("tnx").get("server.command"' in main
    assert "tnx.server.command" in manifest["contributes"]["configuration"]["properties"]
