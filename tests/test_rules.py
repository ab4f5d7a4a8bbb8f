"""Every registered code: its failing example produces it, its fixed example is clean."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.grammar.diagnostics import Severity
from tunix_dsl.rules import all_rules, run_rules
from tunix_dsl.rules.docs import render_rules_md
from tunix_dsl.rules.registry import RULES

ROOT = Path(__file__).resolve().parents[1]
# `plan` codes need `tnx plan --target`: tests/runtime/test_plan_target.py runs their examples.
WITH_EXAMPLES = [r for r in all_rules() if r.bad and r.owner != "plan"]


def _diagnostics(entry, text: str, overrides: tuple[tuple[str, str], ...], run_dir: Path):
    # Examples name files relative to the repository root (examples/data/...).
    pipeline = parse(text, "example.tnx", overrides=dict(overrides), base_dir=ROOT)
    found = list(pipeline.diagnostics)
    if entry.owner == "preflight":  # codes of the run's pre-flight check, past lint
        from tunix_dsl.runtime.preflight import preflight

        found += [p.diagnostic for p in preflight(pipeline, run_dir)]
    return found


@pytest.mark.parametrize("entry", WITH_EXAMPLES, ids=lambda r: r.code)
def test_failing_example_produces_the_code(entry, tmp_path):
    codes = [d.code for d in _diagnostics(entry, entry.bad, entry.bad_set, tmp_path)]
    assert entry.code in codes


@pytest.mark.parametrize("entry", WITH_EXAMPLES, ids=lambda r: r.code)
def test_fixed_example_is_clean(entry, tmp_path):
    diags = _diagnostics(entry, entry.good, entry.good_set, tmp_path)
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


# ---------------------------------------------------------------- what the compiler and runtime enforce
# Each constraint the compiler or runtime relies on, reported at the value's position (after
# `--set`), so that a pipeline that lints clean also runs (tests/test_lint_implies_run.py).

_HEAD = '''tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars)
dataset sums = synthetic("addition", count = 100)
'''


def _stage(*lines: str, kind: str = "sft", head: str = _HEAD, tail: str = "") -> str:
    body = "\n".join(f"  {line}" for line in ("model = tiny", "data = sums", *lines))
    return f"{head}stage tune: {kind} {{\n{body}\n}}\n{tail}export tune.model to \"out\" as \"hf\"\n"


_TEACHER = _HEAD + 'model big = transformer(preset = "nano", tokenizer = chars, n_heads = 6)\n'
_EVAL = 'reward ok = exact_match()\neval e {\n  models = [tune.model]\n  data = sums\n  metric = ok\n' \
        '  max_new_tokens = 200\n}\n'

POSITIONS = [
    # (code, source, --set, line, column, words in the message)
    ("TNX220", _stage("steps = 10", "steps_per_call = 3"), {}, 7, 11, "not a multiple"),
    ("TNX220", "param scale = 1.0\n" + _stage("steps = round(10 * scale)", "steps_per_call = 5"),
     {"scale": "0.7"}, 8, 11, "`steps` (7)"),
    ("TNX221", "param scale = 1.0\n" + _stage("steps = 1500 * scale",
                                              "optimizer = adamw(warmup = 100)"),
     {"scale": "0.05"}, 9, 30, "not shorter than the stage's 75 steps"),
    ("TNX221", _stage("steps = 5", "optimizer = adamw(warmup = 5)"), {}, 8, 30, "warm-up of 5"),
    ("TNX222", _stage("steps = 5", "optimizer = sgd(nesterov = true)"), {}, 8, 30, "Nesterov"),
    ("TNX210", _stage("steps = 5", "optimizer = adamw(lr = 1e999)"), {}, 8, 26, "too large"),
    ("TNX224", 'pipeline p {\n  precision = "float16"\n}\n' + _stage("steps = 5"), {}, 2, 15,
     "float16"),
    ("TNX202", _stage("steps = 5", "seed = 4294967296"), {}, 8, 10, "`seed` must be ≤ 4294967295"),
    ("TNX202", _HEAD.replace("count = 100", "digits = 0") + "stage tune: sft {\n  model = tiny\n"
     "  data = sums\n  steps = 5\n}\nexport tune.model to \"out\" as \"hf\"\n", {}, 3, 47,
     "digits must be in [1, 18], got 0"),
    ("TNX202", _HEAD.replace('"addition", count = 100', '"copy", alphabet = ""')
     + "stage tune: sft {\n  model = tiny\n  data = sums\n  steps = 5\n}\n"
     "export tune.model to \"out\" as \"hf\"\n", {}, 3, 45, "alphabet must not be empty"),
    ("TNX202", _HEAD.replace('"addition", count = 100', '"reverse", min_length = 5, max_length = 4')
     + "stage tune: sft {\n  model = tiny\n  data = sums\n  steps = 5\n}\n"
     "export tune.model to \"out\" as \"hf\"\n", {}, 3, 66, "max_length must be in [5, 10000]"),
    ("TNX202", _HEAD.replace("count = 100", "count = 100_000_001") + "stage tune: sft {\n"
     "  model = tiny\n  data = sums\n  steps = 5\n}\nexport tune.model to \"out\" as \"hf\"\n",
     {}, 3, 46, "count must be in [1, 100000000]"),
    ("TNX305", 'pipeline p {\n  mesh = { data = -1, fsdp = 4 }\n}\n'
     + _stage("steps = 5", "batch_size = 6"), {}, 11, 16, "does not split over 4 batch shards"),
    ("TNX309", _stage("steps = 5", 'lora = lora(targets = ["attn.*", "q_proj$"])'), {}, 8, 36,
     'LoRA target "q_proj$"'),
    ("TNX310", _TEACHER + "stage tune: distill {\n  teacher = big\n  student = tiny\n"
     "  data = sums\n  strategy = attention()\n  steps = 5\n}\n"
     "export tune.model to \"out\" as \"hf\"\n", {}, 9, 14, "6 and 4"),
    ("TNX310", _TEACHER.replace(", n_heads = 6", "") + "stage tune: distill {\n  teacher = big\n"
     "  student = tiny\n  data = sums\n  strategy = feature_projection(layer = 2)\n  steps = 5\n}\n"
     "export tune.model to \"out\" as \"hf\"\n", {}, 9, 41, "feature layer 2"),
    ("TNX311", _stage("steps = 5", tail=_EVAL), {}, 14, 20, "leaves no room for a prompt"),
]


@pytest.mark.parametrize(("code", "source", "overrides", "line", "column", "words"), POSITIONS,
                         ids=[f"{p[0]}-{i}" for i, p in enumerate(POSITIONS)])
def test_run_constraints_are_located_diagnostics(code, source, overrides, line, column, words):
    pipeline = parse(source, "example.tnx", overrides=overrides, base_dir=ROOT)
    found = [(d.code, d.span.line, d.span.column) for d in pipeline.diagnostics]
    assert found == [(code, line, column)], [d.message for d in pipeline.diagnostics]
    assert words in pipeline.diagnostics[0].message


def test_lora_targets_match_the_paths_apply_lora_sees():
    # "kernel$" matches every Dense kernel: clean (it used to warn); "q_proj$" matches none of
    # them (the kernel path ends in `.kernel`): an error (it used to lint clean and fail later)
    clean = parse(_stage("steps = 5", 'lora = lora(targets = ["kernel$"])'), "x.tnx", base_dir=ROOT)
    assert clean.diagnostics == []
    broken = parse(_stage("steps = 5", 'lora = lora(targets = ["q_proj$"])'), "x.tnx", base_dir=ROOT)
    assert [d.code for d in broken.diagnostics] == ["TNX309"]


def test_a_fixed_mesh_that_splits_the_batch_and_a_wildcard_that_can_are_clean():
    for mesh, batch in (("{ data = -1, fsdp = 4 }", 8), ("{ data = 2, fsdp = 2 }", 4),
                        ("{ data = -1 }", 3)):
        source = f"pipeline p {{\n  mesh = {mesh}\n}}\n" + _stage("steps = 5", f"batch_size = {batch}")
        assert parse(source, "x.tnx", base_dir=ROOT).diagnostics == [], mesh
