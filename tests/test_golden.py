"""Golden tests: the rendered diagnostics of broken inputs, checked in.

Inputs: `tests/golden/lint/*.tnx` and `examples/broken/*.tnx`; expected text
output (`render_text`, color off, plus the exit code `tnx lint` would give) next
to them as `.txt` (`tests/golden/lint/broken/` for the examples). A line
`# --set name=value` at the top of an input is applied as an override.
Regenerate with `UPDATE_GOLDEN=1 python -m pytest tests/test_golden.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tunix_dsl.api import load
from tunix_dsl.cli.render import render_text

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "lint"
INPUTS = sorted(GOLDEN.glob("*.tnx")) + sorted((ROOT / "examples" / "broken").glob("*.tnx"))


def _expected_path(source: Path) -> Path:
    if source.parent == GOLDEN:
        return source.with_suffix(".txt")
    return GOLDEN / "broken" / (source.stem + ".txt")


def _overrides(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# --set "):
            name, _, value = line[len("# --set "):].partition("=")
            found[name] = value
    return found


def _render(source: Path) -> str:
    relative = source.relative_to(ROOT).as_posix()
    pipeline = load(relative, _overrides(source.read_text(encoding="utf-8")))
    exit_code = 2 if pipeline.io_error else (0 if pipeline.ok else 1)
    return render_text(pipeline.diagnostics, pipeline.sources, color=False) + f"[exit {exit_code}]\n"


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden(source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    actual = _render(source)
    expected_path = _expected_path(source)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(actual, encoding="utf-8")
    assert expected_path.exists(), f"no golden output: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert actual == expected_path.read_text(encoding="utf-8")


def test_first_line_names_the_code_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for source in INPUTS:
        comment = next(line for line in source.read_text(encoding="utf-8").splitlines()
                       if line.startswith("# TNX"))
        code = comment[2:8]
        pipeline = load(source.relative_to(ROOT).as_posix(),
                        _overrides(source.read_text(encoding="utf-8")))
        assert code in {d.code for d in pipeline.diagnostics}, source


def test_broken_examples_fail_with_one_intended_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    broken = sorted((ROOT / "examples" / "broken").glob("*.tnx"))
    assert len(broken) >= 20
    for source in broken:
        code = source.read_text(encoding="utf-8")[2:8]
        pipeline = load(source.relative_to(ROOT).as_posix())
        assert [d.code for d in pipeline.diagnostics] == [code], source


def test_enough_distinct_inputs() -> None:
    texts = {p.read_text(encoding="utf-8") for p in INPUTS}
    assert len(texts) >= 30
