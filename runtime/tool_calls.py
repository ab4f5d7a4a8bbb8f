"""Tool calls in model text: the Hermes format, parsed forgivingly, never raising.

    <tool_call>
    {"name": "calculate", "arguments": {"expression": "12 * 34"}}
    </tool_call>

A model turn may hold several calls. Whatever the model wrote, `parse_tool_calls`
returns one `ToolCall` per `<tool_call>` block: a block that is not a JSON object with a
string `name` and an object `arguments` comes back with `error` set, and the rollout
shows that error to the model as the call's observation (it learns the format from
the consequences, and the episode goes on). An unclosed `<tool_call>` at the end of a
turn (the turn ran out of tokens) is a call with an error too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(re.escape(CALL_OPEN) + r"(.*?)(?:" + re.escape(CALL_CLOSE) + r"|\Z)", re.S)


@dataclass(frozen=True)
class ToolCall:
    name: str  # "" when the block named no tool
    arguments: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the block is not a usable call


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every `<tool_call>` block of a model turn, in order (empty: the turn calls no tool)."""
    calls = []
    for match in _BLOCK.finditer(text):
        body = match.group(1).strip()
        if not match.group(0).endswith(CALL_CLOSE):  # the text ended inside the block
            calls.append(ToolCall("", error=f"unterminated {CALL_OPEN}: end the call with "
                                             f"{CALL_CLOSE}"))
            continue
        calls.append(_call(body))
    return calls


def _call(body: str) -> ToolCall:
    try:
        value = json.loads(body)
    except json.JSONDecodeError as err:
        return ToolCall("", error=f"the tool call is not valid JSON ({err.msg} at character "
                                  f"{err.pos})")
    if not isinstance(value, dict):
        return ToolCall("", error="the tool call must be a JSON object with \"name\" and "
                                  "\"arguments\"")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return ToolCall("", error="the tool call has no \"name\"")
    arguments = value.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments as a JSON string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            pass
    if not isinstance(arguments, dict):
        return ToolCall(name, error=f"the \"arguments\" of `{name}` must be a JSON object")
    return ToolCall(name, arguments)


def render_tool_call(name: str, arguments: dict[str, Any]) -> str:
    """The Hermes text of one call, as a model should write it (SFT transcripts use this)."""
    return f"{CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments})}{CALL_CLOSE}"


def observation_text(result: Any) -> str:
    """A tool's return value as the text the model reads: strings as they are, the rest JSON."""
    if isinstance(result, str):
        return result
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)
