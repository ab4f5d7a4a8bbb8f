"""A row's own `tools` column: the schemas its prompt lists, the calls its episodes may make,
and TNX527 when it names a tool the stage does not offer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunix_dsl.api import load
from tunix_dsl.data.row_tools import RowToolsError, check_rows, offered
from tunix_dsl.data.tokenizers import ByteTokenizer
from tunix_dsl.runtime.agent_env import ToolRunner, ToolsEnv
from tunix_dsl.runtime.data import tokenize_rows


def schema(name: str, description: str = "") -> dict:
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": {}}}}


SCHEMAS = (schema("add"), schema("shout"))


def test_a_row_narrows_its_tools_by_function_name_or_schema() -> None:
    assert offered({"prompt": "x"}, SCHEMAS) == SCHEMAS
    assert offered({"tools": None}, SCHEMAS) == SCHEMAS
    assert offered({"tools": ["shout"]}, SCHEMAS) == (schema("shout"),)
    assert offered({"tools": []}, SCHEMAS) == ()
    own = schema("add", "Add, as this row describes it.")  # rendered as the row gives it
    assert offered({"tools": [own["function"], "shout"]}, SCHEMAS) == (own["function"], schema("shout"))
    for bad, problem in ((["search"], "names `search`, which is not one of the stage's tools \\(add, shout\\)"),
                         ([schema("search")], "names `search`, which is not one"),
                         ("add", "must be a list"), ([3], "entry 0 is neither")):
        with pytest.raises(RowToolsError, match=f"^`tools` {problem}"):
            offered({"tools": bad}, SCHEMAS)
    with pytest.raises(RowToolsError, match="^row 2 of `d` \\(d.jsonl:3\\): `tools` names `search`"):
        check_rows([{"tools": ["add"]}, {"tools": ["search"]}], SCHEMAS,
                   lambda i: f"row {i + 1} of `d` (d.jsonl:{i + 2})")


def test_a_prompt_lists_its_rows_tools_and_its_episodes_may_call_only_those() -> None:
    rows = [{"prompt": "a", "tools": ["add"]}, {"prompt": "b"}]
    tok = ByteTokenizer()
    listed: list[list[str]] = []
    real = tok.apply_chat_template

    def render(messages, add_generation_prompt=False, tools=None):  # records the `tools` given
        listed.append([t["function"]["name"] for t in tools or []])
        return real(messages, add_generation_prompt=add_generation_prompt, tools=tools)

    tok.apply_chat_template = render  # type: ignore[method-assign]
    prompts = [{**row, "prompt": [{"role": "user", "content": row["prompt"]}]} for row in rows]
    tokenize_rows(prompts, "prompt", tok, 64, tools=SCHEMAS)
    assert listed == [["add"], ["add", "shout"]]

    runner = ToolRunner({"add": lambda: "3", "shout": lambda: "HI"}, timeout=5.0)
    try:
        env = ToolsEnv(runner, max_tool_calls=4, schemas=SCHEMAS)
        env.start(rows)
        call = '<tool_call>{"name": "shout", "arguments": {}}</tool_call>'
        narrowed, free = env.step([0, 1], [call, call])
    finally:
        runner.close()
    assert narrowed.observation == "error: there is no tool `shout` (tools: add)"
    assert narrowed.calls_ok == 0
    assert free.observation == "HI" and free.calls_ok == 1


PIPELINE = """\
pipeline p { seed = 0 }
tokenizer chars = bytes()
model tiny = transformer(preset = "pico", tokenizer = chars, n_layers = 1)
dataset asks = jsonl("asks.jsonl")
reward correct = exact_match(field = "answer")
tool calc = python("tools.py:calculate")
environment math = tools([calc], reward = correct)
stage solve: grpo {
  policy = tiny
  data = asks
  environment = math
  tool_format = "hermes"
  max_turns = 2
  max_prompt_len = 16
  max_new_tokens = 8
  max_observation_tokens = 32
  generations = 2
  batch_size = 4
  steps = 1
}
export solve.model to "out" as "hf"
"""


def test_lint_names_the_line_of_a_row_offering_an_undeclared_tool(tmp_path: Path) -> None:
    (tmp_path / "p.tnx").write_text(PIPELINE)
    (tmp_path / "tools.py").write_text('def calculate(expression: str) -> str:\n    """Eval."""\n'
                                       "    return expression\n")
    rows = [{"prompt": "1+1", "answer": "2", "tools": ["calculate"]},
            {"prompt": "2+2", "answer": "4", "tools": ["calculate", "search"]}]
    (tmp_path / "asks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    found = [d for d in load(tmp_path / "p.tnx").diagnostics if d.code == "TNX527"]
    assert len(found) == 1
    assert found[0].message == ("asks.jsonl:2: `tools` names `search`, which is not one of the "
                                "stage's tools (calculate)")
    assert (found[0].span.line, found[0].label) == (10, "offers `calculate`")

    rows[1]["tools"] = ["calculate"]
    (tmp_path / "asks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [d.code for d in load(tmp_path / "p.tnx").diagnostics] == []
