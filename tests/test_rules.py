"""Every registered code: its failing example produces it, its fixed example is clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.diagnostics import Severity
from tunix_dsl.rules import all_rules, run_rules
from tunix_dsl.rules.docs import render_rules_md
from tunix_dsl.rules.registry import RULES

ROOT = Path(__file__).resolve().parents[1]
# `plan` codes need `tnx plan --target`: tests/runtime/test_plan_target.py runs their examples.
WITH_EXAMPLES = [r for r in all_rules() if r.bad and r.owner != "plan"]


def _check(text: str, overrides: tuple[tuple[str, str], ...]):
    # Examples name files relative to the repository root (examples/data/...).
    return parse(text, "example.tnx", overrides=dict(overrides), base_dir=ROOT)


@pytest.mark.parametrize("entry", WITH_EXAMPLES, ids=lambda r: r.code)
def test_failing_example_produces_the_code(entry):
    codes = [d.code for d in _check(entry.bad, entry.bad_set).diagnostics]
    assert entry.code in codes


@pytest.mark.parametrize("entry", WITH_EXAMPLES, ids=lambda r: r.code)
def test_fixed_example_is_clean(entry):
    diags = _check(entry.good, entry.good_set).diagnostics
    assert [(d.code, d.message) for d in diags] == []


def test_codes_are_stable_and_well_formed():
    for code, entry in RULES.items():
        assert code == entry.code and len(code) == 6 and code.startswith("TNX")
        assert entry.summary and "\n" not in entry.summary
        # The hundreds digit says what a code is about; 4xx are exactly the warnings.
        assert (entry.severity is Severity.WARNING) == code.startswith("TNX4"), code
    names = [r.name for r in RULES.values()]
    assert len(names) == len(set(names))


def test_every_code_but_internal_ones_has_examples():
    without = {r.code for r in all_rules() if not r.bad}
    assert without == {"TNX000", "TNX009"}  # internal error; unreadable file (tested in test_api)


def test_issue_rule_list_is_covered():
    required = {
        "TNX105": "unknown-kind", "TNX101": "unknown-field", "TNX102": "missing-field",
        "TNX201": "wrong-type", "TNX202": "out-of-range", "TNX103": "duplicate-name",
        "TNX104": "undefined-name", "TNX106": "wrong-reference-kind", "TNX301": "cycle",
        "TNX302": "dataset-columns", "TNX303": "tokenizer-mismatch",
        "TNX304": "batch-vs-generations", "TNX305": "batch-vs-mesh", "TNX306": "lora-rank",
        "TNX307": "context-length", "TNX401": "reference-not-ancestor", "TNX402": "unused",
        "TNX207": "non-positive-count", "TNX107": "unknown-override",
    }
    assert {code: RULES[code].name for code in required} == required


def test_docs_rules_md_is_generated_from_the_registry():
    checked_in = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    assert checked_in == render_rules_md(), (
        "docs/rules.md is stale: run `python -m tunix_dsl.rules.docs`")


def test_a_crashing_rule_becomes_a_diagnostic(monkeypatch):
    from tunix_dsl.rules import registry

    pipeline = parse(RULES["TNX102"].good, "example.tnx", base_dir=ROOT)

    def broken(_):
        raise RuntimeError("boom")

    entry = registry.RULES["TNX402"]
    monkeypatch.setitem(registry.RULES, "TNX402", entry.__class__(
        **{**entry.__dict__, "check": broken}))
    found = run_rules(pipeline)
    assert [d.code for d in found] == ["TNX000"]
    assert "TNX402" in found[0].message and "boom" in found[0].message
