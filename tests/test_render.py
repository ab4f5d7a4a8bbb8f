"""Renderers: text with carets (golden), JSON, and SARIF 2.1.0 required properties."""

from __future__ import annotations

import json
from pathlib import Path

from tunix_dsl.cli.render import render_json, render_sarif, render_text, summary_line
from tunix_dsl.grammar.diagnostics import Diagnostic, Label, Severity
from tunix_dsl.grammar.parser import parse_module
from tunix_dsl.grammar.spans import Span

GOLDEN = Path(__file__).resolve().parent / "golden" / "render"

SOURCE = "stage tune: dpo {\n\tbta   = 0.1\n  model = x\n}\n"
SOURCES = {"pipe.tnx": SOURCE, "other.tnx": "model x = hf(\"ckpt\")\n"}


def sample_diagnostics() -> list[Diagnostic]:
    unknown = Diagnostic(
        "TNX101", Severity.ERROR, "unknown field `bta`", Span("pipe.tnx", 2, 2, 2, 5, 19, 22),
        label="not a field of `dpo`",
        secondary=(Label(Span("pipe.tnx", 1, 13, 1, 16, 12, 15), "stage kind declared here"),),
        help="did you mean `beta`?", notes=("fields of dpo: beta, policy, reference",))
    unused = Diagnostic(
        "TNX301", Severity.WARNING, "`x` is never used", Span("pipe.tnx", 3, 11, 3, 12, 40, 41),
        secondary=(Label(Span("other.tnx", 1, 7, 1, 8, 6, 7), "declared here"),))
    return [unused, unknown]


def test_text_rendering_matches_golden() -> None:
    text = render_text(sample_diagnostics(), SOURCES, color=False)
    assert text == (GOLDEN / "two_diagnostics.txt").read_text()


def test_syntax_error_rendering_matches_golden() -> None:
    source = 'pipeline q {\n  seed: 0\n}\nmodel m = transformer(preset = "nano"\n'
    _, diags = parse_module(source, "broken.tnx")
    assert render_text(diags, {"broken.tnx": source}) == \
        (GOLDEN / "syntax_error.txt").read_text()


def test_zero_width_span_at_end_of_file_gets_one_caret() -> None:
    source = "pipeline q {"
    _, diags = parse_module(source, "eof.tnx")
    text = render_text(diags, {"eof.tnx": source})
    assert "1 | pipeline q {\n  |             ^ unexpected here" in text


def test_color_only_when_asked() -> None:
    assert "\x1b[" not in render_text(sample_diagnostics(), SOURCES, color=False)
    colored = render_text(sample_diagnostics(), SOURCES, color=True)
    assert "\x1b[1;31merror[TNX101]" in colored


def test_summary_line() -> None:
    assert summary_line([]) == "no problems found"
    assert summary_line(sample_diagnostics()) == "found 1 error and 1 warning"
    assert render_text([], {}) == "no problems found\n"


def test_json_rendering() -> None:
    data = json.loads(render_json(sample_diagnostics()))
    assert [d["code"] for d in data] == ["TNX101", "TNX301"]  # sorted by position
    first = data[0]
    assert first == {
        "code": "TNX101", "severity": "error", "message": "unknown field `bta`",
        "file": "pipe.tnx", "line": 2, "column": 2, "end_line": 2, "end_column": 5,
        "label": "not a field of `dpo`", "help": "did you mean `beta`?",
        "notes": ["fields of dpo: beta, policy, reference"],
        "secondary": [{"file": "pipe.tnx", "line": 1, "column": 13, "end_line": 1,
                       "end_column": 16, "message": "stage kind declared here"}],
    }


# ----------------------------------------------------------------------------- SARIF


def sarif_problems(log: dict) -> list[str]:
    """Violations of the properties SARIF 2.1.0 requires (and of the ones we promise)."""
    problems: list[str] = []

    def need(obj: object, key: str, where: str, kind: type | tuple = object) -> object:
        if not isinstance(obj, dict) or key not in obj:
            problems.append(f"{where}: missing `{key}`")
            return None
        if not isinstance(obj[key], kind):
            problems.append(f"{where}.{key}: expected {kind}, got {type(obj[key]).__name__}")
        return obj[key]

    need(log, "$schema", "log", str)
    if need(log, "version", "log", str) != "2.1.0":
        problems.append("log.version must be 2.1.0")
    runs = need(log, "runs", "log", list) or []
    for r, run in enumerate(runs):
        driver = need(need(run, "tool", f"runs[{r}]", dict), "driver", f"runs[{r}].tool", dict)
        need(driver, "name", "driver", str)
        need(driver, "informationUri", "driver", str)
        rules = need(driver, "rules", "driver", list) or []
        rule_ids = [need(rule, "id", f"rules[{i}]", str) for i, rule in enumerate(rules)]
        for i, result in enumerate(need(run, "results", f"runs[{r}]", list) or []):
            where = f"results[{i}]"
            text = need(need(result, "message", where, dict), "text", f"{where}.message", str)
            if text == "":
                problems.append(f"{where}.message.text is empty")
            if need(result, "ruleId", where, str) not in rule_ids:
                problems.append(f"{where}.ruleId has no rule in driver.rules")
            if "ruleIndex" in result and rule_ids[result["ruleIndex"]] != result["ruleId"]:
                problems.append(f"{where}.ruleIndex points at another rule")
            if need(result, "level", where, str) not in ("none", "note", "warning", "error"):
                problems.append(f"{where}.level is not a SARIF level")
            for j, location in enumerate(need(result, "locations", where, list) or []):
                physical = need(location, "physicalLocation", f"{where}.locations[{j}]", dict)
                artifact = need(physical, "artifactLocation", "physicalLocation", dict)
                need(artifact, "uri", "artifactLocation", str)
                region = need(physical, "region", "physicalLocation", dict) or {}
                for key in ("startLine", "startColumn", "endLine", "endColumn"):
                    value = need(region, key, "region", int)
                    if isinstance(value, int) and value < 1:
                        problems.append(f"region.{key} must be >= 1")
    return problems


def test_sarif_has_every_required_property() -> None:
    log = json.loads(render_sarif(sample_diagnostics(), SOURCES))
    assert sarif_problems(log) == []
    run = log["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["TNX101", "TNX301"]
    unknown = run["results"][0]
    assert unknown["level"] == "error"
    assert unknown["locations"][0]["physicalLocation"]["region"] == {
        "startLine": 2, "startColumn": 2, "endLine": 2, "endColumn": 5}
    assert "help: did you mean `beta`?" in unknown["message"]["text"]
    assert unknown["relatedLocations"][0]["message"]["text"] == "stage kind declared here"
    assert run["results"][1]["level"] == "warning"


def test_sarif_check_catches_a_broken_log() -> None:
    log = json.loads(render_sarif(sample_diagnostics(), SOURCES))
    del log["runs"][0]["tool"]["driver"]["name"]
    log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] = 0
    log["runs"][0]["results"][1]["ruleId"] = "TNX999"
    problems = sarif_problems(log)
    assert "driver: missing `name`" in problems
    assert "region.startLine must be >= 1" in problems
    assert "results[1].ruleId has no rule in driver.rules" in problems


def test_sarif_for_a_clean_run_and_syntax_errors() -> None:
    assert sarif_problems(json.loads(render_sarif([], {}))) == []
    _, diags = parse_module("pipeline q { seed: 0 }", "dir with space/x.tnx")
    log = json.loads(render_sarif(diags))
    assert sarif_problems(log) == []
    location = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"]["uri"] == "dir%20with%20space/x.tnx"
