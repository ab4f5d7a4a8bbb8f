"""Tools of `tool_talks.jsonl`, the per-row `tools` example in docs/rules.md (TNX527)."""


def calculate(expression: str) -> str:
    """Evaluate an integer arithmetic expression.

    Args:
        expression: integers joined by + - * // and parentheses
    """
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.FloorDiv: operator.floordiv}

    def value(node: ast.expr) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](value(node.left), value(node.right))
        raise ValueError("only integers and + - * //")

    return str(value(ast.parse(expression, mode="eval").body))


def convert(value: float, unit: str) -> str:
    """Convert kilometres to miles or miles to kilometres.

    Args:
        value: the distance
        unit: "km" or "mi", the unit of `value`
    """
    if unit == "km":
        return f"{value / 1.609344:.3f} mi"
    if unit == "mi":
        return f"{value * 1.609344:.3f} km"
    raise ValueError(f"unknown unit {unit!r}; use km or mi")
