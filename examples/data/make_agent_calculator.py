"""Writes agent_calculator.jsonl and agent_calculator_test.jsonl for examples/agent_calculator.tnx.

Each row asks for a product of two two-digit numbers — more than a tiny model can
multiply in its head. `messages` is a tool-use transcript for SFT (the user asks, the
assistant calls `calculate`, the tool answers, the assistant repeats the result);
`prompt` is the question alone (a conversation, rendered by the chat template) and
`answer` the product, for GRPO's reward and the evals.

    python examples/data/make_agent_calculator.py     # deterministic (fixed seeds)
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def row(rng: random.Random) -> dict[str, object]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    expression = f"{a}*{b}"
    question = [{"role": "user", "content": f"{a}*{b}=?"}]
    call = json.dumps({"name": "calculate", "arguments": {"expression": expression}},
                      separators=(",", ":"))
    answer = str(a * b)
    messages = [*question, {"role": "assistant", "content": f"<tool_call>{call}</tool_call>"},
                {"role": "tool", "content": answer}, {"role": "assistant", "content": answer}]
    return {"messages": messages, "prompt": question, "answer": answer}


def main() -> None:
    for name, count, seed in (("agent_calculator", 400, 0), ("agent_calculator_test", 64, 1)):
        rng = random.Random(seed)
        with (HERE / f"{name}.jsonl").open("w", encoding="utf-8") as out:
            for _ in range(count):
                out.write(json.dumps(row(rng)) + "\n")


if __name__ == "__main__":
    main()
