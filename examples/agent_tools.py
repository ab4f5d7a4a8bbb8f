"""Tools and an environment for `examples/agent_calculator.tnx`.

`tool NAME = python("agent_tools.py:calculate")` exposes `calculate` to the model;
its JSON schema is read from the signature and docstring (`tnx explain
agent_tools.py:calculate` prints it).
"""

from __future__ import annotations

import ast
import operator

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}


def calculate(expression: str) -> str:
    """Evaluate an integer arithmetic expression.

    Args:
        expression: integers joined by + - * // % and parentheses, e.g. "12 * (3 + 4)"
    """
    return str(_evaluate(ast.parse(expression, mode="eval").body))


def _evaluate(node: ast.expr) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    raise ValueError(f"unsupported expression: {ast.unparse(node)}")


class GuessNumber:
    """An environment: the model guesses a number; each observation says higher or lower.

    `reset(row)` starts from a dataset row whose `answer` column is the number;
    `step(action)` returns (observation, reward, done): reward 1.0 on the right guess.
    """

    def reset(self, row: dict[str, str]) -> str:
        self.target = int(row["answer"])
        return "Guess the number."

    def step(self, action: str) -> tuple[str, float, bool]:
        try:
            guess = int(action.strip().split()[-1])
        except (ValueError, IndexError):
            return "Answer with a number.", 0.0, False
        if guess == self.target:
            return "Correct.", 1.0, True
        return ("Higher." if guess < self.target else "Lower."), 0.0, False
