"""The TextMate grammar under VS Code's own engine (vscode-textmate + vscode-oniguruma, node).

Every example and golden `.tnx` file is tokenized; the scopes must match
`expected_scopes.txt`, and for every file that parses, each comment, string,
number and classified name must carry the scope that the language server's
scan (`tunix_dsl.lsp.scan`) gives it — so keywords-by-position, fields,
calls and references highlight the way the language reads them.

The node packages are in `tests/js` (the README's test command runs `npm ci` there).
"""

from __future__ import annotations

import json
import subprocess
from functools import cache
from pathlib import Path

from tunix_dsl.grammar.parser import parse_module
from tunix_dsl.lsp.outline import tokenize
from tunix_dsl.lsp.scan import scan

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NODE_TOOLS = ROOT / "tests" / "js"
GRAMMAR = ROOT / "editors" / "vscode" / "syntaxes" / "tnx.tmLanguage.json"
FILES = sorted(
    str(p.relative_to(ROOT))
    for p in [*ROOT.glob("examples/**/*.tnx"), *ROOT.glob("tests/golden/**/*.tnx")]
)

SCOPE_OF_KIND = {  # scan occurrence kind → the scope the grammar gives it
    "keyword": "keyword.other.declaration.tnx",
    "decl": "entity.name.",
    "kind": "support.type.stage-kind.tnx",
    "field": "variable.other.property.tnx",
    "call": "entity.name.function.call.tnx",
}
SCOPE_OF_TOKEN = {
    "comment": "comment.line.number-sign.tnx",
    "string": "string.quoted.double.tnx",
    "number": "constant.numeric.tnx",
}


@cache
def tokens() -> dict[str, list[tuple[int, int, int, str, tuple[str, ...]]]]:
    """file → [(line, start, end, text, scopes)], columns in code points."""
    done = subprocess.run(["node", str(NODE_TOOLS / "tokenize.mjs"), str(GRAMMAR), *FILES], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = {}
    for file, found in json.loads(done.stdout).items():
        lines = (ROOT / file).read_text(encoding="utf-8").split("\n")
        result[file] = [(line, _cp(lines[line], start), _cp(lines[line], end), text, tuple(scopes))
                        for line, start, end, text, scopes in found]
    return result


def _cp(line: str, utf16: int) -> int:
    """A UTF-16 column (JavaScript's) as a code-point column (Python's)."""
    units = 0
    for i, ch in enumerate(line):
        if units >= utf16:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(line)


def scopes_at(file: str, offset: int, text: str) -> tuple[str, ...]:
    line = text.count("\n", 0, offset)
    column = offset - (text.rfind("\n", 0, offset) + 1)
    for tline, start, end, _, scopes in tokens()[file]:
        if tline == line and start <= column < end:
            return scopes
    return ()


def test_every_example_and_golden_file_is_tokenized() -> None:
    assert len(FILES) > 40
    found = tokens()
    assert set(found) == set(FILES)
    for file in FILES:
        assert found[file], file


def test_expected_scopes() -> None:
    checked = 0
    for raw in (HERE / "expected_scopes.txt").read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.startswith("#"):
            continue
        where, text, scope = (part.strip() for part in raw.split(" | "))
        file, line = where.rsplit(":", 1)
        on_line = [t for t in tokens()[file] if t[0] == int(line) - 1 and t[3].strip() == text]
        assert on_line, f"{where}: no token `{text}`"
        assert any(scope in t[4] for t in on_line), f"{where}: `{text}` is {on_line[0][4]}"
        checked += 1
    assert checked >= 25


def _expected(file: str, text: str) -> list[tuple[int, str, str]]:
    """(offset, token, scope prefix) for every token whose meaning the scan knows."""
    expected = [(t.start, t.text, SCOPE_OF_TOKEN[t.kind]) for t in tokenize(text)
                if t.kind in SCOPE_OF_TOKEN]
    for occ in scan(text).occurrences:
        if occ.kind == "ref":
            scope = "variable.other.reference.tnx" if occ.index == 0 else "variable.other.member.tnx"
        else:
            scope = SCOPE_OF_KIND[occ.kind]
        expected.append((occ.start, occ.name, scope))
    return expected


def test_grammar_agrees_with_the_language_server_on_every_parsing_file() -> None:
    mismatches, compared = [], 0
    for file in FILES:
        text = (ROOT / file).read_text(encoding="utf-8")
        if parse_module(text, file)[0] is None:
            continue  # a syntax error: the two may recover differently
        for offset, token, scope in _expected(file, text):
            scopes = scopes_at(file, offset, text)
            compared += 1
            if not any(s.startswith(scope) for s in scopes):
                line = text.count("\n", 0, offset) + 1
                mismatches.append(f"{file}:{line} `{token}`: want {scope}, got {scopes[1:]}")
    assert compared > 2000
    assert mismatches == []
