"""SFT stages render `tools`: a tool-use conversation lists the declared tools' JSON schemas
through a tool-aware chat template, trains on the assistant turns alone (never on a tool's
result), and a row's own `tools` column narrows what that row lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.chat_tokenizer import CHATML_TOOLS, write_chatml_tokenizer
from tunix_dsl.api import load
from tunix_dsl.data.row_tools import RowToolsError
from tunix_dsl.rules.tool_rows import PEEKED_ROWS
from tunix_dsl.runtime.executor import Executor
from tunix_dsl.runtime.stage_lifecycle import tokenized

PIPELINE = """\
pipeline p { seed = 0 }
tokenizer chat = hf_tokenizer("tok")
model tiny = transformer(preset = "pico", tokenizer = chat, n_layers = 1, max_seq_len = 1024)
dataset talks = jsonl("talks.jsonl")
tool calc = python("tools.py:calculate")
tool shout = python("tools.py:upper")
stage tune: sft {
  model = tiny
  data = talks
  tools = [calc, shout]
  steps = 1
  max_seq_len = 1024
}
export tune.model to "out" as "hf"
"""
TOOLS = '''
def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression.

    Args:
        expression: integers and + - * //
    """
    return str(eval(expression))


def upper(text: str) -> str:
    """Shout."""
    return text.upper()
'''
CALL = '<tool_call>{"name": "calculate", "arguments": {"expression": "12*34"}}</tool_call>'
TALK = [
    {"role": "user", "content": "12*34=?"},
    {"role": "assistant", "content": CALL},
    {"role": "tool", "content": "408"},
    {"role": "assistant", "content": "408"},
]
CALC_SCHEMA = {"type": "function", "function": {
    "name": "calculate", "description": "Evaluate an arithmetic expression.",
    "parameters": {"type": "object", "properties": {
        "expression": {"type": "string", "description": "integers and + - * //"}},
        "required": ["expression"]}}}


def setup(tmp_path: Path, rows: list[dict]) -> Executor:
    write_chatml_tokenizer(tmp_path / "tok", CHATML_TOOLS)
    (tmp_path / "p.tnx").write_text(PIPELINE)
    (tmp_path / "tools.py").write_text(TOOLS)
    (tmp_path / "talks.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pipeline = load(tmp_path / "p.tnx")
    assert pipeline.ok, [d.message for d in pipeline.diagnostics]
    return Executor(pipeline, tmp_path / "run")


def runs(tokens: list[int], weights: list[float], trained: bool) -> list[list[int]]:
    """The maximal runs of tokens with weight 1 (`trained`) or 0."""
    out: list[list[int]] = []
    previous = None
    for t, w in zip(tokens, weights, strict=True):
        if (w == 1.0) == trained:
            if previous != trained:
                out.append([])
            out[-1].append(t)
        previous = (w == 1.0)
    return out


def test_sft_lists_the_tools_and_trains_on_assistant_turns_only(tmp_path: Path) -> None:
    executor = setup(tmp_path, [{"messages": TALK}, {"messages": TALK, "tools": ["calculate"]},
                                {"messages": TALK, "tools": []}])
    stage = executor.pipeline.stages[0]
    data = tokenized(executor, stage, "talks")
    tok = executor.tokenizer_for(stage.trained)
    upper = {"type": "function", "function": {"name": "upper", "description": "Shout.",
             "parameters": {"type": "object", "properties": {"text": {"type": "string"}},
                            "required": ["text"]}}}
    listed = {
        0: "<|im_start|>system\n# Tools\n" + json.dumps(CALC_SCHEMA) + "\n" + json.dumps(upper)
           + "\n<|im_end|>\n",
        1: "<|im_start|>system\n# Tools\n" + json.dumps(CALC_SCHEMA) + "\n<|im_end|>\n",
        2: "",  # an empty list: no tools for this row
    }
    for i, example in enumerate(data.examples):
        tokens, weights = example.tokens.tolist(), example.weights.tolist()
        text = lambda ids: tok.decode(ids, skip_special=False)  # noqa: E731
        # exactly the two assistant turns are trained, each with the template's end of turn
        assert [text(r) for r in runs(tokens, weights, True)] == [
            CALL + "<|im_end|>\n", "408<|im_end|>\n"]
        # the context: the tools' system message and the question, then the tool's result
        assert [text(r) for r in runs(tokens, weights, False)] == [
            listed[i] + "<|im_start|>user\n12*34=?<|im_end|>\n<|im_start|>assistant\n",
            "<|im_start|>tool\n408<|im_end|>\n<|im_start|>assistant\n"]


def test_a_row_naming_an_undeclared_tool_is_refused_with_its_file_and_line(tmp_path: Path) -> None:
    # past the rows lint peeks (TNX527 reports the early ones): the run checks every row
    executor = setup(tmp_path, [{"messages": TALK}] * PEEKED_ROWS + [{"messages": TALK, "tools": ["search"]}])
    with pytest.raises(RowToolsError, match=rf"talks\.jsonl:{PEEKED_ROWS + 1}\): `tools` names `search`, which is "
                                            r"not one of the stage's tools \(calculate, upper\)"):
        tokenized(executor, executor.pipeline.stages[0], "talks")
