"""The text formats tnx emits parse with those formats' real parsers.

Mermaid (`tnx graph --format mermaid`) goes through mermaid's own parser, DOT
(`--format dot`) through Graphviz (compiled to WASM), and SARIF (`tnx lint --format
sarif`) is validated against the OASIS SARIF 2.1.0 JSON schema. All three run under
node from `tests/js` (`npm ci` there on first use; node and npm are required).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tunix_dsl.cli import main

ROOT = Path(__file__).resolve().parents[1]
JS = ROOT / "tests" / "js"
EXAMPLES = sorted((ROOT / "examples").glob("*.tnx"))
BROKEN = sorted((ROOT / "examples" / "broken").glob("*.tnx"))

# Names that are keywords of Mermaid or DOT, and export paths whose plain ids would clash.
KEYWORD_NAMES = '''\
pipeline graph {
  seed = 0
}
tokenizer node = bytes()
model end = transformer(preset = "pico", tokenizer = node)
model subgraph = transformer(preset = "pico", tokenizer = node)
dataset edge = synthetic("addition", count = 100)
dataset digraph = synthetic("addition_preferences", count = 100)
stage strict: sft {
  model = end
  data = edge
  steps = 10
}
stage click: dpo {
  policy = strict.model
  reference = strict.model
  data = digraph
  steps = 10
}
export click.model to "out/a#1;<b>\\"q\\"`x`" as "hf"
export click.model to "out/a_1__b___q__x_" as "hf"
export strict.model to "out/a" as "hf"
export strict.model to "out_a" as "hf"
'''


@pytest.fixture(scope="session")
def check_formats():
    """A function that checks [(format, text)] with the real parsers; one node process per call."""
    if shutil.which("node") is None:
        pytest.fail("node is needed to check emitted formats with their real parsers")
    if not (JS / "node_modules" / "mermaid").is_dir():
        pytest.fail("the node packages are missing: run `npm ci --prefix tests/js` (README)")

    def check(items: list[tuple[str, str]]) -> list[dict]:
        payload = json.dumps([{"format": f, "text": t} for f, t in items])
        done = subprocess.run(["node", str(JS / "check_format.mjs")], input=payload,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return check


def _tnx(*args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        main(list(args))
    return out.getvalue()


def test_the_checkers_reject_bad_input(check_formats) -> None:
    # The checks can fail: the unquoted edge label tnx used to emit, a DOT syntax error, a SARIF
    # log without the tool's driver.
    results = check_formats([
        ("mermaid", "flowchart LR\n  a -->|policy (.model)| b\n"),
        ("dot", "digraph { a -> }\n"),
        ("sarif", '{"version": "2.1.0", "runs": [{"tool": {}, "results": []}]}'),
    ])
    assert [r["ok"] for r in results] == [False, False, False], results


def test_graphs_of_every_example_parse(check_formats, tmp_path: Path) -> None:
    keywords = tmp_path / "keywords.tnx"
    keywords.write_text(KEYWORD_NAMES)
    files = [*EXAMPLES, keywords]
    items = [(fmt, _tnx("graph", str(f), "--format", fmt)) for f in files for fmt in ("mermaid", "dot")]
    assert all(text for _, text in items)
    results = check_formats(items)
    pairs = enumerate(zip(items, results, strict=True))
    failures = [(str(files[i // 2]), fmt, r) for i, ((fmt, _), r) in pairs if not r["ok"]]
    assert not failures, failures
    # Every node and edge of the dataflow is in the parsed DOT graph.
    graph = json.loads(_tnx("graph", str(keywords), "--format", "json"))
    dot = results[-1]
    assert (dot["nodes"], dot["edges"]) == (len(graph["nodes"]), len(graph["edges"]))


def test_mermaid_ids_are_unique_and_labels_literal(tmp_path: Path) -> None:
    path = tmp_path / "keywords.tnx"
    path.write_text(KEYWORD_NAMES)
    text = _tnx("graph", str(path), "--format", "mermaid")
    node_lines = [line.strip() for line in text.splitlines()[1:] if "-->" not in line]
    ids = [line.split("[", 1)[0].split("(", 1)[0] for line in node_lines]
    assert len(ids) == len(set(ids)), ids
    assert sum(1 for i in ids if i.startswith("export_")) == 4
    # Entity-coded, so the label reads back as the export's path.
    assert "out/a#35;1;#lt;b#gt;#quot;q#quot;#96;x#96;" in text


def test_sarif_of_every_broken_example_is_valid(check_formats, tmp_path: Path) -> None:
    clean = _tnx("lint", str(EXAMPLES[0]), "--format", "sarif")
    broken = _tnx("lint", *map(str, BROKEN), "--format", "sarif")
    results = check_formats([("sarif", clean), ("sarif", broken)])
    assert results[0] == {"ok": True, "version": "2.1.0", "results": 0}, results[0]
    assert results[1]["ok"], results[1]
    assert results[1]["results"] >= len(BROKEN)
