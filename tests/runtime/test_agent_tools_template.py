"""Tool schemas reach a tool-aware chat template's `tools` variable: in the RL prompts, the
held-out prompts and the observation framing of an agent stage."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from tests.chat_tokenizer import CHATML_TOOLS, write_chatml_tokenizer
from tunix_dsl.data.tokenizers import HFTokenizer
from tunix_dsl.runtime.agent_env import build_environment, tool_json_schema
from tunix_dsl.runtime.agent_rollout import ObservationFraming
from tunix_dsl.runtime.data import tokenize_rows
from tunix_dsl.schemas.agents import PythonTool, ToolsEnvironment
from tunix_dsl.schemas.tool_schema import explain_tool

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
QUESTION = [{"role": "user", "content": "12*34=?"}]


def calculator_schemas() -> list[dict]:
    spec = PythonTool(target="agent_tools.py:calculate")
    stage = SimpleNamespace(tool_timeout=1.0, max_tool_calls=1, batch_size=4)  # a grpo stage's fields
    env = build_environment(ToolsEnvironment(tools=["calc"], reward="ok"), {"calc": spec}, EXAMPLES,
                            stage, "math")
    try:
        return [dict(s) for s in env.schemas]
    finally:
        env.runner.close()  # type: ignore[union-attr]


def test_the_environment_carries_the_schema_tnx_explain_shows() -> None:
    explained = explain_tool("agent_tools.py:calculate", EXAMPLES)
    assert explained is not None
    shown = json.loads(explained.split("JSON schema shown to the model:\n", 1)[1])
    assert calculator_schemas() == [shown]


def test_a_tool_bound_by_an_import_gets_its_schema_from_the_function_it_names(tmp_path: Path) -> None:
    (tmp_path / "impl.py").write_text('def mul(a: int, b: int = 2) -> int:\n    """Multiply."""\n'
                                      "    return a * b\n")
    (tmp_path / "tools.py").write_text("from impl import mul as times\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        from impl import mul  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    schema = tool_json_schema(mul, PythonTool(target="tools.py:times"), tmp_path)
    assert schema["function"]["name"] == "times"  # the name the model calls it by
    assert schema["function"]["description"] == "Multiply."
    assert schema["function"]["parameters"]["properties"] == {
        "a": {"type": "integer"}, "b": {"type": "integer", "default": 2}}
    assert schema["function"]["parameters"]["required"] == ["a"]


def test_prompts_list_the_tools_through_the_template(tmp_path: Path) -> None:
    tok = HFTokenizer.from_dir(write_chatml_tokenizer(tmp_path / "tok", CHATML_TOOLS))
    schemas = calculator_schemas()
    listed = json.dumps(schemas[0], ensure_ascii=False)
    assert listed in tok.apply_chat_template(QUESTION, add_generation_prompt=True, tools=schemas)
    assert "# Tools" not in tok.apply_chat_template(QUESTION, add_generation_prompt=True)

    rows = [{"prompt": QUESTION, "answer": "408"}]
    data = tokenize_rows(rows, "prompt", tok, 512, tools=schemas)
    prompt = tok.decode(list(data.examples[0].tokens), skip_special=False)
    assert listed in prompt and prompt.endswith("<|im_start|>assistant\n")
    plain = tokenize_rows(rows, "prompt", tok, 512)
    assert "# Tools" not in tok.decode(list(plain.examples[0].tokens), skip_special=False)

    # the framing of an observation is what follows the assistant turn: the tools' system
    # message at the start of the conversation does not change it
    framing = ObservationFraming.of(tok, "tool", schemas)
    assert framing == ObservationFraming.of(tok, "tool")
    assert framing.before == "<|im_start|>tool\n" and framing.after == "<|im_end|>\n<|im_start|>assistant\n"
