"""Synthetic tool-use data: calculator transcripts for agentic RL (jax-free).

    dataset transcripts = synthetic("calculator_tools", digits = 2, tool_share = 0.5, count = 400)

Each row asks for the product of two numbers. `messages` is a demonstration for SFT: with
probability `tool_share` the assistant calls `calculate` in the Hermes format, reads the tool's
result and repeats it; otherwise it answers at once, as if from memory. `prompt` (the question
alone, a conversation) and `answer` (the product) serve GRPO and the evals. A tiny model
cannot multiply in its head, so after SFT on a mix it answers directly about as often as the
mix did, and gets those wrong: GRPO with the tool in the loop has to teach it to reach for the
tool (`examples/agent_calculator.tnx`). The tool the transcripts call is
`examples/agent_tools.py:calculate(expression)`.
"""

from __future__ import annotations

import json
import random
import zlib
from typing import Any

from tunix_dsl.data.synthetic_tasks import ParamInfo, RangeProblem, Row, synthetic_task

_PARAMS: dict[str, ParamInfo] = {
    "digits": ParamInfo(int, 2, "digits of each factor (1..6); 2: products like 59*63"),
    "tool_share": ParamInfo(float, 1.0, "fraction of transcripts that call the tool; the rest "
                            "answer directly"),
    "split": ParamInfo(str, "all", '"all"; "test": only a fixed tenth of all factor pairs; '
                       '"train": only the rest'),
}


def _check(values: dict[str, Any]) -> RangeProblem | None:
    if not 0.0 <= values["tool_share"] <= 1.0:
        return "tool_share", f"tool_share must be between 0 and 1, got {values['tool_share']}"
    if values["split"] not in ("all", "train", "test"):
        return "split", f"split must be \"all\", \"train\" or \"test\", got {values['split']!r}"
    if not 1 <= values["digits"] <= 6:
        return "digits", f"digits must be between 1 and 6, got {values['digits']}"
    return None


def _in_split(expression: str, split: str) -> bool:
    # a fixed tenth of all factor pairs is "test" (crc32: the same under every PYTHONHASHSEED)
    return split == "all" or (zlib.crc32(expression.encode()) % 10 == 0) == (split == "test")


@synthetic_task("calculator_tools", ("messages", "prompt", "answer"), _PARAMS, _check)
def _calculator_tools(rng: random.Random, count: int, digits: int, tool_share: float,
                      split: str) -> list[Row]:
    """Products as tool-use transcripts: "59*63=?" -> calculate("59*63") -> "3717"."""
    low, high = 10 ** (digits - 1), 10**digits - 1
    rows: list[Row] = []
    while len(rows) < count:
        a, b = rng.randint(low, high), rng.randint(low, high)
        if not _in_split(f"{a}*{b}", split):
            continue
        expression, answer = f"{a}*{b}", str(a * b)
        question = [{"role": "user", "content": f"{expression}=?"}]
        if rng.random() < tool_share:
            call = json.dumps({"name": "calculate", "arguments": {"expression": expression}},
                              separators=(",", ":"))
            reply = [{"role": "assistant", "content": f"<tool_call>{call}</tool_call>"},
                     {"role": "tool", "content": answer}, {"role": "assistant", "content": answer}]
        else:
            reply = [{"role": "assistant", "content": answer}]
        rows.append({"messages": [*question, *reply], "prompt": question, "answer": answer})
    return rows
