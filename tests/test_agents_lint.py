"""Tools and environments as declarations: parsing, checking, JSON schemas, lint, formatting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunix_dsl.api import parse
from tunix_dsl.cli.main import main
from tunix_dsl.grammar.formatter import format_source
from tunix_dsl.schemas.agents import PythonTool, ToolsEnvironment
from tunix_dsl.schemas.tool_schema import SourceProblem, tool_schema

ROOT = Path(__file__).resolve().parents[1]

AGENT = """\
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars)
dataset sums = synthetic("addition", count = 100)
reward ok = exact_match()
tool calc = python("examples/agent_tools.py:calculate")
environment math = tools([calc], reward = ok)

stage solve: grpo {
  policy = tiny
  data = sums
  environment = math
  tool_format = "hermes"
  max_turns = 2
  max_prompt_len = 32
  max_new_tokens = 24
  max_observation_tokens = 24
  batch_size = 16
  generations = 4
  steps = 10
}

export solve.model to "out/solve" as "hf"
"""


def _codes(text: str) -> list[str]:
    return [d.code for d in parse(text, "agent.tnx", base_dir=ROOT).diagnostics]


def test_tools_and_environments_check_into_the_pipeline():
    pipeline = parse(AGENT, "agent.tnx", base_dir=ROOT)
    assert pipeline.diagnostics == []
    assert isinstance(pipeline.tools["calc"].spec, PythonTool)
    env = pipeline.environments["math"].spec
    assert isinstance(env, ToolsEnvironment) and env.tools == ["calc"] and env.reward == "ok"
    stage = pipeline.stages[0]
    assert stage.config.environment == "math" and stage.config.rewards == []
    # the dataflow: tool → environment → stage, reward → environment
    graph = pipeline.dataflow
    assert graph.has_edge("tool:calc", "environment:math")
    assert graph.has_edge("reward:ok", "environment:math")
    assert graph.has_edge("environment:math", "stage:solve")


def test_a_stage_needs_rewards_or_an_environment():
    text = AGENT.replace("  environment = math\n", "").replace('  tool_format = "hermes"\n', "")
    text = text.replace("  max_turns = 2\n", "").replace("  max_observation_tokens = 24\n", "")
    assert "TNX102" in _codes(text)


def test_wrong_references_are_typed():
    assert "TNX106" in _codes(AGENT.replace("tools([calc]", "tools([ok]"))  # a reward, not a tool
    assert "TNX104" in _codes(AGENT.replace("environment = math", "environment = maths"))


def test_misspelt_keyword_suggests_tool():
    pipeline = parse(AGENT.replace("tool calc", "tols calc"), "agent.tnx", base_dir=ROOT)
    (diag,) = pipeline.diagnostics
    assert diag.code == "TNX001" and diag.help == "did you mean `tool`?"


def test_lint_points_at_the_target_with_a_suggestion():
    pipeline = parse(AGENT.replace(":calculate", ":calculator"), "agent.tnx", base_dir=ROOT)
    (diag,) = pipeline.diagnostics
    assert diag.code == "TNX512" and diag.help == "did you mean `calculate`?"
    assert diag.span.line == 5 and AGENT.splitlines()[4][diag.span.column - 1] == '"'


def test_python_environment_class_is_checked(tmp_path: Path):
    env = AGENT.replace("environment math = tools([calc], reward = ok)",
                        'environment math = python("examples/agent_tools.py:GuessNumber")')
    env = env.replace('tool calc = python("examples/agent_tools.py:calculate")\n', "")
    env = env.replace("reward ok = exact_match()\n", "").replace('  tool_format = "hermes"\n', "")
    assert _codes(env) == []
    assert _codes(env.replace(":GuessNumber", ":calculate")) == ["TNX512"]  # a function
    silent = env.replace("examples/agent_tools.py:GuessNumber", "tests/agent_files/bad_tools.py:Silent")
    assert _codes(silent) == ["TNX513"]


def test_context_fit_counts_observations_between_turns():
    # 32 + 2 × 24 + 1 × 24 = 104 fits pico's 128; 3 turns: 32 + 72 + 48 = 152 does not
    assert _codes(AGENT) == []
    pipeline = parse(AGENT.replace("max_turns = 2", "max_turns = 3"), "agent.tnx", base_dir=ROOT)
    (diag,) = pipeline.diagnostics
    assert diag.code == "TNX515" and "152 tokens" in diag.message
    assert diag.label == "32 + 3 × 24 + 2 × 24 = 152" and diag.help.startswith("at most 2 turns")


def test_hf_tokenizer_with_a_tool_template_needs_no_tool_format(tmp_path: Path):
    from tunix_dsl.data.tokenizers import ByteTokenizer

    for name, template in (("plain", "{{ messages }}"),
                           ("tooled", "{% if tools %}{{ tools | tojson }}{% endif %}")):
        ByteTokenizer().save(tmp_path / name)
        config_path = tmp_path / name / "tokenizer_config.json"
        config = json.loads(config_path.read_text())
        config["chat_template"] = template
        config_path.write_text(json.dumps(config))
    (tmp_path / "agent_tools.py").write_text((ROOT / "examples/agent_tools.py").read_text())
    text = AGENT.replace('  tool_format = "hermes"\n', "").replace(
        "examples/agent_tools.py", "agent_tools.py")
    for name, codes in (("plain", ["TNX514"]), ("tooled", [])):
        source = text.replace("bytes()", f'hf_tokenizer("{name}")')
        found = [d.code for d in parse(source, "a.tnx", base_dir=tmp_path).diagnostics]
        assert found == codes, name


def test_tool_schema_from_signature_and_docstring(tmp_path: Path):
    path = tmp_path / "tools.py"
    path.write_text('''
def search(query: str, limit: int = 5, *, exact: "bool" = False, tags: list[str] | None = None,
           scale=1.5):
    """Search the notes.

    More text that is not the summary.

    Args:
        query: words to look for
        limit (int): most results,
            counted after ranking
        exact: match whole words only
    """
''')
    schema = tool_schema(path, "search")
    assert schema is not None
    assert schema.as_json() == {"type": "function", "function": {
        "name": "search", "description": "Search the notes.",
        "parameters": {"type": "object", "required": ["query"], "properties": {
            "query": {"type": "string", "description": "words to look for"},
            "limit": {"type": "integer", "description": "most results, counted after ranking",
                      "default": 5},
            "exact": {"type": "boolean", "description": "match whole words only", "default": False},
            "tags": {"type": "array", "default": None},
            "scale": {"default": 1.5},
        }}}}


def test_tool_schema_refuses_star_arguments_and_reads_rest_docstrings(tmp_path: Path):
    path = tmp_path / "tools.py"
    path.write_text('def f(*xs): pass\n\n'
                    'def g(a: float):\n    """Scale.\n\n    :param a: the factor\n    """\n'
                    "from math import sqrt\n")
    with pytest.raises(SourceProblem) as err:
        tool_schema(path, "f")
    assert err.value.code == "TNX513"
    schema = tool_schema(path, "g")
    assert schema is not None and schema.properties == {
        "a": {"type": "number", "description": "the factor"}}
    assert tool_schema(path, "sqrt") is None  # imported: read at run time, not an error


def test_explain_prints_a_tools_json_schema(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    assert main(["explain", "examples/agent_tools.py:calculate"]) == 0
    out = capsys.readouterr().out
    schema = json.loads(out[out.index("{"):])
    assert schema["function"]["name"] == "calculate"
    assert schema["function"]["parameters"]["required"] == ["expression"]
    assert main(["explain", "examples/agent_tools.py:nothing"]) == 2
    assert "defines no function `nothing`" in capsys.readouterr().err


def test_formatting_is_idempotent_and_keeps_the_declarations():
    once = format_source(AGENT, "agent.tnx")
    assert format_source(once, "agent.tnx") == once
    assert 'tool calc = python("examples/agent_tools.py:calculate")' in once
    assert "environment math = tools([calc], reward = ok)" in once
    assert parse(once, "agent.tnx", base_dir=ROOT).diagnostics == []


def test_fingerprints_follow_the_tools_code(tmp_path: Path):
    from tunix_dsl.compiler.fingerprint import stage_fingerprints

    (tmp_path / "examples").mkdir()
    tools = tmp_path / "examples" / "agent_tools.py"
    tools.write_text((ROOT / "examples/agent_tools.py").read_text())
    first = stage_fingerprints(parse(AGENT, "a.tnx", base_dir=tmp_path))
    tools.write_text(tools.read_text() + "\n# edited\n")
    assert stage_fingerprints(parse(AGENT, "a.tnx", base_dir=tmp_path)) != first


def test_an_observation_budget_inside_the_framing_is_refused_as_the_rollout_would():
    from tunix_dsl.data.tokenizers import ByteTokenizer
    from tunix_dsl.models.sampler import SamplingConfig
    from tunix_dsl.rules.agent_budget import framing_tokens
    from tunix_dsl.runtime.agent_env import AgentError, ToolRunner, ToolsEnv
    from tunix_dsl.runtime.agent_rollout import AgentRollout, AgentSettings

    # "\n" + eos ends the turn, then "tool: " ... "\nassistant: " around the observation
    assert framing_tokens("tool") == 2 + len("tool: ") + len("\nassistant: ") == 20
    pipeline = parse(AGENT.replace("max_observation_tokens = 24", "max_observation_tokens = 20"),
                     "agent.tnx", base_dir=ROOT)
    (diag,) = pipeline.diagnostics
    assert diag.code == "TNX528" and diag.message == (
        "max_observation_tokens = 20 of stage `solve` leaves no room for an observation: the chat "
        "template frames each one with 20 tokens")
    assert diag.span.line == 16  # the field's value
    # the rollout draws the line at the same place
    env = ToolsEnv(ToolRunner({}, 1.0), 1)
    try:
        for budget, fits in ((20, False), (21, True)):
            settings = AgentSettings(2, 8, budget)
            if fits:
                AgentRollout(env, ByteTokenizer(), settings, SamplingConfig(8))
            else:
                with pytest.raises(AgentError, match="leaves no room"):
                    AgentRollout(env, ByteTokenizer(), settings, SamplingConfig(8))
    finally:
        env.runner.close()


def test_an_eval_with_an_environment_gets_the_same_observation_budget_check():
    from tunix_dsl.rules.agent_eval_checks import _eval

    text = _eval(fields='tool_format = "hermes"\nmax_turns = 2\nmax_observation_tokens = 16')
    diags = [d for d in parse(text, "eval.tnx", base_dir=ROOT).diagnostics if d.code == "TNX528"]
    assert [d.message for d in diags] == [
        "max_observation_tokens = 16 of eval `tools` leaves no room for an observation: the chat "
        "template frames each one with 20 tokens"]
    assert text.splitlines()[diags[0].span.line - 1].strip() == "max_observation_tokens = 16"
    fixed = text.replace("max_observation_tokens = 16", "max_observation_tokens = 24")
    assert not [d for d in parse(fixed, "eval.tnx", base_dir=ROOT).diagnostics if d.code == "TNX528"]
